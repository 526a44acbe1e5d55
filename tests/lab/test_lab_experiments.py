"""The lab's experiments, run once at their quick size through `engram run`, checked against
what theory guarantees; then the front page, seeded reruns (bit for bit) and bad input."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from engram.ca3.experiments import EXPERIMENTS
from engram.cli import main
from engram.errors import ConfigError
from engram.runs import experiment, override, resolve, start

LAB = [name for name in EXPERIMENTS if name != "demo"]


def _rows(run: Path, name: str) -> list[dict[str, str]]:
    with open(run / name, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict[str, Path]:
    """Every lab experiment at its quick size, then the front page, in one temporary root."""
    root = tmp_path_factory.mktemp("lab")
    for name in LAB:
        assert main(["run", f"ca3.{name}", "--quick", "--out", str(root / "runs")]) == 0
    runs = {folder.name.split("-")[0].split(".")[1]: folder for folder in (root / "runs").iterdir()}
    docs = root / "docs"
    docs.mkdir()
    (docs / "README.md").write_text("# Lab\n\n<!-- claims:begin -->\nSTALE TABLE\n<!-- claims:end -->\n\n"
                                    "## How it works\n\nhand-written\n")
    status = main(["report", "--front-page", str(docs / "README.md"),
                   *(str(runs[name]) for name in LAB)])
    assert status == 0
    return {**runs, "docs": docs}


def test_every_experiment_writes_a_complete_run_folder(lab):
    for name in LAB:
        run = lab[name]
        for item in ("config.json", "results.json", "report.md", "claims.md", "claims.csv"):
            assert (run / item).is_file(), f"{name} lacks {item}"
        assert list(run.glob("*.png")), f"{name} wrote no plot"
        results = json.loads((run / "results.json").read_text())
        assert results["experiment"] == f"ca3.{name}" and results["claims"]
        for table in results["tables"]:
            assert (run / f"{table}.csv").is_file()
        assert json.loads((run / "config.json").read_text())["name"] == f"ca3.{name}"


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


def test_capacity_cells_are_cached_jobs_one_per_cell_and_seed(lab):
    run = lab["capacity"]
    rows = _rows(run, "per_seed.csv") + _rows(run, "scaling_per_seed.csv")
    assert len(list((run / "jobs").glob("*.json"))) == len(rows)


def test_front_page_lists_every_claim_with_a_verdict_and_its_command(lab):
    page = (lab["docs"] / "README.md").read_text()
    assert "STALE TABLE" not in page and page.endswith("## How it works\n\nhand-written\n")
    table = [line for line in page.splitlines()
             if line.startswith("| ") and not line.startswith("| claim")]
    claims = sum(len(json.loads((lab[n] / "results.json").read_text())["claims"]) for n in LAB)
    assert len(table) == claims >= 15
    for line in table:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert cells[3].startswith(("holds", "does not hold", "measured", "not observed")), line
        assert cells[4].startswith("`engram run ca3.") and cells[4].endswith("--quick`"), line
    for name in ("capacity.png", "noise.png", "journal.png", "validation.png"):
        assert (lab["docs"] / name).read_bytes()[:4] == b"\x89PNG"
    for name in LAB:
        assert f"]({name}.md)" in page and (lab["docs"] / f"{name}.md").is_file()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_capacity_figure_regenerates_bit_for_bit_from_its_config_and_seed(tmp_path):
    first = second = other = None
    for label in ("first", "second", "other"):
        seed = 4 if label == "other" else 3
        status = main(["run", "--config", "configs/ca3/capacity.toml", "--quick", "--seed",
                       str(seed), "--out", str(tmp_path / label)])
        assert status == 0
        (folder,) = (tmp_path / label).iterdir()
        first, second, other = (folder, second, other) if label == "first" else (
            (first, folder, other) if label == "second" else (first, second, folder))
    for name in ("capacity.png", "capacity_sparse.png", "per_seed.csv", "summary.csv", "claims.md"):
        assert _digest(first / name) == _digest(second / name), name
    assert _digest(first / "per_seed.csv") != _digest(other / "per_seed.csv")
    assert _digest(first / "capacity.png") != _digest(other / "capacity.png")


def test_unknown_experiment_is_refused_by_name(capsys):
    with pytest.raises(ConfigError, match=r"experiment: expected one of ca3\.capacity"):
        experiment("ca3.capcity")
    assert main(["run", "ca3.capcity", "--quick"]) == 2
    assert "error: experiment: expected one of" in capsys.readouterr().err


def test_structure_needs_a_square_size_for_the_digits():
    exp = experiment("ca3.structure")
    with pytest.raises(ConfigError, match="n_units: the digits need a square number"):
        override(exp.quick, ["n_units=60", "families=images"])
    with pytest.raises(ConfigError, match="families: expected names from"):
        override(exp.quick, ["families=random,pictures"])


def test_modules_must_divide_the_network(capsys):
    assert main(["run", "ca3.modularity", "--quick", "--set", "modules=1,3"]) == 2
    assert "modules: 3 does not divide n_units=128" in capsys.readouterr().err


def test_structure_reads_mnist_from_a_path(data_dir, tmp_path):
    exp, cfg = resolve("ca3.structure", quick=True, overrides=[
        "families=images", f"mnist_path={data_dir / 'mnist' / 'mnist.npz'}", "loads=0.01",
        "bipolar_rules=hebbian", "n_seeds=1"])
    run, _ = start(exp, cfg, tmp_path)
    rows = _rows(run.path, "per_seed.csv")
    assert {r["n_units"] for r in rows} == {"784"}
