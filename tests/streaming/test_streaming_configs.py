"""The named configs of the runs reported in docs/eviction, their front page, and a seeded run
that regenerates its results bit for bit."""

from __future__ import annotations

from pathlib import Path

from engram.runs import experiment, resolve, start
from engram.streaming.experiments import design
from engram.streaming.experiments.claims import front_page

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "streaming"
DOCS = ROOT / "docs" / "eviction"


def _config(name: str):
    return resolve("", config_file=CONFIGS / name)[1]


def test_the_main_run_config_is_the_documented_run():
    cfg = _config("eviction-main.toml")
    assert (cfg.steps, cfg.min_seeds, cfg.max_seeds, cfg.variants) == (1000, 9, 9, ())
    assert cfg.conditions == (
        "window", "window_sinks", "matrix", "matrix_ones", "matrix_delta", "association", "knn", "full"
    )
    assert cfg.lr_by_condition["matrix"] == 0.003 and cfg.lr_by_condition["matrix_delta"] == 0.01
    # everything else is the default, as the documented command left it
    assert cfg.task() == design.Config().task() and cfg.test_size == 512


def test_the_variant_study_runs_on_the_same_main_run_and_the_earlier_run_is_the_default():
    assert _config("eviction-variants.toml").main == _config("eviction-main.toml")
    assert _config("eviction-400-steps.toml") == design.Config()


def test_the_eviction_studys_claims_table_is_generated_from_the_recorded_rows():
    # its front page moved into notes.md when the MQAR frontier took README.md
    assert front_page(DOCS / "measured.toml") in (DOCS / "notes.md").read_text()


def test_a_seeded_run_of_a_config_regenerates_its_results_and_figure_bit_for_bit(tmp_path):
    exp, cfg = resolve("", quick=True, config_file=CONFIGS / "eviction-main.toml")
    first, result = start(exp, cfg, tmp_path / "first")
    second, _ = start(experiment("streaming.eviction"), cfg, tmp_path / "second")
    for name in ("accuracy.csv", "tests.csv", "binding.csv", "accuracy_by_condition.png"):
        assert first.file(name).read_bytes() == second.file(name).read_bytes(), name
    # another seed trains other models (model seeds move by 1000 per run seed)
    reseeded = resolve("", quick=True, config_file=CONFIGS / "eviction-main.toml", seed=1)[1]
    _, other = start(exp, reseeded, tmp_path / "other")

    def losses(r):
        return [(m["seed"], m["final_loss"]) for m in r.tables["models"]]

    assert {s for s, _ in losses(other)}.isdisjoint({s for s, _ in losses(result)})
    assert [x for _, x in losses(other)] != [x for _, x in losses(result)]
