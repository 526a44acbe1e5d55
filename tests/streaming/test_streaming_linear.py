"""Linear attention and the delta rule (DeltaNet) as layers: each chunked (training) form
against its naive recurrent reference on outputs and every input gradient, the model's
parallel form against its token-by-token stream, state bytes, and refused settings."""

from __future__ import annotations

import pytest
import torch

from engram.streaming import StreamingConfig, StreamingTransformer
from engram.streaming.linear import (
    RecurrentAttention,
    delta_chunked,
    delta_recurrent,
    linear_chunked,
    linear_recurrent,
)

B, H, T, D = 2, 2, 23, 5


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = {name: torch.randn(B, H, T, D, generator=gen) for name in ("q", "k", "v")}
    x["beta"] = torch.rand(B, H, T, generator=gen)
    return {name: t.requires_grad_() for name, t in x.items()}


def _run(form, names, seed: int, **kwargs):
    x = _inputs(seed)
    out = form(*(x[n] for n in names), **kwargs)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1))
    grads = torch.autograd.grad((weights * out).sum(), [x[n] for n in names])
    return out, dict(zip(names, grads, strict=True))


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
@pytest.mark.parametrize(
    ("chunked", "recurrent", "names"),
    [
        (linear_chunked, linear_recurrent, ("q", "k", "v")),
        (delta_chunked, delta_recurrent, ("q", "k", "v", "beta")),
    ],
    ids=["linear", "delta"],
)
def test_chunked_form_matches_the_naive_recurrence_in_outputs_and_gradients(chunked, recurrent, names, chunk):
    for seed in (0, 1):
        fast, fast_grads = _run(chunked, names, seed, chunk=chunk)
        slow, slow_grads = _run(recurrent, names, seed)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
        for name in names:
            assert slow_grads[name].abs().amax() > 1e-4, name  # a gradient that could differ
            torch.testing.assert_close(fast_grads[name], slow_grads[name], atol=1e-4, rtol=1e-4, msg=name)


def test_the_delta_rule_stores_a_binding_that_linear_attention_blurs():
    # write k1 → v1 then k1 → v2 with β = 1: the delta rule overwrites, linear attention averages
    k = torch.tensor([1.0, -2.0, 0.5])[None, None, None].repeat(1, 1, 3, 1)
    v = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0]])[None, None]
    beta = torch.ones(1, 1, 3)
    delta = delta_recurrent(k, k, v, beta)
    torch.testing.assert_close(delta[0, 0, 1], v[0, 0, 1], atol=1e-5, rtol=0)
    linear = linear_recurrent(k, k, v)
    torch.testing.assert_close(linear[0, 0, 1], torch.tensor([0.5, 0.5, 0.0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mixer", ["linear", "delta"])
def test_model_parallel_form_equals_its_stream_in_logits_and_every_gradient(mixer):
    cfg = StreamingConfig(vocab_size=12, d_model=16, n_heads=2, window=None, n_sink=0, mixer=mixer, chunk=4)
    torch.manual_seed(0)
    model = StreamingTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    tokens = torch.randint(0, 12, (2, 13), generator=torch.Generator().manual_seed(3))
    logits, grads = {}, {}
    for form in ("forward", "stream"):
        model.zero_grad()
        logits[form] = getattr(model, form)(tokens)
        logits[form].log_softmax(-1)[..., 0].sum().backward()
        grads[form] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.testing.assert_close(logits["forward"], logits["stream"], atol=1e-5, rtol=1e-4)
    assert grads["forward"].keys() == grads["stream"].keys()
    if mixer == "delta":
        assert any("beta" in name for name in grads["stream"])
    for name, grad in grads["stream"].items():
        torch.testing.assert_close(grads["forward"][name], grad, atol=1e-4, rtol=1e-3, msg=name)


def test_state_bytes_are_one_matrix_per_head_whatever_the_length():
    cfg = StreamingConfig(
        vocab_size=12, d_model=16, n_heads=2, window=None, n_sink=0, mixer="delta", mlp=False
    )
    model = StreamingTransformer(cfg)
    short, long = model.init_caches(1), model.init_caches(1)
    model.stream(torch.zeros(1, 3, dtype=torch.int64), caches=short)
    model.stream(torch.zeros(1, 20, dtype=torch.int64), caches=long)
    conv = 2 * 16 * (cfg.conv_kernel - 1) * 4
    assert model.state_bytes(short) == model.state_bytes(long) == conv + 2 * (2 * 8 * 8 * 4)
    linear = RecurrentAttention(16, 2, "linear", 0)
    assert linear.state_bytes() == 2 * (8 * 8 + 8) * 4


def test_a_recurrent_mixer_with_a_window_or_memory_or_unknown_name_is_refused():
    with pytest.raises(ValueError, match="mixer"):
        StreamingConfig(vocab_size=12, mixer="linear")  # the default window=16
    with pytest.raises(ValueError, match="mixer"):
        StreamingConfig(vocab_size=12, window=None, n_sink=0, mixer="mamba")
    with pytest.raises(ValueError, match="chunk"):
        RecurrentAttention(16, 2, "delta", 0, chunk=0)
