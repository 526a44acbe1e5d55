"""The MQAR frontier experiment: its cells, the state each condition holds, one trained cell,
the quick run's tables and claims, and refused configs."""

from __future__ import annotations

import dataclasses

import pytest

from engram.errors import ConfigError
from engram.runs import experiment, start
from engram.streaming.experiments import mqar
from engram.streaming.experiments.mqar_training import CONDITIONS, train_cell


def test_every_condition_is_one_cell_and_the_recurrent_baselines_see_everything():
    cfg = mqar.Config(n_pairs=(4, 8), lengths=(64, 128), d_models=(16,), n_heads=2)
    cells = cfg.cells()
    assert len(cells) == 2 * len(CONDITIONS)
    by_name = {c.condition: c.model() for c in cells if c.length == 64}
    assert by_name["full"].window is None and by_name["full"].memory == "none"
    assert by_name["window"].window == cfg.window and by_name["window"].memory == "none"
    assert by_name["knn"].memory == "knn" and by_name["matrix"].memory == "matrix"
    for name in ("linear", "delta"):
        assert by_name[name].mixer == name and by_name[name].window is None
    assert all(not m.mlp for m in by_name.values())  # Zoology's models have no MLP
    assert {c.steps for c in cells if c.condition == "full"} == {cfg.full_steps}


def test_one_cell_trains_scores_and_measures_the_state_it_holds():
    base = dataclasses.replace(mqar.QUICK, steps=3, full_steps=3)
    rows = {c.condition: train_cell(c, 0) for c in base.cells()}
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0 and row["steps"] == 3 and len(row["curve"]) == 3
    # bytes after one sequence of 16 tokens: the whole KV cache > a window of 4 + 1 sink;
    # the delta-rule memory adds its matrices to the window; DeltaNet holds matrices only
    state = {name: row["state_bytes"] for name, row in rows.items()}
    assert state["full"] > state["window"]
    d = base.d_models[0]
    assert state["matrix_delta"] == state["window"] + base.n_layers * d * d * 4
    assert state["delta"] == base.n_layers * (d * d * 4 + d * (base.conv_kernel - 1) * 4)
    again = train_cell(base.cells()[0], 0)
    assert again["accuracy"] == rows["full"]["accuracy"] and again["final_loss"] == rows["full"]["final_loss"]


def test_the_quick_run_writes_a_frontier_with_a_claim_per_condition(tmp_path):
    folder, result = start(experiment("streaming.mqar"), mqar.QUICK, tmp_path)
    summary = result.tables["summary"]
    assert {s["condition"] for s in summary} == set(mqar.QUICK.conditions)
    assert all(s["seeds"] == mqar.QUICK.seeds and s["low"] <= s["accuracy"] <= s["high"] for s in summary)
    statements = [c.statement for c in result.claims]
    assert statements[0].startswith("full attention solves")
    assert len(statements) == len(mqar.QUICK.conditions) - 1  # full + every arm against the window
    assert (folder.path / "frontier.png").is_file() and (folder.path / "curves.png").is_file()


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"n_pairs": (4, 8), "lengths": (64,)}, "n_pairs/lengths"),
        ({"conditions": ("full", "matrix")}, "conditions"),
        ({"conditions": ("window", "lstm")}, "conditions"),
        ({"seeds": 1}, "seeds"),
        ({"solve_at": 1.5}, "solve_at"),
    ],
)
def test_unusable_configs_are_refused_by_name(change, name):
    with pytest.raises(ConfigError, match=name):
        dataclasses.replace(mqar.QUICK, **change)


def test_a_task_that_cannot_be_built_is_refused_when_the_config_is_made():
    with pytest.raises(ValueError, match="n_pairs"):
        dataclasses.replace(mqar.QUICK, n_pairs=(8,), lengths=(16,))
