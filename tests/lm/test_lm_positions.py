"""The generic controls for the hippocampal codes: RoPE, ALiBi, the causal convolution, the
sinusoids matched to each code's width, and exact KV-cached decoding for each of them."""

from __future__ import annotations

import math

import pytest
import torch

from engram.lm.model import HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.positions import (
    CONTROLS,
    SINUSOIDS,
    CausalConv,
    Rotary,
    alibi_bias,
    alibi_slopes,
    rotate,
    sinusoid_table,
)
from engram.lm.sample import SamplingConfig, generate

VOCAB = [chr(c) for c in range(ord("a"), ord("a") + 20)] + [" ", "\n", ".", ",", "A", "B"]
TINY = {"vocab_size": len(VOCAB), "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32}


def tiny(controls=(), parts=(), seed=0, **kw) -> HippocampalTransformer:
    torch.manual_seed(seed)
    config = HippocampalTransformerConfig(**{**TINY, "parts": parts, "controls": controls, **kw})
    return HippocampalTransformer(config, VOCAB)


def tokens(batch=3, length=24, seed=1) -> torch.Tensor:
    return torch.randint(len(VOCAB), (batch, length), generator=torch.Generator().manual_seed(seed))


def test_rope_scores_depend_only_on_the_offset():
    rotary = Rotary(16, n_positions=64)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i: int, j: int) -> float:
        return float((rotate(q, *rotary(i, i + 1)) * rotate(k, *rotary(j, j + 1))).sum())

    for offset in (0, 3, 17):
        scores = [score(j + offset, j) for j in (0, 5, 20, 40)]
        assert max(scores) - min(scores) < 1e-5, (offset, scores)
    assert abs(score(10, 7) - score(10, 2)) > 1e-3  # and the offset does matter
    # past the table the angles are computed, and they agree with it
    far = Rotary(16, n_positions=8)
    assert torch.allclose(torch.stack(far(5, 12)), torch.stack(rotary(5, 12)), atol=1e-6)


def test_rope_keeps_the_norm_and_needs_an_even_head():
    rotary = Rotary(8, n_positions=10)
    x = torch.randn(2, 3, 10, 8)
    assert torch.allclose(rotate(x, *rotary(0, 10)).norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    with pytest.raises(ValueError, match="even head width"):
        Rotary(7)
    with pytest.raises(ValueError, match="even head width"):
        tiny(("rope",), n_embd=18, n_head=2)  # head width 9


def test_alibi_bias_shape_values_and_causality():
    slopes = alibi_slopes(8)
    assert torch.allclose(slopes, torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    assert alibi_slopes(6).shape == (6,) and bool((alibi_slopes(6) > 0).all())
    bias = alibi_bias(slopes, start=5, length=3)
    assert bias.shape == (8, 3, 8)
    for row, query in enumerate(range(5, 8)):
        for key in range(8):
            value = bias[:, row, key]
            if key > query:
                assert bool(torch.isinf(value).all() and (value < 0).all())
            else:
                assert torch.allclose(value, -slopes * (query - key))
    # a decoding step's row is the full forward's last row
    assert torch.equal(alibi_bias(slopes, 7, 1)[:, 0], alibi_bias(slopes, 0, 8)[:, -1])


@pytest.mark.parametrize("control", ["alibi", "rope", "conv"])
def test_a_later_token_never_changes_earlier_logits(control):
    model = tiny((control,)).eval()
    x = tokens(1, 20)
    y = x.clone()
    y[0, 12] = (y[0, 12] + 1) % len(VOCAB)
    a, b = model(x).logits, model(y).logits
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:], atol=1e-4)


def test_the_convolution_is_causal_and_short():
    torch.manual_seed(0)
    conv = CausalConv(n_embd=16, n_filters=3, dim=4, kernel=4)
    emb = torch.randn(2, 20, 16)
    changed = emb.clone()
    changed[:, 9] += 1.0
    delta = (conv(changed, 0) - conv(emb, 0)).abs().amax(-1)[0]
    assert bool((delta[:9] == 0).all()), "an output before the changed token moved"
    assert bool((delta[9:13] > 1e-6).all()), "the kernel's 4 taps reach 4 outputs"
    assert bool((delta[13:] == 0).all()), "an output more than kernel − 1 tokens later moved"
    # given the history, the new positions alone come out as in the whole pass
    assert torch.allclose(conv(emb[:, 4:], 12), conv(emb, 0)[:, 16:], atol=1e-6)
    with pytest.raises(ValueError, match="conv_kernel"):
        CausalConv(16, 3, 4, kernel=0)


