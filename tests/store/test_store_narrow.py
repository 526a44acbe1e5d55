"""Fused recall over a shortlist (``engram.store.narrow``): the same answers as the full scan when
the shortlist holds every row, the graph neighbours it must bring, filters, batches and HNSW."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from engram.store import HashingEmbedder, MemoryStore, RecallConfig
from engram.store.narrow import rows_of_cue, subgraph
from engram.store.pipeline import FEATURES, Graph

WORDS = ("garden", "dog", "violin", "recipe", "marathon", "novel", "camera", "bakery", "museum", "guitar",
         "river", "puzzle", "bicycle", "painting", "lantern", "harbour", "festival", "orchard", "telescope",
         "ceramic")
SPEAKERS = ("Ada", "Bob", "Cyd")
QUESTIONS = ("What did Ada say about the violin?", "Did Bob bake at the bakery?",
             "Who went to the museum with a camera?", "What happened at the harbour festival?",
             "Cyd talked about a telescope and the orchard", "Where is the ceramic lantern?")


def chat(n: int, seed: int = 0) -> tuple[list[str], list[str], list[int]]:
    """n turns of random chat: (texts, speakers, sessions of 12 turns)."""
    rng = np.random.default_rng(seed)
    texts = [f"I think the {' and the '.join(rng.choice(WORDS, 3, replace=False))} were "
             f"{rng.choice(['great', 'odd', 'new'])}" if i % 3 else
             f"Your {rng.choice(WORDS)} sounds {rng.choice(['fun', 'hard'])}" for i in range(n)]
    return texts, [SPEAKERS[(i // 2) % 3] for i in range(n)], [i // 12 for i in range(n)]


def chat_store(path: Path, n: int = 600, config: RecallConfig | None = None) -> MemoryStore:
    store = MemoryStore(path, embedder=HashingEmbedder(128), durable=False, config=config or RecallConfig())
    texts, who, sessions = chat(n)
    store.add_batch(texts=texts, who=who, sessions=sessions, ids=[f"t{i}" for i in range(n)])
    return store


def answer(result) -> tuple[str, list[str], list[float], list[float]]:
    return (result.status, [e.episode.id for e in result.episodes], [e.score for e in result.episodes],
            [result.trace["features"][f] for f in FEATURES])


def test_a_shortlist_of_every_row_answers_as_the_full_scan(tmp_path):
    full = chat_store(tmp_path / "s", config=RecallConfig(shortlist_above=None))
    narrowed = replace(full.config, shortlist_above=1, shortlist_dense=len(full), shortlist_lexical=len(full))
    for question in QUESTIONS:
        full.config = RecallConfig(shortlist_above=None)
        status, ids, scores, features = answer(full.recall(question, k=10))
        full.config = narrowed
        n_status, n_ids, n_scores, n_features = answer(full.recall(question, k=10))
        assert (n_status, n_ids) == (status, ids), question
        np.testing.assert_allclose(n_scores, scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(n_features, features, rtol=1e-5, atol=1e-6)


def test_a_small_shortlist_keeps_the_full_scans_best_answers(tmp_path):
    store = chat_store(tmp_path / "s", config=RecallConfig(shortlist_above=None))
    small = RecallConfig(shortlist_above=1, shortlist_dense=48, shortlist_lexical=32)
    agree = 0
    for question in QUESTIONS:
        store.config = RecallConfig(shortlist_above=None)
        best = [e.episode.id for e in store.recall(question, k=5).episodes]
        store.config = small
        got = [e.episode.id for e in store.recall(question, k=5).episodes]
        agree += got[0] == best[0]
        assert len(set(got) & set(best)) >= 3, question
    assert agree >= len(QUESTIONS) - 1


def test_the_shortlist_holds_the_dense_lexical_and_graph_rows():
    n = 20
    prev = np.r_[-1, np.arange(n - 1)]
    nxt = np.r_[np.arange(1, n), -1]
    links = sparse.csr_matrix((np.ones(2, np.float32), ([3, 15], [15, 3])), shape=(n, n))
    graph = Graph(prev, nxt, links, np.ones(n))
    lexical = np.zeros(n, np.float32)
    lexical[[9, 12]] = [0.5, 0.9]
    rows = rows_of_cue(np.array([3, 7, -1]), lexical, None, graph, lexical_top=1, graph_top=1, n=n)
    # rows 3, 7 (dense), 12 (the best lexical; 9 is beyond lexical_top), the neighbours of the
    # head of each list (3 and 12, not 7: beyond graph_top), 3's link to 15
    assert rows.tolist() == [2, 3, 4, 7, 11, 12, 13, 15]
    rows = rows[rows != 7]
    sub = subgraph(graph, rows, n)
    assert sub.prev.tolist() == [-1, 0, 1, -1, 3, 4, -1]
    assert sub.next.tolist() == [1, 2, -1, 4, 5, -1, -1]
    assert sub.links[1, 6] == 1.0 and sub.links.nnz == 2


def test_a_turn_found_only_through_its_neighbour_is_still_recalled(tmp_path):
    # The cue finds the first turn of an exchange; its reply shares no word with the cue.
    store = chat_store(tmp_path / "s", n=300)
    store.add_batch(texts=["I finally repaired the old zeppelin engine", "That took you all winter"],
                    who=["Ada", "Bob"], sessions=[999, 999], ids=["q0", "q1"])
    for shortlist_above in (None, 1):
        store.config = RecallConfig(shortlist_above=shortlist_above, shortlist_dense=32, shortlist_lexical=8,
                                    candidates=16)
        ids = [e.episode.id for e in store.recall("zeppelin engine repaired", k=10).episodes]
        assert ids[0] == "q0" and "q1" in ids, shortlist_above


def test_filters_and_batches_hold_on_the_shortlist(tmp_path):
    store = chat_store(tmp_path / "s", config=RecallConfig(shortlist_above=1, shortlist_dense=64))
    for result in store.recall_batch(list(QUESTIONS), k=10, where={"who": ["Bob"]}):
        assert result.episodes and {e.episode.who for e in result.episodes} == {"Bob"}
    batch = store.recall_batch(list(QUESTIONS), k=10)
    for question, together in zip(QUESTIONS, batch, strict=True):
        assert answer(together)[:2] == answer(store.recall(question, k=10))[:2]


def test_the_hnsw_shortlist_finds_what_the_exact_one_finds(tmp_path):
    pytest.importorskip("faiss", reason="the HNSW shortlist needs faiss (pip install faiss-cpu)")
    exact = RecallConfig(shortlist_above=1, shortlist_dense=64, ann_above=None)
    store = chat_store(tmp_path / "s", n=1500, config=exact)
    tops = [answer(store.recall(q, k=3))[1][0] for q in QUESTIONS]
    store.config = replace(exact, ann_above=100, ann_ef=64)  # 16 · ef < n: the graph is searched
    assert [answer(store.recall(q, k=3))[1][0] for q in QUESTIONS] == tops
    assert store._index._hnsw is not None  # the graph was searched, not the scan
