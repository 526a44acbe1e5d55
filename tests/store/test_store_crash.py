"""Crash safety and concurrency: kill -9 during ingest and sleep, concurrent writers (on SQLite and
on PostgreSQL), and the fault-injection harness over every durability step of the SQLite backend."""

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
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from store_faults import CRASHED, FAULTS, STOPS, Injector, in_child

from engram.store import MemoryStore, SQLiteBackend
from engram.store.backend import Episode, StoreError
from engram.store.backends import open_backend

DIM = 16

INGEST = textwrap.dedent(
    """
    import sys, numpy as np
    from engram.store import MemoryStore
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


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """A new store: a directory (SQLite) or a database on the session's PostgreSQL server."""
    return request.getfixturevalue("postgres_url") if request.param == "postgres" else tmp_path / "s"


def test_kill_9_during_ingest_loses_no_acknowledged_write(location):
    path = location
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


def test_two_processes_and_threads_write_concurrently(location):
    path = location
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
    from engram.store import MemoryStore
    store = MemoryStore(sys.argv[1], space="s")
    print("start", flush=True)
    store.sleep(walks=300000, walk_length=8)
    print("done", flush=True)
    """
)


def test_kill_9_during_sleep_then_sleep_resumes_and_store_is_consistent(location):
    path = location
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, DIM))
    vectors = (centres[rng.integers(0, 8, 400)] + 0.3 * rng.standard_normal((400, DIM))).astype(np.float32)
    with MemoryStore(path, space="s", dim=DIM) as store:
        ids = store.add_batch(vectors, timestamps=[time.time() - 400 + i for i in range(400)])
    process = subprocess.Popen([sys.executable, "-c", SLEEPER, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "start"
    watcher = open_backend(path)
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
    """Two spaces whose names share a prefix, a prototype, some deleted rows, a key, a sleep's
    worth of episodes and a space with one damaged vector (for repair)."""
    backend = SQLiteBackend(path, dim=DIM)
    for space, n in (("s", 40), ("s.x", 40), ("dmg", 6)):
        backend.ensure_space(space)
        backend.insert(space, _episodes(range(n)))
    backend.delete("s", [f"e{i}" for i in range(30, 40)])
    backend.upsert_semantic("s", Episode(id="proto", embedding=_vec(500), payload={}, timestamp=0.0,
                                         kind="semantic"))
    backend.update_state("s", {"key_hash": "old"})
    with open(path / "vectors" / "dmg.0.f32", "r+b") as handle:  # one bit of e2's vector
        handle.seek(2 * DIM * 4 + 1)
        byte = handle.read(1)[0]
        handle.seek(2 * DIM * 4 + 1)
        handle.write(bytes([byte ^ 0x04]))
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
    "compact": (lambda b: (b.compact("s"), b.compact("s.x")), 0),
    "upsert_semantic": (lambda b: b.upsert_semantic("s", Episode(
        id="proto", embedding=_vec(501), payload={"v": 2}, timestamp=1.0, kind="semantic")), 0),
    "key_rotation": (_rotate_key, -1),
    "repair": (lambda b: b.repair("dmg"), 0),
    "sleep": (_sleep, 0),
}


def _observe(path) -> dict[str, Any]:
    """What the operations change, read from a freshly opened store (check() must be clean)."""
    backend = SQLiteBackend(path)
    try:
        seen: dict[str, Any] = {"key": backend.get_state("s").get("key_hash") == "old"}
        for space in backend.spaces():
            ids = [e.id for _, e in backend.scan(space)]
            if space == "dmg":  # damaged on purpose until repaired: its problems are its state
                seen["dmg"] = (backend.check(space), ids)
                continue
            assert backend.check(space) == [], space
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
    kept = {v[0] for k, v in _observe(path).items() if "/" in k}
    gone = {v[0] for k, v in before.items() if "/" in k} - kept
    data = b"".join(p.read_bytes() for p in (path / "vectors").iterdir())
    assert not any(vector in data for vector in gone), "a deleted vector is still on disk"
    if name == "sleep":
        with MemoryStore(path, space="sleepy") as store:
            store.sleep(walks=16, recalibrate=False)
            assert store.backend.get_state("sleepy").get("sleep") is None
    backend = SQLiteBackend(path)
    backend.insert("s", _episodes(range(900, 902)))
    backend.repair("dmg")
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


# ---------------------------------------------------------------- readers beside a writer

def _known(i: int) -> np.ndarray:
    """Episode i's embedding: never zero, different for every i."""
    return (np.arange(DIM, dtype=np.float32) * 0.01 + i + 1).astype(np.float32)


def _writer(path, log, seconds: float) -> None:
    """Add, delete, rewrite a prototype and compact at random, logging each write: a deletion or a
    rewrite before it starts, an addition once it is acknowledged."""
    rng = np.random.default_rng(7)
    backend = SQLiteBackend(path, durable=False)
    live: list[int] = []
    next_id, version, deadline = 0, 0, time.monotonic() + seconds
    with open(log, "a", buffering=1) as out:
        while time.monotonic() < deadline:
            choice = rng.random()
            if choice < 0.45 or len(live) < 50:
                ids = list(range(next_id, next_id + int(rng.integers(5, 40))))
                next_id = ids[-1] + 1
                backend.insert("r", [Episode(id=f"e{i}", embedding=_known(i), payload={}, timestamp=0.0)
                                     for i in ids])
                live += ids
                out.write("A " + " ".join(map(str, ids)) + "\n")
            elif choice < 0.8:
                doomed = [live.pop(int(rng.integers(len(live)))) for _ in range(int(rng.integers(1, 30)))]
                out.write("D " + " ".join(map(str, doomed)) + "\n")
                backend.delete("r", [f"e{i}" for i in doomed])
            elif choice < 0.93:
                version += 1
                out.write(f"U {version}\n")
                backend.upsert_semantic("r", Episode(id="p", embedding=_known(-version - 2), payload={},
                                                     timestamp=0.0, kind="semantic"))
                out.write(f"u {version}\n")
            else:
                backend.compact("r")
    backend.close()


def _log(log) -> tuple[set[int], set[int], int, int]:
    """(acknowledged additions, deletions started, prototype version acknowledged, version started)."""
    added, deleting, done, started = set(), set(), 0, 0
    with open(log) as handle:
        lines = handle.read().splitlines()
    for line in lines:
        kind, *values = line.split()
        if kind == "A":
            added.update(map(int, values))
        elif kind == "D":
            deleting.update(map(int, values))
        elif kind == "U":
            started = int(values[0])
        elif kind == "u":
            done = int(values[0])
    return added, deleting, done, started


def _one_read(backend: SQLiteBackend, log, kind: int, rng: np.random.Generator) -> tuple[list, list]:
    """Read while the writer runs; (wrong vectors, acknowledged episodes missing) in that read."""
    added, _, done, _ = _log(log)
    pool = sorted(added)
    if kind == 0:  # the whole space, as the recall index loads it
        rows = backend.index_rows("r")
        found = dict(zip(rows.ids, rows.embeddings, strict=True))
        wanted = set(pool)
    else:  # a few ids (read row by row) or many (through the memory map)
        size = min(len(pool), 30 if kind == 1 else 150)
        wanted = {pool[i] for i in rng.choice(len(pool), size=size, replace=False)} if pool else set()
        found = {eid: e.embedding for eid, e in backend.get("r", [f"e{i}" for i in wanted] + ["p"]).items()}
    _, deleting, _, started = _log(log)
    wrong = [eid for eid, embedding in found.items() if not (
        any(np.array_equal(embedding, _known(-v - 2)) for v in range(done, started + 1)) if eid == "p"
        else np.array_equal(embedding, _known(int(eid[1:]))))]
    missing = [i for i in wanted - deleting if f"e{i}" not in found] + ([] if "p" in found else ["p"])
    return wrong, missing


def test_readers_in_another_process_see_only_acknowledged_vectors_while_a_writer_churns(tmp_path):
    path, log = tmp_path / "s", tmp_path / "log"
    backend = SQLiteBackend(path, dim=DIM)
    backend.ensure_space("r")
    backend.upsert_semantic("r", Episode(id="p", embedding=_known(-2), payload={}, timestamp=0.0,
                                         kind="semantic"))
    log.write_text("")
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _writer(path, log, seconds=6.0)
        except BaseException:  # the child reports and exits, never returns into pytest
            traceback.print_exc()
            code = 1
        os._exit(code)
    reads, wrong, missing, errors = 0, [], [], []
    rng = np.random.default_rng(1)
    while True:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            break
        try:
            bad, absent = _one_read(backend, log, reads % 3, rng)
            wrong += bad
            missing += absent
        except Exception as error:  # every exception counts: a reader must never see one
            errors.append(repr(error))
        reads += 1
    backend.close()
    print(f"\nconcurrent reader: {reads} reads beside the writer; {len(wrong)} wrong vectors, "
          f"{len(missing)} acknowledged episodes missing, {len(errors)} exceptions")
    assert os.waitstatus_to_exitcode(status) == 0, "the writer failed"
    assert (wrong, missing, errors[:3]) == ([], [], []) and reads > 20
