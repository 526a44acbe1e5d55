"""What only the PostgreSQL backend does: its errors, its locks, its index, and true deletion
from the server's files. The behaviour it shares with SQLite is in test_store_backends.py."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from engram.errors import EngramError
from engram.store import MemoryStore, StoreError
from engram.store.backend import Episode

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg: pip install -e '.[dev]'")

from engram.store.backends.postgres import PostgresBackend, redact  # noqa: E402

DIM = 8


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_an_unreachable_server_is_a_store_error_that_hides_the_password(tmp_path):
    url = f"postgresql://engram:s3cret@/nodb?host={tmp_path}&port=1"
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as caught:
        MemoryStore(url, dim=DIM)
    assert "s3cret" not in str(caught.value) and "engram:***@" in str(caught.value)
    assert isinstance(caught.value, EngramError) and isinstance(caught.value, OSError)
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_the_dimension_is_fixed_when_the_store_is_made(postgres_url):
    PostgresBackend(postgres_url, dim=DIM).close()
    with pytest.raises(ValueError, match=r"dim: store .* holds 8-dimensional embeddings, got dim=16"):
        PostgresBackend(postgres_url, dim=16)
    backend = PostgresBackend(postgres_url)
    assert backend.dim == DIM
    backend.close()
    with pytest.raises(ValueError, match="ef_search: expected a positive integer"):
        PostgresBackend(postgres_url, ef_search=0)


def test_text_with_a_nul_character_is_refused_by_name_and_nothing_is_stored(postgres_url):
    with MemoryStore(postgres_url, dim=DIM) as store:
        with pytest.raises(ValueError, match="text: PostgreSQL cannot store the NUL character"):
            store.add_batch(vectors(2), texts=["fine", "not\x00fine"])
        assert len(store) == 0


def test_writers_of_different_spaces_do_not_wait_for_each_other(postgres_url):
    """The write lock is the space's row: holding it stops writers of that space only."""
    with MemoryStore(postgres_url, space="a", dim=DIM) as a, MemoryStore(postgres_url, space="b") as b:
        holder = psycopg.connect(postgres_url)
        holder.execute("SELECT 1 FROM engram_spaces WHERE name = 'a' FOR UPDATE")  # opens a transaction
        b.add(vectors(1)[0], id="b-while-a-is-locked")  # returns: another space's lock
        done = threading.Event()
        writer = threading.Thread(target=lambda: (a.add(vectors(1)[0], id="a-waits"), done.set()))
        writer.start()
        assert not done.wait(0.5), "a write to the locked space went through"
        holder.rollback()
        writer.join(30)
        holder.close()
        assert done.is_set() and a.get("a-waits") is not None and b.get("b-while-a-is-locked") is not None


def test_the_hnsw_index_is_built_past_its_threshold_and_nearest_uses_it(postgres_url):
    backend = PostgresBackend(postgres_url, dim=DIM, hnsw_above=1500)
    with MemoryStore(postgres_url, backend=backend) as store:
        store.add_batch(vectors(1500))
        with psycopg.connect(postgres_url) as db:
            assert db.execute("SELECT to_regclass('engram_episodes_hnsw')").fetchone()[0] is None
        store.add_batch(vectors(500, seed=2))  # one bulk build, then incremental inserts
        store.add_batch(vectors(2000, seed=3))  # rows the planner's statistics have not seen

        def index_scans() -> int:
            backend._db.execute("SELECT pg_stat_force_next_flush()")
            return backend._db.execute("SELECT idx_scan FROM pg_stat_user_indexes "
                                       "WHERE indexrelname = 'engram_episodes_hnsw'").fetchone()[0]

        cue = vectors(1, seed=1)[0]
        before = index_scans()
        hits = backend.nearest("default", cue, 10)
        assert index_scans() == before + 1, "nearest must search through the HNSW index"
        everything = np.concatenate([vectors(1500), vectors(500, seed=2), vectors(2000, seed=3)])
        norms = np.linalg.norm(everything, axis=1) * np.linalg.norm(cue)
        cosines = everything.astype(np.float64) @ cue / norms
        assert len(hits) == 10 and [c for _, c in hits] == sorted((c for _, c in hits), reverse=True)
        exact = {round(float(c), 5) for c in np.sort(cosines)[::-1][:10]}
        assert len(exact & {round(c, 5) for _, c in hits}) >= 9  # approximate, but close to exact


