"""Fused decoding: the folded tables compute what the step-by-step path computes, for every
part and control, and follow the weights when they change."""

from __future__ import annotations

import warnings

import pytest
import torch

from engram.lm.cells import PlaceCells
from engram.lm.model import PARTS, HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.positions import CONTROLS
from engram.lm.sample import SamplingConfig, complete, generate

VOCAB = [chr(c) for c in range(ord("a"), ord("a") + 20)] + [" ", "\n", ".", ",", "A", "B"]
TINY = {"vocab_size": len(VOCAB), "block_size": 40, "n_layer": 2, "n_head": 2, "n_embd": 32,
        "place_cells": 32, "time_max_lag": 8}


def tiny(parts=(), controls=(), seed=0) -> HippocampalTransformer:
    torch.manual_seed(seed)
    config = HippocampalTransformerConfig(**TINY, parts=parts, controls=controls)
    model = HippocampalTransformer(config, VOCAB).eval()
    if model.prosody is not None:  # a gain far from 1, so that prosody matters
        with torch.no_grad():
            model.prosody.weight.normal_(0.0, 0.5)
            model.prosody.bias.normal_(0.0, 0.3)
    return model


def decode(model: HippocampalTransformer, x: torch.Tensor, fused: bool) -> torch.Tensor:
    """Logits of a prompt of 5 tokens, a chunk of 3, then one token at a time, cached."""
    model.fused_decoding = fused
    with torch.inference_mode():
        cache = model.new_cache(x.shape[0])
        out = [model(x[:, :5], cache=cache).logits, model(x[:, 5:8], cache=cache).logits]
        out += [model(x[:, t : t + 1], cache=cache).logits for t in range(8, x.shape[1])]
    return torch.cat(out, 1)


