"""Equal-parameter baseline: MLP width option, width matching, and the all-parts comparison."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engram.lm.experiments.ablation import MATCHED, comparisons, variant_model, verdict
from engram.lm.model import PARTS, HippocampalTransformer, HippocampalTransformerConfig, matched_mlp_hidden

TINY = {"vocab_size": 26, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}
NANOGPT_CPU = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0}


def count(config: HippocampalTransformerConfig) -> int:
    return HippocampalTransformer(config, token_strings=[" "] * config.vocab_size).num_params()


def test_default_width_is_unchanged():
    # 804,096 is the plain GPT of nanoGPT's CPU recipe before the width became an option
    assert count(HippocampalTransformerConfig(**NANOGPT_CPU)) == 804_096
    config = HippocampalTransformerConfig(**TINY)
    assert config.mlp_width == 4 * 32
    assert count(config) == count(HippocampalTransformerConfig(**TINY, mlp_hidden=128))
    # a checkpoint config written before the option existed loads to the same model
    saved = {k: v for k, v in config.to_dict().items() if k != "mlp_hidden"}
    assert HippocampalTransformerConfig.from_dict(saved).mlp_width == 128
    narrow = HippocampalTransformer(HippocampalTransformerConfig(**TINY, mlp_hidden=7))
    assert narrow.blocks[0].mlp.c_fc.weight.shape == (7, 32)
    assert narrow(torch.zeros(2, 5, dtype=torch.long)).logits.shape == (2, 5, 26)


@pytest.mark.parametrize("model", [TINY, {**NANOGPT_CPU, "vocab_size": 65}])
def test_matched_baseline_has_the_all_parts_parameter_count(model):
    full = HippocampalTransformerConfig(**model, parts=PARTS)
    target = count(full)
    matched = matched_mlp_hidden(full, target)
    plain = HippocampalTransformerConfig(**model, mlp_hidden=matched.mlp_hidden)
    assert count(plain) == matched.params == target + matched.residual
    assert abs(matched.residual) <= 0.005 * target
    # the default baseline is smaller: the width grew
    assert count(HippocampalTransformerConfig(**model)) < target
    # no other width comes closer
    for h in (matched.mlp_hidden - 1, matched.mlp_hidden + 1):
        assert abs(count(dataclasses.replace(plain, mlp_hidden=h)) - target) >= abs(matched.residual)


def test_harness_width_does_not_depend_on_the_vocabulary():
    widths = {
        variant_model({**TINY, "vocab_size": v}, MATCHED)["mlp_hidden"] for v in (26, 65, 300)
    }
    assert len(widths) == 1
    assert variant_model(TINY, "baseline") == {**TINY, "parts": ()}


@pytest.mark.parametrize("width", [0, -4, 2.5, True, "512"])
def test_bad_mlp_width_is_a_clear_error(width):
    with pytest.raises(ValueError, match="mlp_hidden: expected a positive integer"):
        HippocampalTransformerConfig(**TINY, mlp_hidden=width)


def test_bad_target_is_a_clear_error():
    with pytest.raises(ValueError, match="target: expected a positive parameter count"):
        matched_mlp_hidden(HippocampalTransformerConfig(**TINY), 0)
    with pytest.raises(ValueError, match="target: a plain GPT of this config has at least"):
        matched_mlp_hidden(HippocampalTransformerConfig(**TINY), 100)


def rows(variant, losses, params=1000):
    return [{"variant": variant, "seed": i, "val_loss": x, "params": params} for i, x in enumerate(losses)]


BASE = rows("baseline", [1.95, 1.97, 1.96])
VARIANTS = ("baseline", "all", MATCHED)


def test_equal_parameter_comparison():
    better = BASE + rows("all", [1.80, 1.81, 1.82]) + rows(MATCHED, [1.90, 1.92, 1.91])
    family, (equal,) = comparisons(better, VARIANTS)
    assert [(c["a"], c["b"]) for c in family] == [("all", "baseline"), (MATCHED, "baseline")]
    assert (equal["a"], equal["b"]) == ("all", MATCHED)
    assert equal["diff"] == pytest.approx(-0.10) and equal["p"] < 0.01 and equal["cohens_d"] < 0
    assert verdict(equal) == "helps"
    worse = BASE + rows("all", [2.0, 2.1, 2.05]) + rows(MATCHED, [1.90, 1.92, 1.91])
    (_, (equal,)) = comparisons(worse, VARIANTS)
    assert equal["diff"] > 0 and verdict(equal) in ("hurts", "no detectable difference")
    one_seed = BASE + rows("all", [1.8]) + rows(MATCHED, [1.9, 1.8])
    assert comparisons(one_seed, VARIANTS) == ([], [])
    without_matched = BASE + rows("all", [1.80, 1.81, 1.82])
    family, equal = comparisons(without_matched, ("baseline", "all"))
    assert len(family) == 1 and equal == []
