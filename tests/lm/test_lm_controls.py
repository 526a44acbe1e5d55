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


def test_the_plain_gpt_against_rope_and_alibi_is_in_the_family_with_its_own_verdict():
    cfg = Config(variants=("baseline", "rope", "alibi"), n_seeds=4, second_corpus="")
    assert cfg.pairs() == [("tinyshakespeare/baseline", "tinyshakespeare/rope"),
                           ("tinyshakespeare/baseline", "tinyshakespeare/alibi")]
    noise = [0.001, -0.002, 0.0015, -0.001]
    offsets = {"baseline": 0.0, "rope": -0.05, "alibi": 0.0}
    rows = [{"corpus": c, "variant": v, "seed": s, "val_loss": 2.0 + offsets[v] + noise[s]
             + (0.003 * (-1) ** s if v == "alibi" else 0.0)} for c, v, s in cfg.arms()]
    verdicts = {r["control"]: r["verdict"] for r in comparisons(rows, cfg)}
    assert verdicts == {"rope": "the control lowers the plain GPT's loss",
                        "alibi": "the control does not change the plain GPT's loss detectably"}


def _cache_earlier(cfg: Config, earlier, arms: set[tuple[str, str, int]]) -> dict:
    """Write an earlier run's job cache holding ``arms`` (as the job runner writes it)."""
    from engram.io import atomic_write_text, to_json
    from engram.lm.experiments.controls import jobs
    from engram.runs.jobs import CACHE_FORMAT, cache_path

    losses = {}
    for (corpus, variant, seed), job in zip(cfg.arms(), jobs(cfg, earlier), strict=True):
        if (corpus, variant, seed) in arms:
            losses[variant, seed] = 3.0 + 0.1 * seed + (0.05 if variant == "sin_grid" else 0.0)
            result = {"variant": variant, "seed": seed, "params": 1, "val_loss":
                      losses[variant, seed], "tokens_per_second": 1.0, "curve": [[0, 4.0]]}
            atomic_write_text(cache_path(earlier, job), to_json(
                {"format": CACHE_FORMAT, "job": job.describe(), "result": result}))
    return losses


def test_an_earlier_runs_identical_jobs_are_read_not_trained(tmp_path, data_dir):
    import dataclasses

    from engram.lm.experiments.controls import QUICK, reused, run
    from engram.runs import RunFolder

    cfg = dataclasses.replace(QUICK, variants=("grid", "sin_grid"), second_corpus="")
    earlier = tmp_path / "earlier"
    arms = set(cfg.arms()) - {("tinyshakespeare", "grid", 1)}
    losses = _cache_earlier(cfg, earlier, arms)
    cfg = dataclasses.replace(cfg, reuse=(str(earlier),))
    assert {cfg.arms()[i] for i in reused(cfg)} == arms
    # a job trained otherwise (here one step more) is not the same job
    assert reused(dataclasses.replace(cfg, steps=cfg.steps + 1)) == {}

    (tmp_path / "now").mkdir()
    folder = RunFolder(tmp_path / "now")
    result = run(cfg, folder)
    runs = {(r["variant"], r["seed"]): r for r in result.tables["runs"]}
    assert len(list((folder.path / "jobs").iterdir())) == 1  # only the missing arm trained
    assert runs["grid", 1]["trained_in"] == folder.path.as_posix()
    assert runs["grid", 1]["val_loss"] < 10.0 and runs["grid", 1]["params"] > 1
    for variant, seed in losses:
        assert runs[variant, seed]["trained_in"] == str(earlier)
        assert runs[variant, seed]["val_loss"] == losses[variant, seed]
    assert not (folder.path / "tinyshakespeare" / "sin_grid-seed0").exists()
    assert "3 of the 4 runs are the same jobs read from" in result.intro


def test_reuse_needs_a_run_folder_with_a_job_cache(tmp_path):
    from engram.lm.experiments.controls import reused

    with pytest.raises(ValueError, match="reuse: expected a run folder"):
        reused(Config(variants=("grid", "sin_grid"), reuse=(str(tmp_path),)))
    with pytest.raises(ValueError, match="reuse: expected run folder paths"):
        Config(variants=("grid", "sin_grid"), reuse=("",))
