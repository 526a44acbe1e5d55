"""`engram continual`: streams, metrics, the run folder, and clear errors for bad input."""

import json

import numpy as np
import pytest
import torch

from engram.cli import main
from engram.data.streams import make_stream
from engram.replay.experiments.continual import summarize
from engram.replay.experiments.continual_train import LearnerConfig


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    with pytest.raises(ValueError, match="strategy"):
        LearnerConfig(strategy="magic")


def test_cli_reports_bad_input_with_status_2(tmp_path, capsys):
    assert main(["continual", "--strategies", "magic", "--out", str(tmp_path)]) == 2
    assert "strategy" in capsys.readouterr().err
    assert main(["continual", "--scenario", "online", "--out", str(tmp_path)]) == 2
    assert main(["continual", "--benchmark", "split-mnist", "--data",
                 str(tmp_path / "none.npz"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_run_writes_a_complete_run_folder(tmp_path):
    status = main(["continual", "run", "--strategies", "finetune,sleep-replay", "--seeds", "0-1",
                   "--iters", "15", "--buffer", "50", "--sleep-steps", "10", "--hidden", "32",
                   "--out", str(tmp_path)])
    assert status == 0
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert set(results["arms"]) == {"finetune", "sleep-replay"}
    learned = results["arms"]["sleep-replay"]
    assert np.array(learned["accuracy_matrix"]).shape == (5, 5)
    assert learned["buffer_items"] == 50 and learned["buffer_bytes"] > 50 * 64 * 4
    assert (folder / "accuracy_matrices.png").read_bytes()[:4] == b"\x89PNG"
    assert "final acc" in (folder / "report.md").read_text()
    assert len((folder / "partial.jsonl").read_text().splitlines()) == 4
    assert len((folder / "per_seed.csv").read_text().splitlines()) == 5


def test_cli_ablate_compares_variants_with_corrected_p_values(tmp_path):
    status = main(["continual", "ablate", "--variants", "full,uniform,no-recombination",
                   "--seeds", "0-2", "--iters", "10", "--buffer", "40", "--sleep-steps", "5",
                   "--hidden", "16", "--out", str(tmp_path)])
    assert status == 0
    (folder,) = tmp_path.iterdir()
    rows = json.loads((folder / "results.json").read_text())["contrasts"]
    assert [r["variant"] for r in rows] == ["uniform", "no-recombination"]
    assert all(r["p_holm"] >= r["p"] for r in rows)
