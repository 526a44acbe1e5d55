"""The conformance suite: every storage backend (SQLite, PostgreSQL + pgvector, in-memory) behaves
the same through ``MemoryStore`` and through the ``StorageBackend`` interface."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engram.store import DecayPolicy, HashingEmbedder, MemoryStore, RecallConfig, SQLiteBackend
from engram.store.backend import Episode, Link, StorageBackend
from engram.store.backends import MemoryBackend, open_backend
from engram.store.decay import DAY

DIM = 8
BACKENDS = ("sqlite", "postgres", "memory")


@dataclasses.dataclass
class Target:
    """Where one test's store lives, and how to open it again."""

    kind: str
    location: str | Path
    shared: MemoryBackend | None = None  # the memory backend's one object ("reopening" reuses it)

    def backend(self, dim: int | None = DIM) -> StorageBackend:
        if self.kind == "memory":
            if self.shared is None:
                self.shared = MemoryBackend(dim)
            return self.shared
        return open_backend(self.location, dim=dim)

    def store(self, space: str = "default", dim: int | None = DIM, **options: Any) -> MemoryStore:
        if "embedder" in options:
            dim = options["embedder"].dim
        if self.kind == "memory":
            return MemoryStore("unused", space=space, backend=self.backend(dim), **options)
        return MemoryStore(self.location, space=space, dim=dim, **options)


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "postgres":
        return Target("postgres", request.getfixturevalue("postgres_url"))
    return Target(request.param, tmp_path / "store")


