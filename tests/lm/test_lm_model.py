"""The model: baseline behaviour, every hippocampal part switchable, cache agreement, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from engram.lm.model import PARTS, HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.sample import SamplingConfig, generate

VOCAB = [chr(c) for c in range(ord("a"), ord("a") + 20)] + [" ", "\n", ".", ",", "A", "B"]
TINY = {
    "vocab_size": len(VOCAB),
    "block_size": 32,
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "place_cells": 32,
    "time_max_lag": 8,
}


def tiny(parts=(), seed=0, **kw) -> HippocampalTransformer:
    torch.manual_seed(seed)
    return HippocampalTransformer(HippocampalTransformerConfig(**{**TINY, "parts": parts, **kw}), VOCAB)


def tokens(batch=3, length=24, seed=1) -> torch.Tensor:
    return torch.randint(len(VOCAB), (batch, length), generator=torch.Generator().manual_seed(seed))


def test_initial_loss_is_ln_vocab_for_every_variant():
    x, y = tokens(8, 32), tokens(8, 32, seed=2)
    for parts in [(), PARTS, *[(p,) for p in PARTS]]:
        loss = float(tiny(parts)(x, y).loss.detach())
        assert abs(loss - math.log(len(VOCAB))) < 0.15, (parts, loss)


@pytest.mark.parametrize("part", PARTS)
def test_each_part_changes_the_forward_pass_and_keeps_shapes(part):
    x = tokens()
    base = tiny()
    with_part = tiny((part,))
    # copy the shared weights so that only the part itself can make a difference
    missing, _ = with_part.load_state_dict(base.state_dict(), strict=False)
    assert missing, "the part adds parameters or buffers"
    out_base, out_part = base(x), with_part(x)
    assert out_part.logits.shape == out_base.logits.shape == (3, 24, len(VOCAB))
    assert out_part.hidden.shape == (3, 24, 32)
    assert not torch.allclose(out_base.logits, out_part.logits, atol=1e-5)


def test_all_parts_off_is_the_plain_gpt_path():
    model = tiny()
    hippocampal = (model.place, model.grid, model.time, model.theta_gamma, model.rhythm)
    assert all(part is None for part in hippocampal) and model.prosody is None


def test_position_codes_can_replace_the_learned_position_embedding():
    assert tiny(("grid",), position_codes="replace").wpe is None
    assert tiny(("grid",), position_codes="join").wpe is not None
    assert tiny(("place",), position_codes="replace").wpe is not None  # no position code on


@pytest.mark.parametrize(
    "parts,extra",
    [
        ((), {}),
        (PARTS, {}),
        (("grid", "time"), {"grid_source": "path", "position_codes": "replace"}),
    ],
)
def test_cached_and_uncached_forward_agree(parts, extra):
    model = tiny(parts, **extra).eval()
    x = tokens(2, 30)
    with torch.no_grad():
        full = model(x).logits
        cache = model.new_cache(2)
        pieces = [model(x[:, :7], cache=cache).logits]
        pieces += [model(x[:, i : i + 1], cache=cache).logits for i in range(7, 20)]
        pieces.append(model(x[:, 20:], cache=cache).logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("parts", [(), PARTS])
def test_greedy_decoding_is_identical_with_and_without_cache(parts):
    model = tiny(parts, seed=3)
    prompt = tokens(1, 5)
    cfg = SamplingConfig("greedy")
    cached = torch.stack(list(generate(model, prompt, 20, cfg, use_cache=True)))
    uncached = torch.stack(list(generate(model, prompt, 20, cfg, use_cache=False)))
    assert torch.equal(cached, uncached)


def test_unknown_part_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown part.*hippocampus"):
        HippocampalTransformerConfig(parts=("place", "hippocampus"))
    with pytest.raises(ValueError, match="unknown field"):
        HippocampalTransformerConfig.from_dict({"n_layers": 3})


def test_sequence_longer_than_block_size_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match="block_size 32"):
        model(tokens(1, 33))
    cache = model.new_cache(1)
    model(tokens(1, 30), cache=cache)
    with pytest.raises(ValueError, match="exceeds the model's block_size"):
        model(tokens(1, 3), cache=cache)


def test_prosody_needs_the_vocabulary_text():
    with pytest.raises(ValueError, match="token_strings"):
        HippocampalTransformer(HippocampalTransformerConfig(**{**TINY, "parts": ("prosody",)}))


def test_gradient_checkpointing_gives_the_same_gradients():
    x, y = tokens(), tokens(seed=5)
    grads = []
    for flag in (False, True):
        model = tiny(PARTS, gradient_checkpointing=flag)
        model(x, y).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_weight_decay_applies_to_matrices_only():
    model = tiny(PARTS)
    decay, no_decay = model.optimizer_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert any(p is model.place.level_logit for p in no_decay["params"])
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == model.num_params()


def test_weights_are_tied_and_gpt2_initialised():
    model = tiny()
    assert model.lm_head.weight is model.wte.weight
    proj = model.blocks[0].mlp.c_proj.weight
    assert abs(float(proj.detach().std()) - 0.02 / math.sqrt(2 * 2)) < 0.004


def test_the_plain_gpt_preset_is_the_model_with_every_part_off():
    plain = HippocampalTransformerConfig.plain_gpt(**TINY)
    assert plain.parts == () and plain == HippocampalTransformerConfig(**TINY)
    assert HippocampalTransformerConfig(**TINY, parts=PARTS).without_parts() == plain
    torch.manual_seed(0)
    x = tokens()
    torch.testing.assert_close(HippocampalTransformer(plain)(x).logits, tiny()(x).logits)
    with pytest.raises(ValueError, match="parts: the plain GPT has none"):
        HippocampalTransformerConfig.plain_gpt(**TINY, parts=("place",))
