"""The ablation as a toolkit experiment: ``engram run lm.ablation``, its tables and claims,
resuming from the job cache, seeded reruns that agree bit for bit, and bad configs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from engram.cli import main
from engram.lm.experiments import ablation
from engram.runs import COLUMNS, RunFolder, experiment, override


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    rng = np.random.default_rng(0)
    path.write_text("".join(rng.choice(["to be ", "or not ", "that is\n", "the question. "], 600)))
    return path


def quick(text: Path, *pairs: str) -> ablation.Config:
    return override(ablation.QUICK, [f"data={text}", "sample_prompt=to be", *pairs])


def test_the_ablation_is_registered_with_a_quick_config():
    exp = experiment("lm.ablation")
    assert exp.config is ablation.Config and exp.quick is ablation.QUICK
    assert dataclasses.is_dataclass(exp.quick) and exp.quick.steps < 10


def test_engram_run_trains_compares_and_resumes_without_training_again(text, tmp_path, capsys):
    argv = ["run", "lm.ablation", "--quick", "--set", f"data={text}", "--set", "sample_prompt=to be",
            "--set", "variants=baseline,place"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "| place against the plain GPT |" in capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    for name in ("results.json", "report.md", "curves.png", "variants.csv", "comparisons.csv",
                 "place-seed0/place_cells.png", "baseline-seed1/checkpoint.pt"):
        assert (run / name).is_file(), name
    results = json.loads((run / "results.json").read_text())
    (comparison,) = results["tables"]["comparisons"]
    assert list(comparison) == list(COLUMNS)
    assert (comparison["a"], comparison["b"], comparison["n_a"]) == ("place", "baseline", 2)
    assert {c["statement"] for c in results["claims"]} >= {
        "The plain GPT's validation loss",
        "place against the plain GPT",
        "Place cells (place) learn their coding level",
    }
    cached = {p: p.stat().st_mtime_ns for p in (run / "jobs").iterdir()}
    checkpoint = (run / "place-seed1" / "checkpoint.pt").stat().st_mtime_ns
    assert len(cached) == 4
    assert main(["run", "--resume", str(run)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (run / "jobs").iterdir()} == cached
    assert (run / "place-seed1" / "checkpoint.pt").stat().st_mtime_ns == checkpoint
    again = json.loads((run / "results.json").read_text())
    assert again["tables"] == results["tables"]


def test_a_seeded_ablation_gives_the_same_numbers_bit_for_bit(text, tmp_path):
    cfg = quick(text, "memory_tokens=300", "variants=baseline", "n_seeds=1")

    def measured(cfg: ablation.Config, name: str) -> tuple:
        result = ablation.run(cfg, RunFolder.create(tmp_path / name, "lm.ablation", {}, cfg.seed))
        (row,) = result.tables["runs"]
        # everything but the wall-clock speed
        return {k: v for k, v in row.items() if k != "tokens_per_second"}, result.tables["knn_lm"]

    first = measured(cfg, "a")
    assert first == measured(cfg, "b")
    assert measured(dataclasses.replace(cfg, seed=5), "c")[0]["val_loss"] != first[0]["val_loss"]


def test_the_knn_memory_is_scored_on_the_first_baseline_only(text, tmp_path):
    cfg = quick(text, "memory_tokens=300", "n_seeds=2")
    jobs = ablation.jobs(cfg, RunFolder(tmp_path))
    with_memory = [(j.config.variant, j.seed) for j in jobs if j.config.memory_tokens]
    assert with_memory == [("baseline", 0)]
    assert [j.config.sample_tokens > 0 for j in jobs] == [True, True, False, False]


def test_the_old_lm_ablate_command_is_gone(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["lm", "ablate"])
    assert exit_.value.code == 2
    assert "invalid choice: 'ablate'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"variants": ("baseline", "cortex")}, "variants: unknown"),
        ({"variants": ("grid",)}, "needs 'baseline'"),
        ({"variants": ("baseline", "grid", "grid")}, "distinct"),
        ({"n_seeds": 0}, "n_seeds: expected a positive integer"),
        ({"memory_lambda": 1.5}, "memory_lambda: expected a value in"),
    ],
)
def test_a_bad_ablation_config_is_a_clear_error(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ablation.QUICK, **changes)


def test_a_bad_override_exits_with_a_one_line_message(capsys):
    assert main(["run", "lm.ablation", "--quick", "--set", "steps=many"]) == 2
    assert "steps: expected int, got 'many'" in capsys.readouterr().err


CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "lm"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("plain_gpt", {"variants": ("baseline",), "seed": 1337, "n_seeds": 1, "steps": 2000}),
        ("ablation_1000", {"variants": tuple(ablation.VARIANTS)[:-1], "n_seeds": 3, "steps": 1000}),
        ("ablation_2000", {"n_seeds": 3, "steps": 2000, "eval_interval": 100}),
        ("knn_lm", {"steps": 1000, "val_tokens": 20000, "memory_tokens": 200_000, "memory_k": 8}),
    ],
)
def test_each_documented_run_has_its_config_and_a_quick_form(name, expected):
    from engram.runs import quick_config, resolve

    exp, cfg = resolve("", config_file=CONFIGS / f"{name}.toml")
    assert exp.name == "lm.ablation" and cfg.model == ablation.Sizes()  # nanoGPT's CPU recipe
    assert {key: getattr(cfg, key) for key in expected} == expected
    _, fast = quick_config(CONFIGS / f"{name}.toml")
    assert fast.steps <= 3 and fast.model.n_embd <= 16 and fast.seed == cfg.seed


def test_the_quick_form_of_a_config_file_runs(data_dir, tmp_path, capsys):
    assert main(["run", "--config", str(CONFIGS / "knn_lm.toml"), "--quick", "--out", str(tmp_path)]) == 0
    assert "An episodic memory of training text" in capsys.readouterr().out
