import json

import numpy as np
import pytest

from engram import stats
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
    assert not list(run.path.glob(".*.tmp"))


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


def test_holm_correction_is_more_conservative():
    reject, adjusted = stats.correct([0.01, 0.04, 0.03], method="holm")
    assert adjusted[0] == pytest.approx(0.03)
    assert list(reject) == [True, False, False]


def test_power_analysis_matches_textbook_value():
    assert stats.samples_for_power(0.5) == 64


def test_cohens_h_rejects_non_proportions():
    with pytest.raises(ValueError, match="p1"):
        stats.cohens_h(1.5, 0.2)
