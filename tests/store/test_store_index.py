"""The dense search's fast first stages (``engram.store.ann``): the fp16 scan gives the float32
scan's answers exactly; the HNSW graph finds the exact top 10, honours deletions and filters, and
its persisted copy is checked against the rows (stale, damaged or compacted files)."""

from __future__ import annotations

import numpy as np
import pytest

from engram.data.episodes import clustered_episodes
from engram.store import MemoryStore, RecallConfig, ann

pytest.importorskip("faiss")

DIM = 32
QUIET = {"min_calibration": 10**9, "gate": False}  # no self-calibration: answers are the search's
EXACT = RecallConfig(ann_above=None, half_above=None, **QUIET)
HALF = RecallConfig(ann_above=None, half_above=100, **QUIET)
GRAPH = RecallConfig(ann_above=500, **QUIET)


def episodes(n: int, seed: int = 0) -> np.ndarray:
    return clustered_episodes(n, DIM, 40, 0.6, 8, np.random.default_rng(seed))[0]


def fill(store: MemoryStore, vectors: np.ndarray, start: int = 0) -> None:
    store.add_batch(vectors, ids=[f"e{start + i}" for i in range(len(vectors))],
                    who=["ada" if (start + i) % 3 == 0 else "ben" for i in range(len(vectors))],
                    timestamps=[float(start + i) for i in range(len(vectors))])


def answers(store: MemoryStore, cues: np.ndarray, k: int = 10, **where) -> list[tuple[list, list]]:
    return [([r.episode.id for r in a.episodes], [r.score for r in a.episodes])
            for a in store.recall_batch(cues, k=k, **where)]


def same_ranking(got: list[tuple[list, list]], want: list[tuple[list, list]]) -> bool:
    """The same ids in the same order, scores to float32 rounding (batches: GEMM vs products)."""
    return [ids for ids, _ in got] == [ids for ids, _ in want] and all(
        np.allclose(g, w, rtol=0, atol=1e-6) for (_, g), (_, w) in zip(got, want, strict=True))


def noisy(vectors: np.ndarray, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (vectors + scale * rng.standard_normal(vectors.shape)).astype(np.float32)


def test_half_scan_gives_the_float32_scans_ranking_and_scores_bit_for_bit(tmp_path):
    """One cue at a time: the same ranking and bit-identical scores; a batch: the same ranking,
    scores to float32 rounding (the float32 scan of a batch is a GEMM, itself not bit-identical
    to one cue's GEMV)."""
    vectors = episodes(3000)
    # Near-duplicates closer than fp16 can tell apart (yet distinct in float32, which orders
    # exactly equal scores arbitrarily): the shortlist must widen to stay exact.
    vectors[1000:1200] = vectors[1000] + 3e-3 * np.random.default_rng(1).standard_normal((200, DIM))
    cues = noisy(np.concatenate([vectors[::150], vectors[1000:1003]]), 0.3, 2)
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=EXACT) as exact:
        fill(exact, vectors)
        exact.delete([f"e{i}" for i in range(0, 3000, 7)])
        want = [answers(exact, cues[i : i + 1]) for i in range(len(cues))]
        want_ada = answers(exact, cues[:4], where={"who": "ada"})
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=HALF) as half:
        got = [answers(half, cues[i : i + 1]) for i in range(len(cues))]
        assert half._index._half is not None  # the fp16 path ran
        batch = answers(half, cues[:4], where={"who": "ada"})
    assert got == want
    assert same_ranking(batch, want_ada)


def test_half_scan_widens_its_shortlist_until_it_is_certified(tmp_path):
    vectors = np.repeat(episodes(20), 300, axis=0) + 1e-5 * np.random.default_rng(3).standard_normal(
        (6000, DIM)).astype(np.float32)
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=HALF) as store:
        fill(store, vectors)
        idx = store._index
        query = idx.view()[:1].copy()
        rows, scores = idx.shortlist(query, None, HALF, exact=True)
        assert rows.shape[1] > 128  # 300 copies score within the fp16 error: 128 rows cannot be certified
        full = idx.view() @ query[0]
        top = np.lexsort((np.arange(len(full)), -full))[:32]
        best = np.lexsort((rows[0], -scores[0]))[:32]
        assert rows[0][best].tolist() == top.tolist()
        assert scores[0][best].tolist() == full[top].tolist()


def test_hnsw_finds_the_exact_top_10(tmp_path):
    vectors = episodes(4000)
    cues = noisy(vectors[::40], 0.3, 4)
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=EXACT) as exact:
        fill(exact, vectors)
        want = answers(exact, cues)
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=GRAPH) as graph:
        got = answers(graph, cues)
        assert graph._index._hnsw is not None
    overlap = np.mean([len(set(g[0]) & set(w[0])) / 10 for g, w in zip(got, want, strict=True)])
    assert overlap >= 0.99
    # The shortlist is rescored exactly: a row found by both has the same score (to float32
    # rounding: a batch's float32 scan is a GEMM, the rescoring one product per row).
    for (g_ids, g_scores), (w_ids, w_scores) in zip(got, want, strict=True):
        same = {i: s for i, s in zip(w_ids, w_scores, strict=True)}
        assert all(abs(same[i] - s) < 1e-6 for i, s in zip(g_ids, g_scores, strict=True) if i in same)


