"""Crash safety and concurrency: kill -9 during ingest and sleep, concurrent writers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from store_faults import CRASHED, FAULTS, STOPS, Injector, in_child

from engram.store import MemoryStore, SQLiteBackend
from engram.store.backend import Episode, StoreError

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
                    store.add_batch(np.full((4, DIM), t * 10 + b, dtype=np.float32),
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
                assert all((e.embedding == t * 10 + b).all() for e in found.values())


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


# ---------------------------------------------------------------- the crash harness
#
# Every writing operation of the SQLite backend, stopped right after each of its durability
# steps (vector write, fsync, directory fsync, rename, unlink, commit) by a crash or a power
# loss, and failed at each step by ENOSPC, EIO or a short write. Afterwards the store must hold
# exactly the state before the operation or after it (after, once its commit has returned),
# pass check(), hold no trace of deleted vectors, and keep working.

HARNESS: dict[str, int] = {}  # cases run, summed over the operations


def _vec(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32)


def _episodes(ids: range, kind: str = "episode") -> list[Episode]:
    return [Episode(id=f"e{i}", embedding=_vec(i), payload={"i": i}, timestamp=float(i), kind=kind)
            for i in ids]


def _base(path) -> None:
    """Two spaces whose names share a prefix, a prototype, some deleted rows, a key and a sleep's worth."""
    backend = SQLiteBackend(path, dim=DIM)
    for space in ("s", "s.x"):
        backend.ensure_space(space)
        backend.insert(space, _episodes(range(40)))
    backend.delete("s", [f"e{i}" for i in range(30, 40)])
    backend.upsert_semantic("s", Episode(id="proto", embedding=_vec(500), payload={}, timestamp=0.0,
                                         kind="semantic"))
    backend.update_state("s", {"key_hash": "old"})
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, DIM))
    vectors = (centres[rng.integers(0, 4, 48)] + 0.2 * rng.standard_normal((48, DIM))).astype(np.float32)
    backend.close()
    with MemoryStore(path, space="sleepy") as store:
        store.add_batch(vectors, ids=[f"z{i}" for i in range(48)],
                        timestamps=[1000.0 + i for i in range(48)])


def _sleep(backend: SQLiteBackend) -> None:
    MemoryStore(backend.path, space="sleepy", backend=backend).sleep(walks=16, recalibrate=False)


def _rotate_key(backend: SQLiteBackend) -> None:
    from engram.store.server import issue_key

    issue_key(backend.path, "s")


# name: (the write, index of the commit that makes it visible among its commits: 0 first, -1 last)
OPERATIONS: dict[str, tuple[Callable[[SQLiteBackend], Any], int]] = {
    "insert": (lambda b: b.insert("s", _episodes(range(100, 120))), 0),
    "insert_new_space": (lambda b: (b.ensure_space("t"), b.insert("t", _episodes(range(5)))), -1),
    "delete": (lambda b: b.delete("s", [f"e{i}" for i in range(0, 20, 2)] + ["proto"]), 0),
    "compact": (lambda b: b.compact(), 0),
    "upsert_semantic": (lambda b: b.upsert_semantic("s", Episode(
        id="proto", embedding=_vec(501), payload={"v": 2}, timestamp=1.0, kind="semantic")), 0),
    "key_rotation": (_rotate_key, -1),
    "sleep": (_sleep, 0),
}


def _observe(path) -> dict[str, Any]:
    """What the operations change, read from a freshly opened store (check() must be clean)."""
    backend = SQLiteBackend(path)
    try:
        seen: dict[str, Any] = {"key": backend.get_state("s").get("key_hash") == "old"}
        for space in backend.spaces():
            assert backend.check(space) == [], space
            ids = [e.id for _, e in backend.scan(space)]
            for eid, e in backend.get(space, ids).items():
                if e.kind == "semantic" and space == "sleepy":
                    assert abs(float(np.linalg.norm(e.embedding)) - 1) < 1e-5, f"prototype {eid} corrupt"
                else:
                    seen[f"{space}/{eid}"] = (e.embedding.tobytes(), json.dumps(e.payload))
        return seen
    finally:
        backend.close()


