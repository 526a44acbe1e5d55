import json

import pytest

from engram.cli import build_parser, main
from engram.errors import ConfigError
from engram.runs import experiment, names, override, start
from engram.streaming.experiments import eviction as ev
from engram.streaming.experiments import statistics


def _tiny() -> ev.Config:
    return ev.Config(
        steps=2,
        batch_size=4,
        lrs=(1e-2,),
        test_size=16,
        conditions=("window_sinks", "matrix"),
        projection_rates=(1e-2,),
        pilot_seeds=2,
        min_seeds=2,
        max_seeds=2,
        variant_conditions=("window_sinks",),
        variants=("in_window",),
        lm_steps=2,
        lm_length=16,
        lm_conditions=("window_sinks",),
        cost_batch=2,
    )


def _jobs(folder) -> dict:
    return {p: json.loads(p.read_text())["result"] for p in (folder / "jobs").glob("*.json")}


def test_experiment_writes_preregistration_before_the_main_run_and_resumes(tmp_path, data_dir):
    cfg = _tiny()
    folder, result = start(experiment("streaming.eviction"), cfg, tmp_path)
    jobs = _jobs(folder.path)
    prereg = folder.file("preregistration.md").stat().st_mtime_ns
    main_jobs = [p for p, r in jobs.items() if r["phase"] == "main"]
    assert len(main_jobs) == 2 * len(cfg.conditions)
    assert all(prereg <= p.stat().st_mtime_ns for p in main_jobs)
    text = folder.file("preregistration.md").read_text()
    assert "H1" in text and "seeds per condition" in text
    tests = result.tables["tests"]
    ids = [t["id"] for t in tests]
    assert "projection_frozen" in {t["a"] for t in tests} and len(ids) == len(set(ids))
    assert all(0 <= t["p_holm"] <= 1 and t["p_holm"] >= t["p"] for t in tests)
    assert [c.source for c in result.claims][: len(ids)] == ids
    for name in ("report.md", "results.json", "accuracy_by_condition.png", "costs.csv", "claims.md"):
        assert folder.file(name).exists()
    # Resuming from the command line re-runs nothing that is already there.
    stamps = {p.name: p.stat().st_mtime_ns for p in jobs}
    assert main(["run", "--resume", str(folder.path)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (folder.path / "jobs").glob("*.json")} == stamps
    saved = json.loads(folder.file("power.json").read_text())
    assert saved["n_seeds"] == 2


def test_power_rule_floors_small_pilot_effects_and_caps_at_the_budget():
    cfg = ev.Config(conditions=("window_sinks", "matrix"), min_seeds=3, max_seeds=6)
    pilot = {
        "pilot_accuracy": {
            "window_sinks": [0.06, 0.07],
            "matrix": [0.9, 0.95],
            "projection_frozen": [0.06, 0.065],
        }
    }
    power = statistics.main_power(cfg, pilot)
    assert 3 <= power["n_seeds"] <= 6
    by_id = {r["hypothesis"]: r for r in power["rows"]}
    assert all(r["powered_for_d"] >= cfg.smallest_effect for r in by_id.values())


def test_bad_config_is_rejected_with_the_argument_named():
    with pytest.raises(ValueError, match="conditions"):
        ev.Config(conditions=("matrix",))
    with pytest.raises(ValueError, match="variant"):
        ev.Config().task("nonsense")


def test_eviction_experiments_are_registered_and_run_through_engram_run():
    assert {"streaming.eviction", "streaming.eviction_variants"} <= set(names())
    assert experiment("streaming.eviction").quick == ev.QUICK
    args = build_parser().parse_args(["run", "streaming.eviction", "--quick", "--out", "x"])
    assert callable(args.func)


def test_the_old_experiment_command_is_gone():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["experiment", "eviction", "--quick"])


def test_config_overrides_and_fixed_learning_rates_reject_bad_input():
    changed = override(ev.QUICK, ["min_seeds=3", "max_seeds=9", "variants=far"])
    assert (changed.min_seeds, changed.max_seeds, changed.variants) == (3, 9, ("far",))
    with pytest.raises(ConfigError, match="no_such_field"):
        override(ev.QUICK, ["no_such_field=1"])
    with pytest.raises(ConfigError, match="steps"):
        override(ev.QUICK, ["steps=ten"])
    with pytest.raises(ValueError, match="missing"):
        ev.Config(conditions=("window_sinks", "matrix"), lr_by_condition={"matrix": 1e-2})


def test_binding_family_tests_against_the_value_set_level():
    cfg = ev.Config(conditions=("window_sinks", "matrix", "matrix_ones", "full"))
    rows = statistics.binding(
        cfg,
        {
            "matrix": [0.47, 0.50, 0.46, 0.45],  # the value-set level 1/2: tokens, not bindings
            "matrix_ones": [0.90, 0.95, 0.99, 0.80],
            "full": [1.0, 1.0, 1.0, 1.0],
        },
    )
    by = {r["a"]: r for r in rows}
    assert by["matrix"]["mean_b"] == 0.5 and not statistics.holds(by["matrix"])
    assert statistics.holds(by["matrix_ones"]) and by["matrix_ones"]["seeds_at_least_0.75"] == 4
    assert not by["full"]["in_family"] and by["full"]["p"] == 0.0
    assert by["matrix_ones"]["p_holm"] >= by["matrix_ones"]["p"]