def test_hnsw_never_returns_a_deleted_row_and_applies_filters(tmp_path):
    vectors = episodes(6000)
    gone = {f"e{i}" for i in range(0, 6000, 5)}
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=GRAPH) as store:
        fill(store, vectors)
        store.recall(vectors[0], k=1)  # builds the graph
        store.delete(sorted(gone))
        assert not {i for ids, _ in answers(store, vectors[::25]) for i in ids} & gone
        for who, remainder in (("ada", {0}), ("ben", {1, 2})):
            for ids, _ in answers(store, vectors[1::97], where={"who": who}):  # filtered graph search
                assert len(ids) == 10 and all(int(i[1:]) % 3 in remainder for i in ids)
                assert not set(ids) & gone
        # A filter that keeps a handful of rows is answered exactly over those rows.
        few = answers(store, vectors[:3], since=5980.0)
        with MemoryStore(tmp_path, dim=DIM, durable=False, config=EXACT) as exact:
            assert same_ranking(few, answers(exact, vectors[:3], since=5980.0))
        assert all(int(i[1:]) >= 5980 for ids, _ in few for i in ids)


def test_hnsw_is_persisted_and_reused_after_reopening(tmp_path, monkeypatch):
    vectors = episodes(2000)
    cues = noisy(vectors[::50], 0.2, 5)
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=GRAPH) as store:
        fill(store, vectors)
        first = answers(store, cues)
    assert (tmp_path / "index" / "default.hnsw").is_file()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the graph was rebuilt instead of read")

    monkeypatch.setattr(ann.Hnsw, "__init__", no_rebuild)
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=GRAPH) as store:
        assert answers(store, cues) == first
        assert store._index._hnsw.nodes == 2000


def test_a_stale_graph_gains_every_acknowledged_write_and_loses_every_deletion(tmp_path):
    """The graph file lags the rows (writes acknowledged after its last save, as after a crash):
    on opening, rows it lacks are inserted and rows deleted since are retired."""
    vectors, later = episodes(2000), episodes(300, seed=9)
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=GRAPH) as store:
        fill(store, vectors)
        store.recall(vectors[0], k=1)
    saved = (tmp_path / "index" / "default.hnsw").read_bytes()
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=EXACT) as store:  # no graph in memory
        fill(store, later, start=2000)
        store.delete([f"e{i}" for i in range(0, 100)])
    assert (tmp_path / "index" / "default.hnsw").read_bytes() == saved  # stale now
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=GRAPH) as store:
        for i in range(0, 300, 10):
            assert store.recall(later[i], k=1).episodes[0].episode.id == f"e{2000 + i}"
        found = {r.episode.id for a in store.recall_batch(vectors[:100], k=5) for r in a.episodes}
        assert not found & {f"e{i}" for i in range(100)}
        assert store._index._hnsw.nodes == 2300 and store._index._hnsw.retired == 100


def test_a_damaged_graph_file_is_rebuilt(tmp_path):
    vectors = episodes(2000)
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=GRAPH) as store:
        fill(store, vectors)
        want = store.recall(vectors[7], k=1).episodes[0].episode.id
    path = tmp_path / "index" / "default.hnsw"
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=GRAPH) as store:
        assert ann.Hnsw.load(path, "default", DIM, store._index.seqs) is None  # refused by its checksum
        assert store.recall(vectors[7], k=1).episodes[0].episode.id == want == "e7"
    assert path.read_bytes() != bytes(raw)  # rewritten by the rebuild


def test_compact_leaves_no_deleted_vector_in_the_graph_file(tmp_path):
    vectors = episodes(2000)
    with MemoryStore(tmp_path, dim=DIM, durable=False, config=GRAPH) as store:
        fill(store, vectors)
        store.recall(vectors[0], k=1)
        before = (tmp_path / "index" / "default.hnsw").read_bytes()
        gone = store._index.view()[3].tobytes()
        assert gone in before
        store.delete(["e3"])
        store.compact()
    after = (tmp_path / "index" / "default.hnsw").read_bytes()
    assert gone not in after
    assert store._index.view()[4].tobytes() in after


def test_text_cues_in_a_large_text_space_keep_the_exact_fused_ranking(tmp_path):
    """Lexical, speaker and graph scores need every row's cosine: above ann_above a text cue still
    scans every row, so its answers equal the exact configuration's."""
    from engram.store import HashingEmbedder

    embedder = HashingEmbedder(64)
    words = ("garden", "guitar", "Lisbon", "puppy", "novel", "boat", "recipe", "camera")
    texts = [f"I talked about the {words[i % 8]} and the {words[(i * 3) % 8]} on day {i}"
             for i in range(1200)]
    with MemoryStore(tmp_path, embedder=embedder, durable=False) as store:
        store.add_batch(texts=texts, who=["Ada", "Ben"] * 600, sessions=[i // 10 for i in range(1200)])
    asks = ["What did Ada say about the guitar?", "the boat in Lisbon", "day 17 camera"]
    got = {}
    fast = RecallConfig(ann_above=100, half_above=100, ann_ef=32, ann_shortlist=32, **QUIET)
    for name, config in {"exact": EXACT, "graph": fast}.items():
        with MemoryStore(tmp_path, embedder=embedder, durable=False, config=config) as store:
            got[name] = [([r.episode.id for r in a.episodes], [r.score for r in a.episodes])
                         for a in (store.recall(q, k=10) for q in asks)]
            assert store._index._hnsw is None and store._index._half is None  # no fast stage used
    assert same_ranking(got["graph"], got["exact"])  # scores to 1e-6: decay moves with the clock