def clustered(n: int, seed: int = 0, clusters: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    return (centres[np.arange(n) % clusters] + 0.25 * rng.standard_normal((n, DIM))).astype(np.float32)


# ---------------------------------------------------------------- selection


def test_a_url_selects_postgresql_and_a_path_selects_sqlite(tmp_path, postgres_url):
    from engram.store.backends.postgres import PostgresBackend

    with MemoryStore(postgres_url, dim=DIM) as store:
        assert isinstance(store.backend, PostgresBackend)
    with MemoryStore(tmp_path / "s", dim=DIM) as store:
        assert isinstance(store.backend, SQLiteBackend)
    with MemoryStore(str(tmp_path / "t"), dim=DIM) as store:
        assert isinstance(store.backend, SQLiteBackend)
    with pytest.raises(TypeError, match="path: expected a store directory or a postgresql:// URL"):
        MemoryStore(42, dim=DIM)


# ---------------------------------------------------------------- episodes


def test_added_episodes_come_back_exactly_and_are_recalled(target):
    vectors = clustered(40)
    with target.store() as store:
        ids = store.add_batch(vectors, payloads=[{"i": i, "nested": {"x": [i, None]}} for i in range(40)],
                              tags=[("odd",) if i % 2 else () for i in range(40)],
                              rewards=[float(i) for i in range(40)],
                              timestamps=[1000.0 + i for i in range(40)])
        one = store.add(vectors[0] * 2, {"single": True}, id="custom-id", salience=0.5, unfinished=True)
        assert one == "custom-id" and len(store) == 41
        got = store.get(ids[7])
        np.testing.assert_array_equal(got.embedding, vectors[7])
        assert got.payload == {"i": 7, "nested": {"x": [7, None]}} and got.tags == ("odd",)
        assert got.reward == 7.0 and got.timestamp == 1007.0 and got.kind == "episode"
        custom = store.get("custom-id")
        assert custom.salience == 0.5 and custom.unfinished and custom.payload == {"single": True}
        assert store.get("absent") is None and "absent" not in store and ids[3] in store
        assert set(store.get_many([ids[1], "absent", ids[2]])) == {ids[1], ids[2]}
        assert [e.id for e in store.iter_episodes()] == [*ids, "custom-id"]  # insertion order
        answer = store.recall(vectors[11], k=3)
        assert answer.episodes[0].episode.id == ids[11]


def test_a_batch_is_all_or_nothing_and_a_taken_id_is_refused(target):
    with target.store() as store:
        store.add(np.ones(DIM), id="a")
        with pytest.raises(ValueError, match="id: an episode with id 'a' is already in space"):
            store.add_batch(np.ones((3, DIM)), ids=["b", "a", "c"])
        with pytest.raises(ValueError, match="payload"):
            store.add_batch(np.ones((2, DIM)), payloads=[{"ok": 1}, {"bad": float("nan")}], ids=["d", "e"])
        assert len(store) == 1 and store.get("b") is None and store.get("d") is None


def test_delete_is_true_deletion_of_rows_text_and_links(target):
    embedder = HashingEmbedder(64)
    with target.store(embedder=embedder) as store:
        ids = store.add_batch(texts=["the heron nests by the river", "a kestrel hovers over the field",
                                     "the heron catches a fish"],
                              who=["Ada", "Ada", "Bo"], sessions=[1, 1, 2])
        store.backend.add_links(store.space, [Link(ids[0], ids[2], "similar", 0.9)])
        assert store.search_text("heron")
        removed = store.delete([ids[0], "absent"])
        assert removed == [ids[0]] and store.get(ids[0]) is None and len(store) == 2
        assert store.links(ids[0]) == [] and store.links(ids[2]) == []
        assert [e.id for e, _ in store.search_text("heron")] == [ids[2]]
        assert store.compact() == {store.space: 1}
        assert store.compact() == {store.space: 0}
        assert store.check() == [] and store.repair() == []
        assert store.recall("heron by the river", k=2).episodes[0].episode.id != ids[0]


def test_spaces_never_see_each_other(target):
    with target.store("a") as a, target.store("b") as b:
        a.add(np.ones(DIM), {"who": "a"}, id="same")
        b.add(-np.ones(DIM), {"who": "b"}, id="same")
        assert a.get("same").payload == {"who": "a"} and b.get("same").payload == {"who": "b"}
        a.delete(["same"])
        assert b.get("same") is not None and len(a) == 0 and len(b) == 1
        assert set(a.backend.spaces()) >= {"a", "b"}
        with pytest.raises(ValueError, match="only in case"):
            target.store("A")


def test_state_updates_are_atomic_under_concurrent_writers(target):
    """Keys, calibration and sleep progress live in the space's state: concurrent read-modify-write
    (a key rotation in each of four threads, each on its own connection) loses none."""
    target.store().close()
    backends = [target.backend() for _ in range(4)]

    def rotate(backend: StorageBackend, t: int) -> None:
        for i in range(10):
            backend.update_state_with(
                "default", lambda s, t=t, i=i: {"keys": [*s.get("keys", []), f"{t}-{i}"]})

    threads = [threading.Thread(target=rotate, args=(b, t)) for t, b in enumerate(backends)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(backends[0].get_state("default")["keys"]) == sorted(f"{t}-{i}" for t in range(4)
                                                                     for i in range(10))
    backends[0].update_state("default", {"keys": None, "gate": {"w": 1}})
    assert backends[1].get_state("default") == {"gate": {"w": 1}}
    for backend in backends:
        backend.close()


# ---------------------------------------------------------------- text, filters and search


def test_filters_and_lexical_search_agree_across_backends(target):
    embedder = HashingEmbedder(64)
    now = time.time()
    with target.store(embedder=embedder) as store:
        ids = store.add_batch(
            texts=["I am researching adoption agencies", "We went camping by the lake",
                   "The adoption agency called back today", "Painting a sunrise over the lake"],
            who=["Caroline", "Melanie", "Caroline", "Melanie"], sessions=[1, 1, 2, "s3"],
            tags=[["family"], ["trip"], ["family", "news"], []],
            timestamps=[now - 300, now - 200, now - 100, now])
        fields = store.get(ids[3])
        assert (fields.text, fields.who, fields.session) == (
            "Painting a sunrise over the lake", "Melanie", "s3")
        assert store.get(ids[0]).session == 1
        hits = store.recall("adoption", k=4, where={"who": "Caroline"}).episodes
        assert {h.episode.id for h in hits} == {ids[0], ids[2]}
        def found(cue: str, **filters: Any) -> set[str]:
            return {h.episode.id for h in store.recall(cue, k=4, **filters).episodes}

        assert found("lake", where={"tags": ["trip"]}) == {ids[1]}
        assert found("lake", where={"session": "s3"}) == {ids[3]}
        assert found("adoption", since=now - 150) <= {ids[2], ids[3]}
        assert found("adoption", until=now - 250) == {ids[0]}
        hits = store.search_text("adoption agencies")  # stemmed: "agency" and "agencies" meet
        assert {e.id for e, _ in hits} == {ids[0], ids[2]} and all(score > 0 for _, score in hits)
        assert [e.id for e, _ in store.search_text("camping lake")] == [ids[1]]  # every word must match
        assert store.search_text("volcano") == []


def test_nearest_returns_the_exact_top_k(target):
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((300, DIM)).astype(np.float32)
    with target.store() as store:
        ids = store.add_batch(vectors)
        for q in rng.standard_normal((5, DIM)).astype(np.float32):
            unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            cosines = unit @ (q / np.linalg.norm(q))
            exact = [ids[i] for i in np.argsort(-cosines)[:5]]
            hits = store.backend.nearest(store.space, q, 5)
            assert [h for h, _ in hits] == exact
            np.testing.assert_allclose([c for _, c in hits], np.sort(cosines)[::-1][:5], atol=1e-5)


def test_a_small_space_beside_a_large_one_still_gets_k_neighbours(target):
    with target.store("big") as big, target.store("small") as small:
        big.add_batch(clustered(400, seed=1))
        ids = small.add_batch(clustered(6, seed=2))
        hits = small.backend.nearest("small", clustered(1, seed=3)[0], 6)
        assert sorted(h for h, _ in hits) == sorted(ids)


# ---------------------------------------------------------------- decay, sleep, other processes


def test_decay_and_recall_strengthening_are_stored(target):
    policy = DecayPolicy(base_stability=1 * DAY)
    config = RecallConfig(strengthen_on_recall=True)
    now = time.time()
    with target.store(decay=policy, config=config) as store:
        vectors = clustered(12)
        eid = store.add(vectors[0], timestamp=now - 2 * DAY)
        store.add_batch(vectors[1:])
        before = store.strength(eid, now=now)
        assert store.recall(vectors[0], now=now).episodes[0].episode.id == eid
    with target.store(decay=policy, config=config) as store:
        after = store.strength(eid, now=now)
        assert after.recalls == 1 and after.stability_days > before.stability_days
        assert store.get(eid).recalls == 1
    forgetful = DecayPolicy(base_stability=10 * DAY, floor=0.1, forget_below=0.2)
    with target.store("old", decay=forgetful) as store:
        ids = store.add_batch(clustered(5), timestamps=[now - 400 * DAY] * 4 + [now])
        assert set(store.forget()) == set(ids[:4]) and len(store) == 1


def test_sleep_consolidates_idempotently_and_resumes_state(target):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, DIM))
    vectors = (centres[np.repeat(np.arange(4), 10)] + 0.2 * rng.standard_normal((40, DIM))).astype(np.float32)
    now = time.time()
    with target.store() as store:
        ids = store.add_batch(vectors, timestamps=[now - 100 + i for i in range(40)],
                              rewards=[5.0 if i == 7 else 0.0 for i in range(40)])
        report = store.sleep(seed=3)
        assert report.replayed == 40 and report.prototypes_created == 4
        assert report.top_priorities[0]["id"] == ids[7]
        assert report.links_added["temporal"] == 39
        semantic = list(store.iter_episodes(kind="semantic"))
        assert len(semantic) == 4 and len(store.links(semantic[0].id, kind="source")) == 10
        assert store.get(ids[0]).replays == 1
        again = store.sleep(seed=3)
        assert again.replayed == 0 and again.prototypes_created == 0
        store.add(vectors[0] + 0.05, timestamp=now + 1)
        third = store.sleep(seed=3)
        assert third.replayed == 1 and third.prototypes_updated == 1
    with target.store() as store:
        assert store.stats()["sleeps"] == 2 and len(list(store.iter_episodes(kind="semantic"))) == 4
        assert store.check() == []


