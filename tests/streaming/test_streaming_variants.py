import json
from pathlib import Path

import pytest
import torch

from engram.cli import main
from engram.data.recall_tasks import IGNORE, RecallTaskConfig, make_batch
from engram.runs import experiment, start
from engram.streaming.experiments import eviction as ev
from engram.streaming.experiments import variants as evv
from engram.streaming.experiments.hypotheses import variant_family


def test_overwrite_batch_marks_the_old_value_of_each_overwritten_key():
    task = RecallTaskConfig(n_pairs=3, n_filler=2, key_vocab=8, value_vocab=8, n_overwrite=2)
    batch = make_batch(task, 64, torch.Generator().manual_seed(0))
    over = batch.overwritten_queries
    assert over.sum() == 2 * 64  # two of three keys re-bound in every sequence
    assert (batch.stale_targets[~over] == IGNORE).all()
    assert (batch.stale_targets[over] != batch.targets[over]).all()
    for row in range(64):
        tokens = batch.tokens[row].tolist()
        for t in over[row].nonzero().flatten().tolist():
            key = tokens[t]
            bound = [tokens[i + 1] for i in range(1, len(tokens) - 1) if tokens[i] == key][:2]
            # the key's first binding is the stale value, its second the target
            assert bound == [batch.stale_targets[row, t].item(), batch.targets[row, t].item()]


def test_far_variant_makes_the_equal_state_knn_drop_entries():
    cfg = ev.Config()
    capacity = cfg.model("knn", cfg.task().vocab_size).equal_state_capacity()
    evicted = {v: cfg.task(v).length - cfg.n_sink - cfg.window for v in ("base", "far")}
    assert evicted["base"] <= capacity < evicted["far"]


def test_variant_config_rejects_bad_input_with_the_field_named():
    with pytest.raises(ValueError, match="cells"):
        evv.Config(main_run="x", cells={"nonsense": ("window_sinks",)})
    with pytest.raises(ValueError, match="window_sinks"):
        evv.Config(main_run="x", cells={"far": ("matrix",)})
    with pytest.raises(ValueError, match="stop_at"):
        evv.Config(main_run="x", stop_at="half past nine")
    with pytest.raises(FileNotFoundError, match="main_run"):
        evv.load_main(Path(__file__).parent)


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, data_dir):
    cfg = ev.Config(
        steps=2,
        batch_size=4,
        lrs=(1e-2,),
        test_size=16,
        conditions=("window_sinks", "matrix", "knn"),
        projection_rates=(1e-2,),
        min_seeds=2,
        max_seeds=2,
        variants=(),
        lm_steps=1,
        lm_length=16,
        lm_conditions=("window_sinks",),
        cost_batch=2,
    )
    folder, _ = start(experiment("streaming.eviction"), cfg, tmp_path_factory.mktemp("main"))
    return folder.path


def test_variant_study_preregisters_first_balances_seeds_and_resumes(main_run, tmp_path):
    cells = {
        "far": ("window_sinks", "knn", "knn_unbounded"),
        "overwrite": ("window_sinks", "matrix"),
        "in_window": ("window_sinks",),
    }
    study = evv.Config(main_run=str(main_run), cells=cells, seeds=2)
    family = variant_family(study.cells, evv.study_config(study, evv.load_main(main_run)))
    claims = {(h["variant"], h["a"], h["b"]) for h in family}
    assert ("far", "knn", "knn_unbounded") in claims and ("in_window", "window_sinks", None) in claims
    assert {h["score"] for h in family if h["variant"] == "overwrite"} == {"overwritten_accuracy"}

    folder, result = start(experiment("streaming.eviction_variants"), study, tmp_path)
    prereg = folder.file("preregistration-variants.md")
    jobs = sorted((folder.path / "jobs").glob("*.json"))
    assert len(jobs) == 2 * 6 and all(prereg.stat().st_mtime_ns <= p.stat().st_mtime_ns for p in jobs)
    assert "V1" in prereg.read_text() and "Stopping rule" in prereg.read_text()
    assert sorted({r["seed"] for r in result.tables["models"]}) == [100, 101]
    assert [t["id"] for t in result.tables["tests"]] == [h["id"] for h in family]
    assert all(0 <= t["p_holm"] <= 1 and t["p_holm"] >= t["p"] for t in result.tables["tests"])
    # the main run's ranking uses its own seeds: 3 memories/full → knn vs matrix only here
    assert {(r["a"], r["b"]) for r in result.tables["main_ranking_post_hoc"]} == {("matrix", "knn")}
    for name in ("report.md", "cells.csv", "accuracy_vs_distance.png", "accuracy_vs_pairs.png"):
        assert folder.file(name).exists()
    overwrite = [
        c for c in result.tables["cells"] if c["variant"] == "overwrite" and c["condition"] == "matrix"
    ]
    assert 0 <= overwrite[0]["stale_rate"] <= 1

    stamps = {p.name: p.stat().st_mtime_ns for p in jobs}
    assert main(["run", "--resume", str(folder.path)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in jobs} == stamps


def test_a_deadline_in_the_past_starts_no_model(main_run, tmp_path):
    study = evv.Config(
        main_run=str(main_run), cells={"in_window": ("window_sinks",)}, seeds=2, stop_at="00:00"
    )
    with pytest.raises(RuntimeError, match="fewer than 2 seeds"):
        start(experiment("streaming.eviction_variants"), study, tmp_path)
    (folder,) = tmp_path.iterdir()
    assert (folder / "preregistration-variants.md").exists()
    assert not list((folder / "jobs").glob("*.json"))
    assert json.loads((folder / "power.json").read_text())["override"]
