"""The README's main job: `engram demo` writes its run folder and picture."""

import json

from engram.cli import main


def test_engram_demo_writes_run_folder_and_picture(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    (folder,) = tmp_path.iterdir()
    assert f"Run folder: {folder}" in printed
    for name in ("config.json", "results.json", "claims.csv", "digits.png", "report.md"):
        assert (folder / name).is_file(), name
    assert (folder / "digits.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((folder / "results.json").read_text())
    assert json.loads((folder / "config.json").read_text())["seed"] == 3
    assert results["experiment"] == "ca3.demo" and results["command"] == "engram demo --seed 3"
    assert results["claims"][0]["statement"] == "converges within 7 iterations"
    digits = {row["measure"]: row["value"] for row in results["tables"]["digits"]}
    # correlated digit prototypes: the pseudo-inverse rule completes them, Hebbian cannot
    assert digits["flipped_recalled_pseudoinverse"] >= 0.95
    assert digits["flipped_recalled_hebbian"] < 0.5
    assert digits["random_rejected"] >= 0.95
    report = (folder / "report.md").read_text()
    assert "## Claims" in report and "converges within 7 iterations" in report


def test_cli_reports_bad_arguments_without_a_traceback(tmp_path, capsys):
    assert main(["demo", "--seed", "-1", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("engram demo: error: seed: expected a non-negative")
    assert not list(tmp_path.iterdir())