def test_check_finds_and_repair_drops_what_recall_could_never_use(postgres_url):
    with MemoryStore(postgres_url, dim=DIM) as store:
        ids = store.add_batch(vectors(5))
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute("UPDATE engram_episodes SET embedding = %s::vector WHERE id = %s",
                       (str([0.0] * DIM), ids[1]))
            db.execute("INSERT INTO engram_links VALUES ('default', %s, 'gone', 'similar', 1, 0)", (ids[0],))
        problems = store.check()
        assert any(ids[1] in p and "zero norm" in p for p in problems)
        assert any("gone" in p and "does not exist" in p for p in problems)
        assert store.repair() == [ids[1]]
        assert store.check() == [] and len(store) == 4 and store.links(ids[0]) == []


def test_not_durable_turns_synchronous_commit_off_only_for_its_connection(postgres_url):
    fast = PostgresBackend(postgres_url, dim=DIM, durable=False)
    safe = PostgresBackend(postgres_url)
    assert fast._db.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    assert safe._db.execute("SHOW synchronous_commit").fetchone()[0] == "on"
    fast.close()
    safe.close()


def test_compact_removes_deleted_text_from_the_servers_files(postgres_server, postgres_url):
    _, folder = postgres_server
    if folder is None:
        pytest.skip("the server was given by ENGRAM_TEST_POSTGRES_URL: its files are not readable here")
    marker = "quokkamarkerzebra"
    with MemoryStore(postgres_url, dim=DIM) as store:
        store.backend.ensure_space("default")
        store.backend.insert("default", [Episode("secret", vectors(1)[0], {}, time.time(),
                                                 text=f"my {marker} password"),
                                         Episode("kept", vectors(1, 1)[0], {}, time.time(), text="kept")])
        with psycopg.connect(postgres_url, autocommit=True) as db:
            oid = db.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]

            def files_holding_marker() -> list[str]:
                db.execute("CHECKPOINT")  # the pages reach the table's files
                return [p.name for p in (folder / "base" / str(oid)).iterdir()
                        if p.is_file() and marker.encode() in p.read_bytes()]

            assert files_holding_marker(), "the marker must be visible in the files before deletion"
            store.delete(["secret"])
            assert store.compact() == {"default": 1}
            assert files_holding_marker() == []
        assert store.get("kept") is not None


def test_a_server_crash_during_ingest_loses_no_acknowledged_write(postgres_url):
    """kill -9 of the server process writing for the ingest makes PostgreSQL crash and recover
    (every backend restarts, the WAL is replayed): every batch the client saw return is there."""
    from test_store_crash import DIM as CRASH_DIM
    from test_store_crash import _acknowledged, _assert_all_there, _start

    MemoryStore(postgres_url, space="ingest", dim=CRASH_DIM).close()
    bystander = psycopg.connect(postgres_url, autocommit=True)  # a crash restart ends every session
    process = _start(postgres_url, "ingest", "k")
    batches = _acknowledged(process, 10)
    with psycopg.connect(postgres_url) as db:
        pids = [r[0] for r in db.execute("SELECT pid FROM pg_stat_activity WHERE "
                                         "datname = current_database() AND pid <> pg_backend_pid() "
                                         "AND pid <> %s", (bystander.info.backend_pid,))]
    assert pids, "the ingest's server process must be found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    batches += [int(line) for line in process.stdout]  # what returned before the crash reached it
    assert process.wait() != 0
    deadline = time.monotonic() + 60
    while True:  # the server restarts after its crash recovery
        try:
            store = MemoryStore(postgres_url, space="ingest")
            break
        except StoreError:
            assert time.monotonic() < deadline, "the server did not come back"
            time.sleep(0.2)
    with pytest.raises(psycopg.OperationalError):
        bystander.execute("SELECT 1")  # the whole server went through crash recovery
    bystander.close()
    with store:
        _assert_all_there(store, "k", batches)
        assert len(store) % 20 == 0
        store.add(np.ones(CRASH_DIM), id="after-recovery")


def test_connections_opening_a_new_database_at_once_create_it_once(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DROP EXTENSION IF EXISTS vector")  # the first opens must create it, together
    opened: list[PostgresBackend] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(PostgresBackend(postgres_url, dim=DIM))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(opened) == 6
    opened[0].ensure_space("s")
    opened[0].insert("s", [Episode("e", vectors(1)[0], {}, 0.0)])
    assert all(b.count("s") == 1 and b.dim == DIM for b in opened)
    for backend in opened:
        backend.close()
