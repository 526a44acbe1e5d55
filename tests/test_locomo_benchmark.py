"""benchmarks/store_locomo.py end to end on two small LoCoMo excerpts with the real MiniLM model."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from engram.store import GateModel, RecallConfig
from engram.store.gate import FEATURES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "store_locomo.py"
SESSIONS = 3


def _excerpt(source: Path, target: Path) -> None:
    """The first sessions of a conversation and the questions whose evidence lies in them."""
    record = json.loads(source.read_text())
    kept = {k: v for k, v in record.items()
            if not (m := re.fullmatch(r"session_(\d+)(_date_time)?", k)) or int(m[1]) <= SESSIONS}
    kept["qa"] = [q for q in record["qa"] if q["evidence"] and all(
        re.fullmatch(rf"D[1-{SESSIONS}]:\d+", e) for e in q["evidence"])]
    target.write_text(json.dumps(kept))


@pytest.fixture(scope="module")
def script():
    """The benchmark script as a module (registered while loaded: dataclasses look it up)."""
    spec = importlib.util.spec_from_file_location("store_locomo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    patch = pytest.MonkeyPatch()
    patch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    yield module
    patch.undo()


def test_rank_fusion_rewards_agreement_between_rankings(script):
    # turn 1 is second in both rankings; 0 and 4 are first in one and last in the other
    fused = script.fused_ranking(np.array([0, 1, 2, 3, 4]), np.array([4, 1, 2, 3, 0]))
    assert fused[0] == 1 and set(fused[1:3]) == {0, 4}


def test_recall_and_hit_count_evidence_turns_in_the_top_k(script):
    ranked = ["D1:1", "D1:2", "D1:3"]
    assert script.recall_at(ranked, ("D1:2", "D9:9"), 1) == 0.0
    assert script.recall_at(ranked, ("D1:2", "D9:9"), 2) == 0.5
    assert script.hit_at(ranked, ("D1:3",), 2) == 0.0 and script.hit_at(ranked, ("D1:3",), 3) == 1.0


def test_gate_label_is_one_only_for_an_answerable_question_answered_by_its_evidence(script):
    vector = np.zeros(2)
    answerable = script.Question(0, 4, ("D1:1",), "q", vector)
    adversarial = script.Question(0, 5, ("D1:1",), "q", vector)
    assert script.gate_label(answerable, script.Answer(["D1:1", "D1:2"])) == 1
    assert script.gate_label(answerable, script.Answer(["D1:2", "D1:1"])) == 0
    assert script.gate_label(adversarial, script.Answer(["D1:1"])) == 0
    assert script.gate_label(answerable, script.Answer([])) == 0


@pytest.fixture(scope="module")
def benchmark(script, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    model = data_dir / "models" / "all-MiniLM-L6-v2"
    if not (data_dir / "locomo").is_dir() or not model.is_dir():
        pytest.skip(f"LoCoMo or all-MiniLM-L6-v2 is absent from {data_dir}")
    root = tmp_path_factory.mktemp("locomo")
    (root / "data").mkdir()
    for name in ("conv-26", "conv-30"):
        _excerpt(data_dir / "locomo" / f"{name}.json", root / "data" / f"{name}.json")
    results = script.main([
        "--data", str(root / "data"), "--model", str(model), "--json", str(root / "out.json"),
        "--run-dir", str(root / "runs"), "--latency-episodes", "300", "--latency-queries", "20",
        "--bootstrap", "200", "--fit-default", str(root / "gate.json"),
    ])
    return results, root / "out.json", root


def test_json_has_the_issue_keys_with_shares_in_range(benchmark):
    results, path, _ = benchmark
    assert json.loads(path.read_text())["recall_at_10"] == results["recall_at_10"]
    shares = ["recall_at_10", "recall_at_1", "answerable_accepted", "answerable_retrieved_accepted",
              "adversarial_refused", "novel_refused", "auroc_adversarial", "ece"]
    for key in shares:
        assert 0.0 <= results[key] <= 1.0, key
    assert results["recall_at_1"] <= results["recall_at_5"] <= results["recall_at_10"]
    assert set(results["by_category"]) == {"1", "2", "3", "4"}
    assert results["latency_p50_ms"] > 0 and results["baseline_ratio_p50"] > 0
    assert results["latency"]["at_scale"]["episodes"] == 300
    assert results["questions"]["answerable"] > 0 and results["questions"]["novel"] > 0


def test_baselines_and_every_stage_switch_are_reported(script, benchmark):
    results, _, _ = benchmark
    assert set(results["baselines"]) == {"cosine", "bm25", "fusion"}
    for figures in results["baselines"].values():
        assert 0.0 <= figures["recall_at_1"] <= figures["recall_at_10"] <= 1.0
    stages = [f.name for f in dataclasses.fields(RecallConfig) if isinstance(f.default, bool)
              and f.name not in ("embed_speaker", "strengthen_on_recall")]
    switched = {name.split()[-1][1:] for name in results["ablations"] if name != script.SLEPT}
    assert switched == set(stages)
    assert 0.0 <= results["ablations"][script.SLEPT]["recall_at_10"] <= 1.0
    # with the gate off every answer is accepted; the same rankings as the full engine
    assert results["ablations"]["engine -gate"]["answerable_accepted"] == 1.0
    assert results["ablations"]["engine -gate"]["recall_at_10"] == results["recall_at_10"]
    interval = results["vs_best_baseline"]["recall_at_10"]
    assert interval["low"] <= interval["difference"] <= interval["high"]
    assert interval["baseline"] in results["baselines"]


def test_gates_are_labelled_apart_and_the_fitted_default_loads(benchmark):
    results, _, root = benchmark
    crossed = results["cross_fitted"]
    assert [f["held_out"] for f in crossed["folds"]] == ["conv-26", "conv-30"]
    assert 0.0 <= crossed["ece"] <= 1.0
    points = crossed["operating_points"]
    accepted = [p["answerable_accepted"] for p in points]
    refused = [p["adversarial_refused"] for p in points]
    assert accepted == sorted(accepted, reverse=True) and refused == sorted(refused)
    shipped = json.loads((root / "gate.json").read_text())
    gate = GateModel.from_state(shipped)
    assert gate.calibrated and gate.features == FEATURES
    assert [f["conversation"] for f in shipped["fitted_on"]] == ["conv-26", "conv-30"]


def test_run_folder_holds_report_tables_and_plots(benchmark):
    _, _, root = benchmark
    (run,) = (root / "runs").glob("store_locomo-*")
    for name in ("config.json", "results.json", "systems.csv", "refusal.csv", "per_conversation.csv",
                 "reliability.png", "recall_by_category.png", "default_gate.json", "report.md"):
        assert (run / name).is_file(), name
    assert "## Refusal" in (run / "report.md").read_text()
