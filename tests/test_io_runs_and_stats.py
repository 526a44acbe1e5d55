import json
import re

import numpy as np
import pytest

from engram import stats
from engram.io import atomic_write_text, number, to_json
from engram.runs import RunFolder, markdown_table


def test_run_folder_writes_config_results_plot_and_report(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = RunFolder.create(tmp_path, "trial", config={"n": 3}, seed=7)
    config = json.loads(run.file("config.json").read_text())
    assert config["seed"] == 7 and config["config"] == {"n": 3}
    assert config["environment"]["packages"]["numpy"] == np.__version__
    run.write_json("results.json", {"x": np.float32(1.5)})
    run.write_csv("rows.csv", [{"a": 1}, {"a": 2, "b": 3}])
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    run.save_figure("plot.png", fig)
    run.write_report("# hi\n")
    assert json.loads(run.file("results.json").read_text()) == {"x": 1.5}
    assert run.file("rows.csv").read_text().splitlines() == ["a,b", "1,", "2,3"]
    assert run.file("plot.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(run.path.glob(".*"))  # no temporary file left behind


def test_markdown_table_renders_rows():
    table = markdown_table([{"a": 1, "b": 0.123456}])
    assert "| a | b |" in table and "0.1235" in table


def test_mean_ci_covers_the_mean():
    ci = stats.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert ci.low < 2.5 < ci.high


def test_proportion_ci_is_wilson():
    ci = stats.proportion_ci(95, 100)
    assert 0.88 < ci.low < 0.9 and 0.97 < ci.high < 0.99


def test_effect_size_and_tests_detect_a_shift():
    gen = np.random.default_rng(0)
    a, b = gen.normal(1.0, 1.0, 40), gen.normal(0.0, 1.0, 40)
    d = stats.cohens_d(a, b)
    assert d.low < d.estimate < d.high and d.estimate > 0.5
    assert stats.welch_test(a, b).p_value < 0.01
    assert stats.permutation_test(a, b, n_resamples=2000).p_value < 0.01


def test_paired_test_is_scipys_on_matched_pairs():
    from scipy import stats as sp

    a, b = np.array([0.50, 0.61, 0.55, 0.70]), np.array([0.48, 0.58, 0.50, 0.69])
    result = stats.paired_test(a, b)
    assert result.test == "paired"
    assert result.p_value == pytest.approx(sp.ttest_rel(a, b).pvalue)
    # the same values unpaired: the seed-to-seed spread hides the shift a pairing reveals
    assert result.p_value < stats.welch_test(a, b).p_value
    with pytest.raises(ValueError, match="b: expected 4 values paired"):
        stats.paired_test(a, b[:3])


def test_holm_correction_is_more_conservative():
    reject, adjusted = stats.correct([0.01, 0.04, 0.03], method="holm")
    assert adjusted[0] == pytest.approx(0.03)
    assert list(reject) == [True, False, False]


def test_power_analysis_matches_textbook_value():
    assert stats.samples_for_power(0.5) == 64


def test_cohens_h_rejects_non_proportions():
    with pytest.raises(ValueError, match="p1"):
        stats.cohens_h(1.5, 0.2)


def test_atomic_write_writes_through_a_symlink_to_its_target(tmp_path):
    target = tmp_path / "data" / "results.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and link.resolve() == target
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]


_KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from engram import io as runs_io
def stall(src, dst):  # the data is written and synced: stop right before the rename
    Path(sys.argv[2]).write_text("ready")
    time.sleep(60)
runs_io.os.replace = stall
runs_io.atomic_write_bytes(sys.argv[1], b"never acknowledged")
"""


def test_a_killed_writers_temp_file_is_recognisable_and_the_next_write_removes_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "state.json"
    path.write_text("acknowledged")
    ready = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path), str(ready)])
    deadline = time.monotonic() + 60
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists(), "the writer never reached its rename"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("state.json", "ready")]
    assert len(leftovers) == 1
    assert re.fullmatch(rf"\.state\.json\.{child.pid}-\w+\.engram-tmp", leftovers[0]), leftovers
    assert path.read_text() == "acknowledged"
    live = tmp_path / f".state.json.{os.getpid()}-inflight.engram-tmp"  # a writer still running
    other = tmp_path / f".state.json.b.{child.pid}-x.engram-tmp"  # the temp file of state.json.b
    live.write_text("")
    other.write_text("")
    atomic_write_text(path, "next")
    assert path.read_text() == "next"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["state.json", "ready", live.name, other.name])


def test_results_json_is_valid_json_with_null_for_numbers_that_are_not_finite(tmp_path):
    def no_constants(name):
        raise AssertionError(f"bare {name} in the JSON")

    run = RunFolder.create(tmp_path, "trial", config={"n": 3}, seed=7)
    values = {"nan": float("nan"), "inf": np.float32("inf"), "row": np.array([1.0, -np.inf, np.nan]),
              "ok": 0.5}
    run.write_json("results.json", values)
    text = run.file("results.json").read_text()
    assert json.loads(text, parse_constant=no_constants) == {
        "nan": None, "inf": None, "row": [1.0, None, None], "ok": 0.5}
    assert json.loads(to_json([float("nan")]), parse_constant=no_constants) == [None]
    assert np.isnan(number(json.loads(text)["nan"])) and number(json.loads(text)["ok"]) == 0.5
