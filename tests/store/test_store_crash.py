"""Crash safety and concurrency: kill -9 during ingest and sleep, concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np

from engram.store import MemoryStore, SQLiteBackend

DIM = 16

INGEST = textwrap.dedent(
    """
    import sys, numpy as np
    from engram.store import MemoryStore, SQLiteBackend
    store = MemoryStore(sys.argv[1], space=sys.argv[2], dim=16)
    for b in range(100000):
        vectors = np.random.default_rng(b).standard_normal((20, 16)).astype(np.float32)
        store.add_batch(vectors, ids=[f"{sys.argv[3]}-{b}-{j}" for j in range(20)],
                        payloads=[{"b": b, "j": j} for j in range(20)])
        print(b, flush=True)
    """
)


def _start(path, space: str, prefix: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", INGEST, str(path), space, prefix],
                            stdout=subprocess.PIPE, text=True, env=env)


def _acknowledged(process: subprocess.Popen, wanted: int) -> list[int]:
    batches = []
    for line in process.stdout:
        batches.append(int(line))
        if len(batches) >= wanted:
            break
    return batches


def _assert_all_there(store: MemoryStore, prefix: str, batches: list[int]) -> None:
    for b in batches:
        vectors = np.random.default_rng(b).standard_normal((20, DIM)).astype(np.float32)
        found = store.get_many([f"{prefix}-{b}-{j}" for j in range(20)])
        assert len(found) == 20, f"batch {b} was acknowledged but is missing"
        for j in range(20):
            np.testing.assert_array_equal(found[f"{prefix}-{b}-{j}"].embedding, vectors[j])
            assert found[f"{prefix}-{b}-{j}"].payload == {"b": b, "j": j}
    assert store.check() == []


def test_kill_9_during_ingest_loses_no_acknowledged_write(tmp_path):
    path = tmp_path / "s"
    MemoryStore(path, space="ingest", dim=DIM).close()
    process = _start(path, "ingest", "k")
    batches = _acknowledged(process, 15)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with MemoryStore(path, space="ingest") as store:
        _assert_all_there(store, "k", batches)
        assert len(store) % 20 == 0  # a batch is all or nothing
        store.add(np.ones(DIM), id="after-restart")  # the store keeps working
        assert store.check() == []


def test_two_processes_and_threads_write_concurrently(tmp_path):
    path = tmp_path / "s"
    MemoryStore(path, space="shared", dim=DIM).close()
    processes = [_start(path, "shared", "p1"), _start(path, "shared", "p2")]
    errors: list[BaseException] = []

    def thread_writer(t: int) -> None:
        try:
            with MemoryStore(path, space="shared", durable=False) as store:
                for b in range(5):
                    store.add_batch(np.full((4, DIM), t * 10 + b + 1, dtype=np.float32),
                                    ids=[f"t{t}-{b}-{j}" for j in range(4)])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=thread_writer, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    acknowledged = [_acknowledged(p, 5) for p in processes]
    for thread in threads:
        thread.join()
    for p in processes:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert errors == []
    with MemoryStore(path, space="shared") as store:
        _assert_all_there(store, "p1", acknowledged[0])
        _assert_all_there(store, "p2", acknowledged[1])
        for t in range(3):
            for b in range(5):
                found = store.get_many([f"t{t}-{b}-{j}" for j in range(4)])
                assert len(found) == 4
                assert all((e.embedding == t * 10 + b + 1).all() for e in found.values())


SLEEPER = textwrap.dedent(
    """
    import sys
    from engram.store import MemoryStore, SQLiteBackend
    store = MemoryStore(sys.argv[1], space="s")
    print("start", flush=True)
    store.sleep(walks=300000, walk_length=8)
    print("done", flush=True)
    """
)


def test_kill_9_during_sleep_then_sleep_resumes_and_store_is_consistent(tmp_path):
    path = tmp_path / "s"
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, DIM))
    vectors = (centres[rng.integers(0, 8, 400)] + 0.3 * rng.standard_normal((400, DIM))).astype(np.float32)
    with MemoryStore(path, space="s", dim=DIM) as store:
        ids = store.add_batch(vectors, timestamps=[time.time() - 400 + i for i in range(400)])
    process = subprocess.Popen([sys.executable, "-c", SLEEPER, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "start"
    watcher = SQLiteBackend(path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill once the sleep is past its first phase
        if (watcher.get_state("s").get("sleep") or {}).get("phase") in ("link", "cluster", "walk"):
            break
        time.sleep(0.05)
    watcher.close()
    process.send_signal(signal.SIGKILL)
    process.wait()
    with MemoryStore(path, space="s") as store:
        assert store.check() == [] and len(list(store.iter_episodes(kind="episode"))) == 400
        assert store.backend.get_state("s").get("sleep") is not None, "killed mid-sleep"
        report = store.sleep(walks=200)
        assert report.number == 1 and report.resumed and report.replayed == 400
        assert store.backend.get_state("s").get("sleep") is None
        assert store.sleep().replayed == 0  # finished: nothing left to do
        assert len(store.get_many(ids)) == 400 and store.check() == []
