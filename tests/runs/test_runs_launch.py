"""Running registered experiments: the registry, `engram run` with files, seeds and overrides,
resuming a folder without redoing finished jobs, and rebuilding reports."""

from __future__ import annotations

import json

import pytest

from engram.cli import main
from engram.errors import ConfigError
from engram.runs import Claim, Result, experiment, names, resolve, resume, saved, start
from engram.runs.registry import PARTS


def test_the_registry_names_experiments_by_part():
    listed = names()
    assert {"ca3.capacity", "ca3.noise", "ca3.demo"} <= set(listed)
    assert all(name.split(".")[0] in PARTS for name in listed)
    exp = experiment("ca3.noise")
    assert exp.summary.startswith("Noise tolerance") and isinstance(exp.quick, exp.config)


def test_engram_list_prints_every_experiment(capsys):
    assert main(["list", "--describe"]) == 0
    out = capsys.readouterr().out
    assert "ca3.capacity" in out and "Capacity: how many patterns" in out


def test_file_seed_and_overrides_apply_in_that_order(tmp_path):
    path = tmp_path / "noise.toml"
    path.write_text('experiment = "ca3.noise"\n[config]\nbipolar_units = 96\nseed = 1\n'
                    '[quick]\nn_seeds = 1\n')
    _, cfg = resolve("", quick=True, config_file=path, seed=5, overrides=["n_seeds=3"])
    assert (cfg.bipolar_units, cfg.seed, cfg.n_seeds) == (96, 5, 3)
    with pytest.raises(ConfigError, match=r"is a config of ca3\.noise, not ca3\.capacity"):
        resolve("ca3.capacity", config_file=path)


def test_a_bad_override_on_the_command_line_is_one_line(capsys):
    assert main(["run", "ca3.noise", "--quick", "--set", "n_seeds=two"]) == 2
    assert capsys.readouterr().err == "engram run: error: n_seeds: expected int, got 'two'\n"


def test_resume_reads_finished_jobs_and_redoes_only_the_missing(tmp_path):
    exp = experiment("ca3.capacity")
    folder, first = start(exp, exp.quick, tmp_path)
    jobs = sorted((folder.path / "jobs").glob("*.json"))
    kept = {p: p.stat().st_mtime_ns for p in jobs[1:]}
    jobs[0].unlink()
    (folder.path / "results.json").unlink()
    again_folder, again = resume(folder.path)
    assert again_folder.path == folder.path and again == first
    assert jobs[0].is_file() and all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert saved(folder.path) == (exp, exp.quick)
    with pytest.raises(ConfigError, match="differs in n_seeds"):
        resume(folder.path, cfg=resolve("ca3.capacity", quick=True, overrides=["n_seeds=3"])[1])


def test_resume_from_the_command_line(tmp_path, capsys):
    assert main(["run", "ca3.noise", "--quick", "--out", str(tmp_path)]) == 0
    (folder,) = tmp_path.iterdir()
    before = (folder / "per_seed.csv").read_text()
    assert main(["run", "--resume", str(folder), "--workers", "2"]) == 0
    assert (folder / "per_seed.csv").read_text() == before
    # the report still names the command that started the run
    assert json.loads((folder / "results.json").read_text())["command"] == "engram run ca3.noise --quick"
    assert main(["run", "--resume", str(tmp_path / "none")]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_report_rebuilds_the_markdown_from_results_json(tmp_path):
    assert main(["run", "ca3.noise", "--quick", "--seed", "2", "--out", str(tmp_path)]) == 0
    (folder,) = tmp_path.iterdir()
    report = (folder / "report.md").read_text()
    (folder / "report.md").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.md").read_text() == report
    assert "Reproduce: `engram run ca3.noise --quick --seed 2`" in report
    assert json.loads((folder / "results.json").read_text())["command"].endswith("--seed 2")
    assert main(["report", str(tmp_path / "none")]) == 2


def test_results_are_frozen_and_checked():
    claim = Claim("s", "1.0", "1", "holds", "c")
    result = Result((claim,), {"rows": [{"a": 1}]}, ("x.png",))
    with pytest.raises(TypeError):
        result.tables["rows"][0]["a"] = 2
    with pytest.raises(AttributeError):
        result.claims = ()
    with pytest.raises(ValueError, match="PNG file names"):
        Result(figures=("x.svg",))
    with pytest.raises(ValueError, match="the writer's own file"):
        Result(tables={"claims": []})
    with pytest.raises(TypeError, match=r"claims\[0\]: expected a Claim"):
        Result(claims=({"statement": "s"},))


def test_claims_tables_show_details_and_commands_only_when_there_are_some():
    from engram.runs import claims_markdown, front_page_table

    plain = Claim("s", "0.5 [0.4, 0.6]", "0.5", "holds", "N=8")
    header = claims_markdown([plain]).splitlines()[0]
    assert header == "| claim | source | measured | theory / target | verdict | conditions |"
    detailed = Claim("t", "1", "1", "holds", "c", details="N=8: 1; N=16: 1 | more")
    table = claims_markdown([plain, detailed], commands=["engram run a", "engram run b"])
    assert table.splitlines()[0].endswith("| conditions | details | reproduce |")
    assert "N=8: 1; N=16: 1 \\| more" in table and "`engram run b`" in table
    front = front_page_table([detailed], ["engram run b"]).splitlines()
    assert front[0] == "| claim | measured | theory / target | verdict | reproduce |"
    assert front[2] == "| t | 1 | 1 | holds | `engram run b` |"
    with pytest.raises(ValueError, match="one per claim"):
        front_page_table([plain], [])