@pytest.mark.parametrize("control", sorted(SINUSOIDS))
def test_each_sinusoid_is_as_wide_as_its_code_and_enters_the_same_way(control):
    code = SINUSOIDS[control]
    with_code, with_control = tiny(parts=(code,)), tiny((control,))
    readout = getattr(with_code, code).readout
    theirs = with_control.sinusoids[control].readout
    assert theirs.in_features == readout.in_features == with_code.config.code_width(code)
    assert theirs.out_features == readout.out_features
    # position codes alone have the same parameter count as their control (grid: equal)
    if code in ("grid", "theta_gamma"):
        assert with_control.num_params() == with_code.num_params()


def test_the_convolution_is_as_wide_as_the_time_cells():
    with_time, with_conv = tiny(parts=("time",)), tiny(("conv",))
    assert with_conv.conv.readout.in_features == with_time.time.readout.in_features
    assert with_conv.conv.project.out_features == with_time.time.project.out_features
    assert with_conv.conv.width == with_time.config.code_width("time")


def test_sinusoid_table_frequencies():
    table = sinusoid_table(torch.arange(200), 6, max_period=100.0)
    assert table.shape == (200, 6)
    assert torch.allclose(table[:, 0], torch.sin(torch.arange(200.0)), atol=1e-5)  # ω₀ = 1
    # the slowest pair has period max_period: sin repeats after 100 positions
    assert torch.allclose(table[:100, 4], table[100:, 4], atol=1e-5)
    assert sinusoid_table(torch.arange(3), 5, 50.0).shape == (3, 5)
    with pytest.raises(ValueError, match="sinusoid_max_period"):
        sinusoid_table(torch.arange(3), 4, 6.0)


@pytest.mark.parametrize("control", CONTROLS)
def test_each_control_changes_the_forward_pass(control):
    x = tokens()
    base, model = tiny(), tiny((control,))
    _, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected
    out_base, out = base(x), model(x)
    assert out.logits.shape == out_base.logits.shape
    assert not torch.allclose(out_base.logits, out.logits, atol=1e-5)


@pytest.mark.parametrize(
    "controls,extra",
    [((c,), {}) for c in CONTROLS]
    + [(CONTROLS, {}), (("rope", "alibi", "sin_grid"), {"position_codes": "replace"})],
)
def test_cached_decoding_equals_the_full_forward(controls, extra):
    model = tiny(controls, **extra).eval()
    x = tokens(3, 26)
    full = model(x).logits
    cache = model.new_cache(3)
    steps = [model(x[:, :9], cache=cache).logits, model(x[:, 9:13], cache=cache).logits]
    steps += [model(x[:, t : t + 1], cache=cache).logits for t in range(13, 26)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("controls", [("rope",), ("alibi",), ("conv",), CONTROLS])
def test_greedy_decoding_is_identical_with_and_without_cache(controls):
    model = tiny(controls).eval()
    prompt = tokens(2, 5)
    runs = [
        torch.stack(list(generate(model, prompt, 26, SamplingConfig("greedy"), use_cache=c)), 1)
        for c in (True, False)
    ]
    assert torch.equal(*runs)


def test_replace_drops_the_learned_position_embedding_for_controls():
    assert tiny(("rope",), position_codes="replace").wpe is None
    assert tiny(("rope",)).wpe is not None  # "join" keeps it, as the codes keep it


def test_controls_are_checked_and_travel_in_the_config():
    with pytest.raises(ValueError, match="controls: unknown"):
        HippocampalTransformerConfig(controls=("fourier",))
    with pytest.raises(ValueError, match="controls: expected distinct"):
        HippocampalTransformerConfig(controls=("rope", "rope"))
    with pytest.raises(ValueError, match="controls"):
        HippocampalTransformerConfig.plain_gpt(controls=("rope",))
    config = HippocampalTransformerConfig(controls=("alibi", "conv"), parts=("grid",))
    back = HippocampalTransformerConfig.from_dict(config.to_dict())
    assert back == config and back.without_parts().controls == ()
    with pytest.raises(ValueError, match="code"):
        config.code_width("place")


def test_gradient_checkpointing_passes_the_relative_positions():
    x, y = tokens(2, 16), tokens(2, 16, seed=3)
    grads = []
    for flag in (False, True):
        model = tiny(("rope", "alibi"), gradient_checkpointing=flag).train()
        model(x, y).loss.backward()
        grads.append(model.blocks[0].attn.c_attn.weight.grad)
    assert torch.allclose(*grads, atol=1e-6)
    assert math.isfinite(float(grads[0].abs().sum()))