def tokens(batch=2, length=36, seed=1) -> torch.Tensor:
    return torch.randint(len(VOCAB), (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "parts,controls",
    [(PARTS, ()), (PARTS, CONTROLS), *[((p,), ()) for p in PARTS], ((), ("sin_grid", "rope"))],
)
def test_fused_decoding_equals_the_step_by_step_path_and_the_full_forward(parts, controls):
    model = tiny(parts, controls)
    x = tokens()
    full = model(x).logits
    fused, step = decode(model, x, True), decode(model, x, False)
    assert torch.allclose(fused, step, atol=1e-5)
    assert torch.allclose(fused, full, atol=1e-5)
    tables = model.decoding_tables()
    assert (tables.time is not None) == ("time" in parts)  # what the fused path reads
    assert (tables.prosody is not None) == ("prosody" in parts)


def test_greedy_output_is_identical_fused_and_step_by_step():
    model = tiny(PARTS)
    prompt = tokens(1, 4)
    runs = []
    for fused in (True, False):
        model.fused_decoding = fused
        runs.append(torch.stack(list(generate(model, prompt, 60, SamplingConfig("greedy")))))
    assert torch.equal(*runs)  # 60 tokens: the block overflows and the cache is rebuilt


def test_the_tables_follow_the_weights():
    model = tiny(PARTS)
    x = tokens()
    decode(model, x, True)
    with torch.no_grad():  # what an optimiser step or load_state_dict does: in place
        model.theta_gamma.readout.weight.add_(0.5)
        model.time.readout.weight.mul_(-2.0)
        model.prosody.bias.add_(0.4)
    assert torch.allclose(decode(model, x, True), model(x).logits, atol=1e-5)
    other = tiny(PARTS, seed=5)
    model.load_state_dict(other.state_dict())
    assert torch.allclose(decode(model, x, True), other(x).logits, atol=1e-5)


def test_decoding_and_evaluation_follow_fused_adamw_steps():
    """The fused AdamW step updates weights in place without bumping their version counters:
    nothing folded from the weights may outlive it (a resumed run once scored differently)."""
    from engram.lm.train import TrainConfig, build_optimizer

    model = tiny(PARTS)
    x, y = tokens(), tokens(seed=4)
    decode(model, x, True)
    with torch.no_grad():
        model(x)  # an evaluation between steps, as training's estimate_loss makes
    optimizer = build_optimizer(model, TrainConfig(learning_rate=0.05))
    for _ in range(3):
        model.train()
        model(x, y).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    reference = model(x).logits  # with gradients on: nothing inference-only is read
    with torch.no_grad():
        assert torch.allclose(model(x).logits, reference, atol=1e-5)
    assert torch.allclose(decode(model, x, True), reference, atol=1e-5)


def test_a_model_made_under_inference_mode_decodes():
    with torch.inference_mode():
        torch.manual_seed(0)
        model = HippocampalTransformer(HippocampalTransformerConfig(**TINY, parts=PARTS), VOCAB)
        model.eval()
        x = tokens()
        full = model(x).logits
    assert torch.allclose(decode(model, x, True), full, atol=1e-5)


def test_inference_place_code_is_the_training_forward_mask():
    torch.manual_seed(0)
    cells = PlaceCells(32, 64, init_level=0.07)
    x = torch.randn(3, 10, 32)
    with_grad = cells(x)
    with torch.no_grad():
        assert torch.allclose(cells(x), with_grad, atol=0, rtol=0)
        cells.level_logit.add_(0.8)  # a new coding level is read, not a stale one
        moved = cells(x)
    assert not torch.allclose(moved, with_grad)
    assert torch.allclose(moved, cells(x).detach(), atol=0, rtol=0)


def one_layer_all_parts() -> HippocampalTransformer:
    """All parts in one layer: the smallest model whose compiled step has every term."""
    torch.manual_seed(0)
    config = HippocampalTransformerConfig(**{**TINY, "n_layer": 1}, parts=PARTS)
    model = HippocampalTransformer(config, VOCAB).eval()
    with torch.no_grad():  # a gain far from 1, so that prosody matters
        model.prosody.weight.normal_(0.0, 0.5)
    return model


def decode_steps(model: HippocampalTransformer, x: torch.Tensor) -> torch.Tensor:
    """Logits of a 9-token prompt, then one cached step at a time (past the time window)."""
    with torch.inference_mode():
        cache = model.new_cache(x.shape[0])
        out = [model(x[:, :9], cache=cache).logits]
        out += [model(x[:, t : t + 1], cache=cache).logits for t in range(9, x.shape[1])]
    return torch.cat(out, 1)


def test_compiled_decoding_steps_equal_the_step_by_step_path():
    """The step torch.compile traces (here with dynamo's eager backend: tracing and the
    replayed cache updates are what is checked, at no inductor compile time) computes what
    the step-by-step path does, and runs as one graph, not eagerly behind a fallback."""
    model, x = one_layer_all_parts(), tokens(length=14)
    model.fused_decoding = False
    step = decode_steps(model, x)
    model.fused_decoding = True
    graphs = []

    def backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    model.compile_decoding(backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager warns
        compiled = decode_steps(model, x)
    assert len(graphs) == 1
    assert torch.allclose(compiled, step, atol=1e-5)
    assert torch.allclose(compiled, model(x).logits, atol=1e-5)
    model.compile_decoding(None)
    assert model._compiled_step is None


def test_compiled_decoding_falls_back_to_eager_when_compilation_fails():
    model, x = one_layer_all_parts(), tokens(length=11)
    eager = decode_steps(model, x)

    def broken(graph, example_inputs):
        raise RuntimeError("no compiler here")

    model.compile_decoding(broken)
    with pytest.warns(RuntimeWarning, match="compile_decoding: torch.compile failed"):
        fallback = decode_steps(model, x)
    assert torch.equal(fallback, eager)
    assert model._compiled_step is None  # later steps go straight to the eager path


@pytest.mark.parametrize("backend", ["", 3])
def test_compile_decoding_rejects_a_bad_backend(backend):
    with pytest.raises(ValueError, match="backend"):
        tiny().compile_decoding(backend)


@pytest.mark.parametrize("strategy", ["greedy", "contrastive"])
def test_a_generation_folds_the_tables_once_though_its_cache_is_rebuilt(strategy, monkeypatch):
    model = tiny(PARTS)
    folds = []
    fold = model.decoding_tables
    monkeypatch.setattr(model, "decoding_tables", lambda: folds.append(1) or fold())
    prompt = tokens(1, 4)
    out = complete(model, prompt, 60, SamplingConfig(strategy))  # block 40: rebuilt twice
    assert len(folds) == 1
    model.fused_decoding = False
    assert torch.equal(out, complete(model, prompt, 60, SamplingConfig(strategy)))
