"""The lab's quick modes, run once through ``engram lab all --quick``, checked against what
theory guarantees; plus reruns, the front page and bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from engram.ca3.experiments import lab as lab_cli
from engram.ca3.experiments.report import SHARED_MACHINE
from engram.cli import main


def _rows(run: Path, name: str) -> list[dict[str, str]]:
    with open(run / name, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict[str, Path]:
    """Every experiment at its quick size, with the front page, into one temporary root."""
    root = tmp_path_factory.mktemp("lab")
    status = main(["lab", "all", "--quick", "--out", str(root / "runs"), "--docs", str(root / "docs")])
    assert status == 0
    runs = {}
    for folder in (root / "runs").iterdir():
        runs[folder.name.split("-")[1]] = folder
    runs["docs"] = root / "docs"
    return runs


def test_every_experiment_writes_a_complete_run_folder(lab):
    for name in lab_cli.EXPERIMENTS:
        run = lab[name]
        for item in ("config.json", "results.json", "report.md"):
            assert (run / item).is_file(), f"{name} lacks {item}"
        assert list(run.glob("*.png")), f"{name} wrote no plot"
        assert list(run.glob("*.csv")), f"{name} wrote no CSV"


def test_async_energy_never_rises(lab):
    rows = [r for r in _rows(lab["dynamics"], "per_seed.csv") if r["update"] == "async"]
    assert rows and sum(int(r["steps"]) for r in rows) > 0
    assert all(int(r["rises"]) == 0 for r in rows)


def test_patterns_far_below_capacity_are_fixed_points(lab):
    rows = _rows(lab["capacity"], "per_seed.csv")
    low = [r for r in rows if r["code"] == "bipolar" and float(r["alpha"]) <= 0.05]
    assert low and all(float(r["fixed_point"]) == 1.0 for r in low)
    assert all(float(r["recall"]) == 1.0 for r in low)


def test_recall_collapses_well_above_alpha_c_for_random_patterns(lab):
    rows = _rows(lab["capacity"], "per_seed.csv")
    high = [r for r in rows if r["code"] == "bipolar" and r["rule"] == "hebbian"
            and float(r["alpha"]) >= 0.25]
    assert high and all(float(r["recall"]) < 0.2 for r in high)
    # while a lookup over the same stored patterns still finds almost every target
    assert all(float(r["nn_recall"]) > 0.9 for r in high)


def test_front_page_lists_every_claim_with_an_interval_and_a_verdict(lab):
    page = (lab["docs"] / "README.md").read_text()
    assert SHARED_MACHINE in page
    table = [line for line in page.splitlines()
             if line.startswith("| ") and "[" in line and not line.startswith("| claim")]
    assert len(table) >= 15
    for line in table:
        verdict = line.rstrip(" |").rsplit("| ", 1)[-1]
        assert verdict.startswith(("holds", "does not hold", "measured", "not observed")), line
    for name in ("capacity.png", "noise.png", "journal.png", "validation.png"):
        assert (lab["docs"] / name).is_file()
    for name in lab_cli.EXPERIMENTS:
        assert f"]({name}.md)" in page and (lab["docs"] / f"{name}.md").is_file()


def test_rerun_with_the_same_seed_gives_the_same_numbers(tmp_path):
    cfg = lab_cli.config_for("noise", quick=True, seed=3)
    first, _ = lab_cli.run_one("noise", cfg, tmp_path / "a")
    second, _ = lab_cli.run_one("noise", cfg, tmp_path / "b")
    assert (first.path / "per_seed.csv").read_text() == (second.path / "per_seed.csv").read_text()
    other, _ = lab_cli.run_one("noise", lab_cli.config_for("noise", quick=True, seed=4), tmp_path)
    assert (other.path / "per_seed.csv").read_text() != (first.path / "per_seed.csv").read_text()


def test_unknown_experiment_is_refused_by_name():
    with pytest.raises(ValueError, match="name: expected one of"):
        lab_cli.config_for("capcity")


def test_structure_needs_a_square_size_for_the_digits(tmp_path):
    cfg = lab_cli.config_for("structure", quick=True, n_units=60, families=("images",))
    with pytest.raises(ValueError, match="n_units"):
        lab_cli.run_one("structure", cfg, tmp_path)


def test_structure_reads_mnist_from_a_path(data_dir, tmp_path):
    cfg = lab_cli.config_for("structure", quick=True, families=("images",),
                             mnist_path=str(data_dir / "mnist" / "mnist.npz"), loads=(0.01,),
                             bipolar_rules=("hebbian",), n_seeds=1)
    run, _ = lab_cli.run_one("structure", cfg, tmp_path)
    rows = _rows(run.path, "per_seed.csv")
    assert {r["n_units"] for r in rows} == {"784"}
