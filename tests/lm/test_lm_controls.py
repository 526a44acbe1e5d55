"""The controls experiment's design: which runs, which comparisons, one Holm, the verdicts."""

from __future__ import annotations

import pytest

from engram.lm.experiments.controls import PAIRS, Config, comparisons, variant_model

DESIGN = Config(
    variants=("theta_gamma", "sin_theta_gamma", "time", "conv", "rope"),
    n_seeds=3,
    second_variants=("theta_gamma", "sin_theta_gamma"),
    second_seeds=2,
)


def test_arms_run_seed_by_seed_on_both_corpora():
    arms = DESIGN.arms()
    assert len(arms) == 5 * 3 + 2 * 2
    assert arms[:7] == [("tinyshakespeare", v, 0) for v in DESIGN.variants] + [
        ("wikitext2-valid", "theta_gamma", 0), ("wikitext2-valid", "sin_theta_gamma", 0)]
    assert [a for a in arms if a[2] == 2] == [("tinyshakespeare", v, 2) for v in DESIGN.variants]


def test_the_family_is_every_code_control_pair_run_on_a_corpus():
    assert DESIGN.pairs() == [
        ("tinyshakespeare/theta_gamma", "tinyshakespeare/sin_theta_gamma"),
        ("tinyshakespeare/theta_gamma", "tinyshakespeare/rope"),
        ("tinyshakespeare/time", "tinyshakespeare/conv"),
        ("tinyshakespeare/time", "tinyshakespeare/rope"),
        ("wikitext2-valid/theta_gamma", "wikitext2-valid/sin_theta_gamma"),
    ]
    assert set(DESIGN.pairs()) <= {(f"{c}/{a}", f"{c}/{b}") for c in ("tinyshakespeare",
                                   "wikitext2-valid") for a, b in PAIRS}


def test_one_holm_over_all_comparisons_and_directional_verdicts():
    cfg = Config(variants=("theta_gamma", "sin_theta_gamma", "grid", "sin_grid"), n_seeds=5,
                 second_variants=("theta_gamma", "sin_theta_gamma"), second_seeds=5)
    offsets = {"theta_gamma": -0.05, "sin_theta_gamma": 0.0, "grid": 0.0, "sin_grid": 0.0}
    noise = [0.001, -0.002, 0.0015, -0.001, 0.0005]
    rows = [
        {"corpus": corpus, "variant": v, "seed": s, "val_loss": 2.0 + offsets[v] + noise[s]
         + ([0.01, -0.012, 0.008, -0.009, 0.004][s] if v == "grid" else 0.0)}
        for corpus, v, s in cfg.arms()
    ]
    family = comparisons(rows, cfg)
    assert [(r["corpus"], r["code"], r["control"]) for r in family] == [
        ("tinyshakespeare", "theta_gamma", "sin_theta_gamma"),
        ("tinyshakespeare", "grid", "sin_grid"),
        ("wikitext2-valid", "theta_gamma", "sin_theta_gamma"),
    ]
    assert all(r["test"] == "paired" for r in family)
    ps = sorted(r["p"] for r in family)
    holm = sorted(r["p_holm"] for r in family)
    assert holm[0] == pytest.approx(min(1.0, 3 * ps[0]))  # corrected over all three at once
    by_code = {(r["corpus"], r["code"]): r["verdict"] for r in family}
    assert by_code["tinyshakespeare", "theta_gamma"] == "better than its control"
    assert by_code["tinyshakespeare", "grid"].startswith("not better")
    assert by_code["wikitext2-valid", "theta_gamma"] == "better than its control"


def test_variants_build_the_same_model_but_their_code_or_control():
    from engram.lm.experiments.controls import Sizes

    assert variant_model(Sizes(), "sin_grid")["controls"] == ("sin_grid",)
    assert variant_model(Sizes(), "grid")["parts"] == ("grid",)
    assert variant_model(Sizes(), "baseline")["parts"] == () == variant_model(Sizes(), "baseline")[
        "controls"]


def test_bad_designs_are_refused_by_name():
    with pytest.raises(ValueError, match="corpus"):
        Config(corpus="ptb")
    with pytest.raises(ValueError, match="second_corpus"):
        Config(second_corpus="tinyshakespeare")
    with pytest.raises(ValueError, match="variants: unknown"):
        Config(variants=("theta_gamma", "fourier"))
    with pytest.raises(ValueError, match="no code is run beside"):
        Config(variants=("theta_gamma",), second_variants=("grid",))
    with pytest.raises(ValueError, match="n_seeds"):
        Config(n_seeds=0)
