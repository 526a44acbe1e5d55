"""MemoryStore: storing, recalling, refusing, forgetting, deleting, isolation and bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engram.store import DecayPolicy, MemoryStore, RecallConfig
from engram.store.decay import DAY

DIM = 32


def clustered(rng: np.random.Generator, n: int, clusters: int = 10, spread: float = 0.6) -> np.ndarray:
    centres = rng.standard_normal((clusters, DIM))
    return (centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, DIM))).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    with MemoryStore(tmp_path / "store", space="main", dim=DIM, durable=False) as s:
        yield s


def test_added_episodes_come_back_exactly_after_reopening(tmp_path, rng):
    vectors = clustered(rng, 50)
    with MemoryStore(tmp_path / "s", dim=DIM) as s:
        ids = s.add_batch(vectors, payloads=[{"n": i} for i in range(50)], rewards=[0.5] * 50,
                          tags=[["a", "b"]] * 50, unfinished=[i % 2 == 0 for i in range(50)])
        one = s.add(vectors[0] * 2, {"text": "single"}, id="custom", salience=1.0)
    with MemoryStore(tmp_path / "s") as s:
        assert len(s) == 51 and s.dim == DIM
        e = s.get(ids[7])
        np.testing.assert_array_equal(e.embedding, vectors[7])
        assert e.payload == {"n": 7} and e.reward == 0.5 and e.tags == ("a", "b") and not e.unfinished
        assert s.get(one).payload == {"text": "single"} and s.get("missing") is None
        assert s.check() == []


def test_partial_noisy_cue_recalls_its_episode_and_novel_cue_is_refused(store, rng):
    vectors = clustered(rng, 300)
    ids = store.add_batch(vectors)
    report = store.calibrate(samples=128, seed=1)
    assert report.accept_stored > 0.6 and report.refuse_novel > 0.8
    hits = 0
    for i in range(20):
        known = rng.random(DIM) < 0.5
        result = store.recall(vectors[i] + 0.1 * rng.standard_normal(DIM), k=3, known=known)
        hits += result.accepted and result.episodes[0].episode.id == ids[i]
        assert result.decided_by in {"search", "completion", "gate"}
    assert hits >= 14
    novel = store.recall(rng.standard_normal(DIM) * 3, k=3)
    assert novel.status == "insufficient_evidence" and novel.decided_by == "gate" and not novel.accepted
    assert len(novel.episodes) == 3, "a refusal still carries its ranked candidates, flagged"
    assert novel.trace["search"], "a refusal still shows what the search found"


def test_empty_space_answers_insufficient_evidence_from_the_search_stage(store, rng):
    result = store.recall(rng.standard_normal(DIM))
    assert result.status == "insufficient_evidence" and result.decided_by == "search"


def test_spaces_of_one_directory_never_see_each_other(tmp_path, rng):
    a = MemoryStore(tmp_path / "s", space="alice", dim=DIM, durable=False)
    b = MemoryStore(tmp_path / "s", space="bob", durable=False)
    vectors = clustered(rng, 80)
    ids = a.add_batch(vectors)
    b.add(rng.standard_normal(DIM), id="bob-only")
    assert len(a) == 80 and len(b) == 1
    assert b.get(ids[0]) is None and a.get("bob-only") is None
    result = b.recall(vectors[0])
    assert all(r.episode.id == "bob-only" for r in result.episodes)
    assert b.delete(ids[:5]) == [] and len(a) == 80
    b.add(vectors[0], id=ids[0])  # the same id may exist in two spaces
    assert a.get(ids[0]).payload == {} and len(b) == 2
    a.close()
    b.close()


def test_delete_is_true_after_compaction(tmp_path, rng):
    path = tmp_path / "s"
    marker = "SECRET-MARKER-7f3a"
    secret = np.full(DIM, 12345.678, dtype=np.float32)
    with MemoryStore(path, dim=DIM) as s:
        s.add_batch(clustered(rng, 40))
        s.add(secret, {"text": marker}, id="gone")
        assert s.delete(["gone", "never-there"]) == ["gone"]
        assert s.get("gone") is None and len(s) == 40
        assert s.recall(secret).episodes[0].episode.id != "gone" if s.recall(secret).accepted else True
        s.compact()
        assert s.check() == [] and len(s) == 40
    raw = b"".join(p.read_bytes() for p in path.rglob("*") if p.is_file())
    assert marker.encode() not in raw
    assert secret[:4].tobytes() not in raw


def test_bad_input_is_a_clear_error_and_loses_nothing(store, rng):
    store.add_batch(clustered(rng, 10))
    with pytest.raises(ValueError, match=r"embedding: expected shape \(32,\)"):
        store.add(np.zeros(DIM + 1))
    with pytest.raises(ValueError, match="NaN"):
        store.add(np.full(DIM, np.nan))
    with pytest.raises(ValueError, match="embeddings: contains NaN"):
        store.add_batch(np.vstack([np.ones((2, DIM)), np.full((1, DIM), np.inf)]))
    with pytest.raises(TypeError, match="embedding"):
        store.add("not a vector")
    with pytest.raises(ValueError, match="payload: expected at most"):
        store.add(np.ones(DIM), {"blob": "x" * 300_000})
    with pytest.raises(TypeError, match="payload: expected a JSON object"):
        store.add(np.ones(DIM), ["list"])
    with pytest.raises(ValueError, match="payload: expected JSON-serialisable"):
        store.add(np.ones(DIM), {"bad": float("nan")})
    with pytest.raises(ValueError, match="already in space"):
        store.add_batch(np.ones((2, DIM)), ids=["x", store.iter_episodes().__next__().id])
    with pytest.raises(ValueError, match="ids: expected unique"):
        store.add_batch(np.ones((2, DIM)), ids=["y", "y"])
    with pytest.raises(ValueError, match="payloads: expected 2 entries"):
        store.add_batch(np.ones((2, DIM)), payloads=[{}])
    with pytest.raises(ValueError, match="known: a cue has no known dimension"):
        store.recall(np.ones(DIM), known=np.zeros(DIM, dtype=bool))
    with pytest.raises(ValueError, match="known: expected shape"):
        store.recall(np.ones(DIM), known=np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match="k: expected a positive integer"):
        store.recall(np.ones(DIM), k=0)
    with pytest.raises(ValueError, match="reward: expected a finite number"):
        store.add(np.ones(DIM), reward=float("inf"))
    with pytest.raises(ValueError, match="space: expected"):
        MemoryStore(store.backend.path, space="../escape")
    with pytest.raises(ValueError, match=r"dim: store .* holds 32-dimensional"):
        MemoryStore(store.backend.path, dim=64)
    assert len(store) == 10 and store.check() == []


def test_decay_is_bounded_inspectable_and_restored_by_recall_when_asked(tmp_path, rng):
    policy = DecayPolicy(base_stability=10 * DAY, floor=0.1, forget_below=0.2)
    old = time.time() - 400 * DAY
    with MemoryStore(tmp_path / "s", dim=DIM, decay=policy, durable=False) as s:
        vectors = clustered(rng, 20)
        ids = s.add_batch(vectors, timestamps=[old] * 19 + [time.time()])
        report = s.strength(ids[0])
        assert report.strength == pytest.approx(0.1, abs=1e-3) and report.forgotten
        assert report.forget_at is not None and report.forget_at < time.time()
        assert any("floor" in reason for reason in report.reasons)
        assert s.strength(ids[-1]).strength > 0.99 and not s.strength(ids[-1]).forgotten
        forgotten = s.forget()
        assert set(forgotten) == set(ids[:19]) and len(s) == 1

    with MemoryStore(tmp_path / "d", dim=DIM, durable=False, decay=DecayPolicy(base_stability=1 * DAY),
                     config=RecallConfig(strengthen_on_recall=True)) as s:
        now = time.time()
        eid = s.add(vectors[0], timestamp=now - 2 * DAY)
        s.add_batch(clustered(rng, 10))
        before = s.strength(eid, now=now)
        assert before.strength < 0.2  # the default never forgets, but strength still decays
        result = s.recall(vectors[0], now=now)
        assert result.episodes[0].episode.id == eid
        after = s.strength(eid, now=now)
        assert after.strength > 0.99 and after.recalls == 1
        assert after.stability_days > before.stability_days  # spacing: a late recall grows stability
        assert s.strength(eid, now=now + 2 * DAY).strength > before.strength


def test_default_policy_never_hides_an_old_store(tmp_path, rng):
    with MemoryStore(tmp_path / "s", dim=DIM, durable=False) as s:
        vectors = clustered(rng, 30)
        ids = s.add_batch(vectors, timestamps=[time.time() - 3650 * DAY] * 30)
        assert s.forget() == []
        result = s.recall(vectors[3])
        assert result.accepted and result.episodes[0].episode.id == ids[3]


def test_sleep_consolidates_idempotently_and_reports(store, rng):
    centres = rng.standard_normal((4, DIM))
    vectors = (centres[np.repeat(np.arange(4), 10)] + 0.2 * rng.standard_normal((40, DIM))).astype(np.float32)
    now = time.time()
    ids = store.add_batch(vectors, timestamps=[now - 100 + i for i in range(40)],
                          rewards=[5.0 if i == 7 else 0.0 for i in range(40)],
                          unfinished=[i == 9 for i in range(40)])
    report = store.sleep(seed=3)
    assert report.replayed == 40 and report.prototypes_created == 4
    assert report.top_priorities[0]["id"] == ids[7]  # the rewarded episode is replayed first
    assert report.links_added["temporal"] == 39 and report.links_added["similar"] > 0
    semantic = list(store.iter_episodes(kind="semantic"))
    assert len(semantic) == 4
    sources = store.links(semantic[0].id, kind="source")
    assert len(sources) == 10 and semantic[0].payload["sources"] == 10
    assert store.get(ids[0]).replays == 1
    again = store.sleep(seed=3)
    assert again.replayed == 0 and again.links_added == {} and again.prototypes_created == 0
    assert len(list(store.iter_episodes(kind="semantic"))) == 4
    store.add(vectors[0] + 0.05, timestamp=now + 1)
    third = store.sleep(seed=3)
    assert third.replayed == 1 and third.prototypes_updated == 1 and third.prototypes_created == 0
    assert store.stats()["sleeps"] == 2


def test_completion_and_separation_stages_run_and_say_so(tmp_path, rng):
    config = RecallConfig(candidates=8, separation=True, dg_units=256, min_calibration=10_000)
    with MemoryStore(tmp_path / "s", dim=DIM, config=config, durable=False) as s:
        vectors = clustered(rng, 60, clusters=3, spread=0.3)
        ids = s.add_batch(vectors)
        decided = set()
        for i in range(10):
            result = s.recall(vectors[i], known=rng.random(DIM) < 0.4)
            decided.add(result.decided_by)
            assert not result.calibrated
            assert result.trace["separation_confidence"] is not None
            if result.accepted:
                assert result.episodes[0].episode.id in ids
                assert result.completion.shape == (DIM,)
        assert decided <= {"search", "completion", "separation", "gate"}


def test_no_completion_is_plain_nearest_neighbour(tmp_path, rng):
    config = RecallConfig(completion_steps=0, min_calibration=10_000)
    with MemoryStore(tmp_path / "s", dim=DIM, config=config, durable=False) as s:
        vectors = clustered(rng, 100)
        ids = s.add_batch(vectors)
        cue = rng.standard_normal(DIM).astype(np.float32)
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        result = s.recall(cue, k=1)
        assert result.trace["search"][0]["id"] == ids[int(np.argmax(unit @ cue))]


def test_sketch_search_agrees_with_the_exact_scan_and_skips_deleted(tmp_path, rng):
    vectors = clustered(rng, 600, clusters=30)
    exact = MemoryStore(tmp_path / "s", dim=DIM, durable=False,
                        config=RecallConfig(completion_steps=0, min_calibration=10**9))
    ids = exact.add_batch(vectors)
    sketch = MemoryStore(tmp_path / "s", dim=DIM, durable=False,
                         config=RecallConfig(completion_steps=0, min_calibration=10**9, sketch_dim=16,
                                             sketch_shortlist=64))
    cues = vectors[:40] + 0.2 * rng.standard_normal((40, DIM)).astype(np.float32)
    known = rng.random((40, DIM)) < 0.5
    a = [r.trace["completion_winner"] for r in exact.recall_batch(cues, known=known)]
    b = [r.trace["completion_winner"] for r in sketch.recall_batch(cues, known=known)]
    assert np.mean(np.array(a) == np.array(b)) >= 0.8  # a 16-dim sketch of 32 dims is approximate
    whole = MemoryStore(tmp_path / "s", durable=False, config=RecallConfig(
        completion_steps=0, min_calibration=10**9, sketch_dim=4, sketch_shortlist=600))
    assert [r.trace["completion_winner"] for r in whole.recall_batch(cues, known=known)] == a
    whole.close()
    sketch.delete(ids[:40])
    after = sketch.recall_batch(vectors[:40], k=5)
    assert not {e["id"] for r in after for e in r.trace["search"]} & set(ids[:40])
    with pytest.raises(ValueError, match="sketch_shortlist"):
        RecallConfig(sketch_dim=8, sketch_shortlist=4)
    exact.close()
    sketch.close()


def test_a_recalibration_by_another_process_is_picked_up(tmp_path, rng):
    server = MemoryStore(tmp_path / "s", dim=DIM, durable=False,
                         config=RecallConfig(min_calibration=10**9))
    server.add_batch(clustered(rng, 100))
    assert not server.recall(rng.standard_normal(DIM)).calibrated
    with MemoryStore(tmp_path / "s", durable=False) as other:
        other.calibrate(samples=64)
    assert server.recall(rng.standard_normal(DIM)).calibrated
    server.close()


def test_completion_is_the_ca3_hopfield_update_with_the_known_dimensions_clamped():
    """The store's numpy completion against engram.ca3's torch ModernHopfield, run cue by cue over
    that cue's valid candidates only (so padding, ragged rows and the clamp are all checked)."""
    import torch

    from engram.ca3 import ModernHopfield
    from engram.store import pipeline

    rng = np.random.default_rng(0)
    b, c, d, steps = 4, 6, 16, 3
    valid = rng.random((b, c)) < 0.8
    valid[:, 0], valid[3] = True, [True] + [False] * (c - 1)  # every cue a candidate; one only one
    patterns = rng.standard_normal((b, c, d)).astype(np.float32)
    patterns /= np.linalg.norm(patterns, axis=2, keepdims=True)
    patterns *= valid[..., None]
    known = rng.random((b, d)) < 0.5
    known[:, 0] = True
    queries = pipeline.masked_cues(rng.standard_normal((b, d)).astype(np.float32), known)
    dots = np.einsum("bcd,bd->bc", patterns, queries)
    hopfield = ModernHopfield(d, beta=6.0)
    states, attention = pipeline._complete(hopfield, patterns, queries, known, valid, steps, dots, False)
    for i in range(b):
        x = torch.from_numpy(patterns[i][valid[i]])
        cue, clamp = torch.from_numpy(queries[i])[None], torch.from_numpy(known[i])[None]
        state = cue
        with torch.no_grad():
            for _ in range(steps):
                state = hopfield(state, x, steps=1)
                state = torch.where(clamp, cue * state.masked_fill(~clamp, 0.0).norm(), state)
            weights = torch.softmax(hopfield.beta * (state @ x.T), dim=-1)[0].numpy()
        np.testing.assert_allclose(states[i], (state / state.norm())[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(attention[i][valid[i]], weights, atol=1e-5)
        assert (attention[i][~valid[i]] == 0).all()
