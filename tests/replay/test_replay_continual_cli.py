"""`engram run replay.continual`: streams, metrics, the run folder, resuming, and clear errors."""

import json

import numpy as np
import pytest
import torch

from engram.cli import main
from engram.data.streams import make_stream
from engram.errors import ConfigError
from engram.replay.experiments.continual import QUICK, Config, summarize
from engram.replay.experiments.continual_train import LearnerConfig
from engram.runs import COLUMNS


def test_metrics_of_a_known_accuracy_matrix():
    acc = np.array([[1.0, 0.0, 0.0], [0.6, 0.9, 0.0], [0.5, 0.8, 1.0]])
    s = summarize(acc)
    assert s["final_accuracy"] == pytest.approx(2.3 / 3)
    assert s["forgetting"] == pytest.approx([0.5, 0.1])
    assert s["bwt"] == pytest.approx(((0.5 - 1.0) + (0.8 - 0.9)) / 2)


@pytest.mark.parametrize("scenario,n_out", [("task", 10), ("domain", 2), ("class", 10)])
def test_split_digits_has_five_tasks_of_two_digits(scenario, n_out):
    stream = make_stream("split-digits", scenario)
    assert len(stream) == 5 and stream.n_inputs == 64 and stream.n_outputs == n_out
    labels = set(stream.tasks[3].y_train.tolist())
    assert labels == ({0, 1} if scenario == "domain" else {6, 7})
    assert float(stream.tasks[0].x_train.max()) <= 1.0


def test_validation_split_is_carved_from_training_data_not_the_test_set():
    full = make_stream("split-digits", "class")
    val = make_stream("split-digits", "class", validation=True)
    for a, b in zip(full.tasks, val.tasks, strict=True):
        # Train + validation = the original training part; the test set is not read.
        assert a.n_train == b.n_train + b.y_test.shape[0]
        train_rows = {tuple(r) for r in a.x_train.tolist()}
        assert all(tuple(r) in train_rows for r in b.x_test.tolist())
        assert not {tuple(r) for r in b.x_train.tolist()} & {tuple(r) for r in b.x_test.tolist()}
    again = make_stream("split-digits", "class", validation=True)
    assert torch.equal(again.tasks[2].x_test, val.tasks[2].x_test)


def test_mnist_streams_read_the_shared_file(data_dir):
    path = data_dir / "mnist" / "mnist.npz"
    split = make_stream("split-mnist", "class", path)
    assert len(split) == 5 and split.tasks[0].x_train.shape[1] == 784
    perm = make_stream("permuted-mnist", "domain", path)
    x0, _ = perm.tasks[0].test_set()
    x1, _ = perm.tasks[1].test_set()
    assert len(perm) == 10 and torch.allclose(x0.sum(1), x1.sum(1)) and not torch.equal(x0, x1)


def test_bad_scenario_strategy_and_path_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="scenario"):
        make_stream("split-digits", "online")
    with pytest.raises(ValueError, match="benchmark"):
        make_stream("split-cifar", "class")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_stream("split-mnist", "class", tmp_path / "missing.npz")
    with pytest.raises(ConfigError, match="strategy"):
        LearnerConfig(strategy="magic")
    with pytest.raises(ConfigError, match="strategies"):
        Config(strategies=("finetune", "ours"))
    with pytest.raises(ConfigError, match="variants"):
        Config(variants=("full", "full"))
    with pytest.raises(ConfigError, match="sleep: steps"):
        LearnerConfig(sleep_steps=0)


def test_cli_reports_bad_input_in_one_line_with_status_2(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    assert main(["run", "replay.continual", "--quick", "--set", "strategies=magic", *out]) == 2
    assert "strategies" in capsys.readouterr().err
    assert main(["run", "replay.continual", "--quick", "--set", "scenario=online", *out]) == 2
    assert main(["run", "replay.continual", "--quick", "--set", "benchmark=split-mnist",
                 "--set", f"data_path={tmp_path / 'none.npz'}", *out]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_old_continual_subcommand_is_gone(capsys):
    with pytest.raises(SystemExit):
        main(["continual", "run"])
    assert "invalid choice" in capsys.readouterr().err


def run_folder(root):
    (folder,) = [p for p in root.iterdir() if p.is_dir()]
    return folder


def test_quick_run_writes_a_complete_run_folder_and_resumes_from_its_jobs(tmp_path, capsys):
    assert main(["run", "replay.continual", "--quick", "--out", str(tmp_path)]) == 0
    folder = run_folder(tmp_path)
    results = json.loads((folder / "results.json").read_text())
    summary = {row["arm"]: row for row in results["tables"]["summary"]}
    assert set(summary) == {"finetune", "replay", "sleep-replay"}
    learned = summary["sleep-replay"]
    assert np.array(learned["accuracy_matrix"]).shape == (5, 5)
    assert learned["buffer_items"] == 40 and learned["buffer_bytes"] > 40 * 64 * 4
    assert learned["sleeps"] == 5
    comparisons = results["tables"]["comparisons"]
    assert [(c["a"], c["b"]) for c in comparisons] == [("finetune", "sleep-replay"),
                                                       ("replay", "sleep-replay")]
    assert set(comparisons[0]) == set(COLUMNS)
    assert (folder / "accuracy_matrices.png").read_bytes()[:4] == b"\x89PNG"
    assert "final average accuracy" in (folder / "report.md").read_text()
    assert len(list((folder / "jobs").glob("*.json"))) == 6
    assert len((folder / "per_seed.csv").read_text().splitlines()) == 7
    # An interrupted run resumes: a lost job is rerun, the others are read back, same numbers.
    lost = sorted((folder / "jobs").glob("*.json"))[0]
    lost.unlink()
    assert main(["run", "--resume", str(folder)]) == 0
    assert lost.exists()
    again = json.loads((folder / "results.json").read_text())
    assert again["tables"]["per_seed"] == [
        {**row, "wall_s": again_row["wall_s"]}
        for row, again_row in zip(results["tables"]["per_seed"], again["tables"]["per_seed"],
                                  strict=True)
    ]


def test_ablation_compares_variants_with_the_full_method(tmp_path):
    status = main(["run", "replay.continual", "--quick", "--set", "variants=full,uniform,no-recombination",
                   "--set", "n_seeds=3", "--out", str(tmp_path)])
    assert status == 0
    results = json.loads((run_folder(tmp_path) / "results.json").read_text())
    rows = results["tables"]["comparisons"]
    assert [r["a"] for r in rows] == ["uniform", "no-recombination"]
    assert all(r["b"] == "full" and r["p_holm"] >= r["p"] for r in rows)


def test_quick_config_is_small_and_the_default_is_the_old_default_command():
    assert QUICK.seeds == (0, 1) and QUICK.learner.iters == 10
    default = Config()
    assert default.seeds == (0, 1, 2, 3, 4) and default.learner.iters == 100
    assert default.learner.hidden == 400 and default.benchmark == "split-digits"
