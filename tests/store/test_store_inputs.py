"""Inputs the engine must refuse with a clear error rather than store or answer wrongly.

Every public argument check of ``MemoryStore``, ``RecallConfig`` and ``DecayPolicy`` names the
argument first, says what it expected and what came (the wording of scikit-learn's checks).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from engram.cli import main
from engram.store import DecayPolicy, MemoryStore, RecallConfig

DIM = 8


@pytest.fixture
def store(tmp_path):
    with MemoryStore(tmp_path / "s", dim=DIM) as s:
        s.add_batch(np.random.default_rng(0).standard_normal((12, DIM)), ids=[f"e{i}" for i in range(12)])
        yield s


def direction(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("scale", [1e-11, 1.0, 1e17])
def test_embeddings_of_extreme_but_accepted_norm_are_found(store, scale):
    store.add(direction(100) * scale, id="far")
    answer = store.recall(direction(100), k=1)
    assert answer.trace["search"][0]["id"] == "far"
    assert answer.trace["search"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(store.get("far").embedding, (direction(100) * scale).astype(np.float32))


@pytest.mark.parametrize("scale", [0.0, 1e-14, 1e20, 1e30])
def test_embeddings_whose_norm_float32_cannot_normalise_are_refused(store, scale):
    # 1e20 and 1e30: the float32 sum of squares overflows; 1e-14: below the 1e-12 floor, so
    # the stored direction would never reach unit norm and no cue would ever find it.
    with pytest.raises(ValueError, match=r"^embedding: expected a norm in \[1e-12, 1e\+18\], got"):
        store.add(direction(100) * scale)
    with pytest.raises(ValueError, match=r"^embeddings\[1\]: expected a norm"):
        store.add_batch(np.stack([direction(1), direction(2) * scale]))
    with pytest.raises(ValueError, match=r"^cue: expected a norm"):
        store.recall(direction(3) * scale)
    assert len(store) == 12


def test_a_cue_whose_known_part_has_no_usable_norm_is_refused(store):
    cue = np.concatenate([np.full(4, 1e-14), np.ones(4)])
    with pytest.raises(ValueError, match=r"^cue: .*known dimensions"):
        store.recall(cue, known=[True] * 4 + [False] * 4)


@pytest.mark.parametrize("values, came", [
    (np.full(DIM, 1 + 2j), "complex"),
    ([str(x) for x in range(1, DIM + 1)], "strings"),
    ([True] * DIM, "booleans"),
    ([1.0] * (DIM - 1) + [None], "Python objects"),
])
def test_embeddings_that_are_not_real_numbers_are_refused(store, values, came):
    with pytest.raises(TypeError, match=rf"^embedding: expected real numbers, got {came}"):
        store.add(values)
    with pytest.raises(TypeError, match=rf"^cue: expected real numbers, got {came}"):
        store.recall(values)
    assert len(store) == 12


def test_a_number_beyond_float32_is_refused_at_its_index(store):
    with pytest.raises(ValueError, match=r"^embedding: .*index 3"):
        store.add([1.0, 1.0, 1.0, 1e300, 1.0, 1.0, 1.0, 1.0])


def test_get_many_refuses_one_string_instead_of_answering_nothing(store):
    assert set(store.get_many(["e1", "e2", "nope"])) == {"e1", "e2"}
    with pytest.raises(TypeError, match=r"^ids: expected a list of id strings, got the string 'e1'"):
        store.get_many("e1")
    with pytest.raises(TypeError, match=r"^ids\[1\]: expected a string, got int 2"):
        store.get_many(["e1", 2])


# ------------------------------------------------------------------ every argument check

def _new(tmp_path, **kwargs: Any) -> None:
    MemoryStore(tmp_path / "other", dim=DIM, **kwargs).close()


V = [0.5] * DIM
# (argument, bad value, what the message must show of it, the call)
CASES: list[tuple[str, Any, str, Callable[[MemoryStore, Any], Any]]] = [
    ("seed", "x", "'x'", lambda s, t: _new(t, seed="x")),
    ("seed", 1.5, "1.5", lambda s, t: _new(t, seed=1.5)),
    ("seed", True, "True", lambda s, t: _new(t, seed=True)),
    ("durable", "no", "'no'", lambda s, t: _new(t, durable="no")),
    ("config", "fast", "'fast'", lambda s, t: _new(t, config="fast")),
    ("decay", {}, "{}", lambda s, t: _new(t, decay={})),
    ("backend", "sqlite", "'sqlite'", lambda s, t: _new(t, backend="sqlite")),
    ("reward", 1e300, "1e+300", lambda s, t: s.add(V, reward=1e300)),  # sleep's mean would overflow
    ("payloads", 5, "5", lambda s, t: s.add_batch([V, V], payloads=5)),
    ("ids", "ab", "'ab'", lambda s, t: s.add_batch([V, V], ids="ab")),
    ("ids[0]", ["a"], "['a']", lambda s, t: s.add_batch([V, V], ids=[["a"], ["b"]])),
    ("rewards[1]", "x", "'x'", lambda s, t: s.add_batch([V, V], rewards=[0.0, "x"])),
    ("saliences[0]", float("nan"), "nan", lambda s, t: s.add_batch([V, V], saliences=[float("nan"), 0])),
    ("timestamps[1]", "now", "'now'", lambda s, t: s.add_batch([V, V], timestamps=[1.0, "now"])),
    ("unfinished[0]", "yes", "str", lambda s, t: s.add_batch([V, V], unfinished=["yes", False])),
    ("payloads[1]", [1], "list", lambda s, t: s.add_batch([V, V], payloads=[{}, [1]])),
    ("ids[1]", 7, "7", lambda s, t: s.add_batch([V, V], ids=["a", 7])),
    ("known", "yes", "'yes'", lambda s, t: s.recall(V, known="yes")),
    ("known", [2] * DIM, "2", lambda s, t: s.recall(V, known=[2] * DIM)),
    ("k", "5", "'5'", lambda s, t: s.recall(V, k="5")),
    ("now", "x", "'x'", lambda s, t: s.recall(V, now="x")),
    ("ids", 5, "5", lambda s, t: s.delete(5)),
    ("ids", 5, "5", lambda s, t: s.get_many(5)),
    ("id", 5, "5", lambda s, t: s.strength(5)),
    ("now", "x", "'x'", lambda s, t: s.strength("e0", now="x")),
    ("now", "x", "'x'", lambda s, t: s.forget(now="x")),
    ("samples", "x", "'x'", lambda s, t: s.calibrate(samples="x")),
    ("samples", 0, "0", lambda s, t: s.calibrate(samples=0)),
    ("seed", "x", "'x'", lambda s, t: s.calibrate(seed="x")),
    ("kind", "episodes", "'episodes'", lambda s, t: list(s.iter_episodes(kind="episodes"))),
    ("id", 5, "5", lambda s, t: s.links(id=5)),
    ("kind", 5, "5", lambda s, t: s.links(kind=5)),
    ("path", None, "None", lambda s, t: s.export(None)),
    ("embeddings", "no", "'no'", lambda s, t: s.export(t / "out.jsonl", embeddings="no")),
    # RecallConfig
    ("candidates", 0, "0", lambda s, t: RecallConfig(candidates=0)),
    ("beta", "x", "'x'", lambda s, t: RecallConfig(beta="x")),
    ("beta", True, "True", lambda s, t: RecallConfig(beta=True)),
    ("completion_steps", True, "True", lambda s, t: RecallConfig(completion_steps=True)),
    ("separation", "yes", "'yes'", lambda s, t: RecallConfig(separation="yes")),
    ("dg_units", 16.5, "16.5", lambda s, t: RecallConfig(dg_units=16.5)),
    ("dg_units", "x", "'x'", lambda s, t: RecallConfig(dg_units="x")),
    ("dg_sparsity", "x", "'x'", lambda s, t: RecallConfig(dg_sparsity="x")),
    ("dg_threshold", 2.0, "2.0", lambda s, t: RecallConfig(dg_threshold=2.0)),
    ("threshold", "x", "'x'", lambda s, t: RecallConfig(threshold="x")),
    ("strength_weight", -1.0, "-1.0", lambda s, t: RecallConfig(strength_weight=-1.0)),
    ("strength_weight", float("nan"), "nan", lambda s, t: RecallConfig(strength_weight=float("nan"))),
    ("ann_above", "x", "'x'", lambda s, t: RecallConfig(ann_above="x")),
    ("ann_ef", 8, "8", lambda s, t: RecallConfig(ann_ef=8)),
    ("ann_m", 1000, "1000", lambda s, t: RecallConfig(ann_m=1000)),
    ("ann_shortlist", 4, "4", lambda s, t: RecallConfig(ann_shortlist=4)),
    ("half_above", 0, "0", lambda s, t: RecallConfig(half_above=0)),
    ("shortlist_above", 0, "0", lambda s, t: RecallConfig(shortlist_above=0)),
    ("shortlist_dense", 8, "8", lambda s, t: RecallConfig(shortlist_dense=8)),
    ("shortlist_lexical", 0, "0", lambda s, t: RecallConfig(shortlist_lexical=0)),
    ("sketch_dim", True, "True", lambda s, t: RecallConfig(sketch_dim=True)),
    ("sketch_shortlist", 4, "4", lambda s, t: RecallConfig(sketch_shortlist=4)),
    ("min_calibration", -1, "-1", lambda s, t: RecallConfig(min_calibration=-1)),
    ("min_calibration", "x", "'x'", lambda s, t: RecallConfig(min_calibration="x")),
    # DecayPolicy
    ("base_stability", "x", "'x'", lambda s, t: DecayPolicy(base_stability="x")),
    ("base_stability", 0.0, "0.0", lambda s, t: DecayPolicy(base_stability=0.0)),
    ("max_stability", 60.0, "60.0", lambda s, t: DecayPolicy(base_stability=120.0, max_stability=60.0)),
    ("importance_gain", float("inf"), "inf", lambda s, t: DecayPolicy(importance_gain=float("inf"))),
    ("recall_growth", True, "True", lambda s, t: DecayPolicy(recall_growth=True)),
    ("replay_growth", "x", "'x'", lambda s, t: DecayPolicy(replay_growth="x")),
    ("floor", "x", "'x'", lambda s, t: DecayPolicy(floor="x")),
    ("floor", 1.0, "1.0", lambda s, t: DecayPolicy(floor=1.0)),
    ("forget_below", "x", "'x'", lambda s, t: DecayPolicy(forget_below="x")),
]


@pytest.mark.parametrize("name, bad, shown, call", CASES,
                         ids=[f"{i}-{c[0]}={c[1]!r}" for i, c in enumerate(CASES)])
def test_every_argument_error_names_the_argument_and_what_came(store, tmp_path, name, bad, shown, call):
    with pytest.raises((TypeError, ValueError)) as caught:
        call(store, tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{name}: expected "), message
    assert shown in message.split("got", 1)[-1], message


# ------------------------------------------------------------------ the command line

@pytest.mark.parametrize("action", [
    ["stats"], ["recall", "--cue", json.dumps(V)], ["delete", "e0"], ["sleep"],
    ["export", "--out", "OUT"],
])
def test_reading_commands_refuse_a_path_without_a_store(tmp_path, capsys, action):
    typo = tmp_path / "stroe"
    action = [str(tmp_path / "out.jsonl") if a == "OUT" else a for a in action]
    assert main(["store", *action, "--path", str(typo)]) == 2
    assert f"--path: no Engram store at {typo}" in capsys.readouterr().err
    assert not typo.exists()


def test_reading_commands_refuse_a_space_that_does_not_exist(tmp_path, capsys):
    path = str(tmp_path / "s")
    assert main(["store", "add", "--path", path, "--space", "real", "--dim", str(DIM),
                 "--embedding", json.dumps(V)]) == 0
    capsys.readouterr()
    assert main(["store", "stats", "--path", path, "--space", "reel"]) == 2
    assert "--space: no memory space named 'reel'" in capsys.readouterr().err
    assert main(["store", "stats", "--path", path, "--space", "real"]) == 0
    with MemoryStore(path, space="real") as s:
        assert s.backend.spaces() == ["real"]