def _recovers(path, before: dict[str, Any], name: str) -> None:
    """Deleted or replaced vectors are gone from the files; the store keeps working; a sleep resumes."""
    kept = {v[0] for k, v in _observe(path).items() if k != "key"}
    gone = {v[0] for k, v in before.items() if k != "key"} - kept
    data = b"".join(p.read_bytes() for p in (path / "vectors").iterdir())
    assert not any(vector in data for vector in gone), "a deleted vector is still on disk"
    if name == "sleep":
        with MemoryStore(path, space="sleepy") as store:
            store.sleep(walks=16, recalibrate=False)
            assert store.backend.get_state("sleepy").get("sleep") is None
    backend = SQLiteBackend(path)
    backend.insert("s", _episodes(range(900, 902)))
    backend.compact()
    names = sorted(p.name for p in (path / "vectors").iterdir())
    assert names == sorted(f"{s}.{backend._space_row(s)[1]}.f32" for s in backend.spaces()), names
    assert all(backend.check(s) == [] for s in backend.spaces())
    backend.close()


def _run_case(base, case, name: str, mode: str, at: int) -> tuple[int, bool]:
    """Run the operation on a copy of ``base`` with the injector set to (mode, at)."""
    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(base, case)
    write, _ = OPERATIONS[name]

    def work() -> None:
        backend = SQLiteBackend(case)
        injector = Injector(case / "vectors", mode, at).install()
        try:
            write(backend)
        except StoreError as error:
            assert mode in FAULTS and injector.injected, error
            assert str(case) in str(error) and "reshape" not in str(error), error
            raise
        finally:
            Injector.uninstall()

    if mode in STOPS:
        return in_child(work), True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a failed post-commit scrub warns
        try:
            work()
        except StoreError:
            return 1, True
    return 0, True


@pytest.fixture
def scratch(tmp_path):
    """A folder in memory where there is one: the harness models power loss itself, and real
    fsyncs of a few hundred cases would only cost time."""
    if not os.path.isdir("/dev/shm"):
        yield tmp_path
        return
    folder = tempfile.mkdtemp(prefix="engram-crash-", dir="/dev/shm")
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_every_durability_step_of_every_write_survives_crash_power_loss_and_io_errors(scratch, name):
    base, case = scratch / "base", scratch / "case"
    _base(base)
    before = _observe(base)
    shutil.copytree(base, case)
    backend = SQLiteBackend(case)
    counter = Injector(case / "vectors").install()
    try:
        OPERATIONS[name][0](backend)
    finally:
        Injector.uninstall()
        backend.close()
    trace, after = counter.trace, _observe(case)
    commits = [i + 1 for i, step in enumerate(trace) if step == "commit"]
    visible_from = commits[OPERATIONS[name][1]]  # stopped at or after this step: the write is there
    cases = {"crash": 0, "power": 0, "faults": 0}
    for mode in (*STOPS, *FAULTS):
        for at in range(1, len(trace) + 1):
            if mode == "short" and trace[at - 1] != "pwrite":
                continue
            status, _ = _run_case(base, case, name, mode, at)
            assert status in ((CRASHED,) if mode in STOPS else (0, 1)), (mode, at, trace)
            seen = _observe(case)
            if name != "sleep":
                expected = (after if at >= visible_from else before) if mode in STOPS else (
                    before if status == 1 else after)
                assert seen == expected, (mode, at, trace[at - 1], trace)
            else:
                assert {k: v for k, v in seen.items() if k.startswith("sleepy/z")} == {
                    k: v for k, v in before.items() if k.startswith("sleepy/z")}
            _recovers(case, before, name)
            cases["faults" if mode in FAULTS else mode] += 1
    for key, value in cases.items():
        HARNESS[key] = HARNESS.get(key, 0) + value
    HARNESS["operations"] = HARNESS.get("operations", 0) + 1
    HARNESS["steps"] = HARNESS.get("steps", 0) + len(trace)
    print(f"\ncrash harness, {name}: {len(trace)} durability steps ({' '.join(trace)}); "
          f"{cases['crash']} crashes, {cases['power']} power losses, {cases['faults']} faults injected; "
          f"totals so far {HARNESS}")