def test_reopening_finds_everything_and_another_store_sees_new_writes(target):
    vectors = clustered(20)
    with target.store() as first:
        ids = first.add_batch(vectors, payloads=[{"i": i} for i in range(20)])
        with target.store() as second:
            assert len(second) == 20
            fresh = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)
            late = first.add(fresh, id="late")
            first.delete([ids[0]])
            assert second.recall(fresh, k=1).episodes[0].episode.id == late  # no reopen needed
            assert len(second) == 20 and second.get(ids[0]) is None
    with target.store() as again:
        assert len(again) == 20 and again.get(ids[5]).payload == {"i": 5}
        np.testing.assert_array_equal(again.get(ids[5]).embedding, vectors[5])
        assert again.backend.dim == DIM


def test_the_interface_scans_and_counts_in_insertion_order(target):
    backend = target.backend()
    backend.ensure_space("s")
    episodes = [Episode(f"e{i}", clustered(1, seed=i)[0], {"i": i}, float(i), kind="semantic" if i == 2 else
                        "episode") for i in range(5)]
    backend.insert("s", episodes[:3])
    backend.insert("s", episodes[3:])
    seqs = [seq for seq, _ in backend.scan("s")]
    assert seqs == sorted(seqs) and [e.id for _, e in backend.scan("s")] == [f"e{i}" for i in range(5)]
    assert [e.id for _, e in backend.scan("s", after_seq=seqs[2])] == ["e3", "e4"]
    assert [e.id for _, e in backend.scan("s", kind="semantic")] == ["e2"]
    assert backend.count("s") == 5 and backend.count("s", "semantic") == 1
    rows = backend.index_rows("s", after_seq=seqs[1])
    assert rows.ids == ["e2", "e3", "e4"] and rows.embeddings.shape == (3, DIM)
    backend.upsert_semantic("s", dataclasses.replace(episodes[2], payload={"i": "new"}))
    assert backend.get("s", ["e2"])["e2"].payload == {"i": "new"} and backend.count("s") == 5
    assert backend.add_links("s", [Link("e0", "e1", "similar", 0.5), Link("e0", "e1", "similar", 0.5)]) == 1
    assert backend.add_links("s", [Link("e0", "e1", "similar", 0.5)]) == 0
    assert backend.links("s", ["e1"], "similar")[0].weight == 0.5
    assert backend.links("s", kind="proposed") == []
    with pytest.raises(ValueError, match="space: no memory space named 'nope'"):
        backend.get_state("nope")
    backend.close()
