"""The SQLite backend's durability defects, one test each: what a crash, a full disk or damaged
files did to acknowledged data, and what the store now does instead."""

from __future__ import annotations

import errno
import os
import stat
import warnings

import numpy as np
import pytest
from store_faults import CRASHED, in_child

from engram.store import MemoryStore, SQLiteBackend
from engram.store.backend import Episode

DIM = 8


def vec(i: int) -> np.ndarray:
    """The embedding of episode ``i`` (recomputable, so a read can be checked exactly)."""
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float32)


def episodes(start: int, n: int, kind: str = "episode") -> list[Episode]:
    return [Episode(id=f"e{i}", embedding=vec(i), payload={"i": i}, timestamp=float(i), kind=kind)
            for i in range(start, start + n)]


def filled(path, n: int = 300, space: str = "s") -> None:
    backend = SQLiteBackend(path, dim=DIM)
    backend.ensure_space(space)
    backend.insert(space, episodes(0, n))
    backend.close()


def assert_intact(path, expected: set[int], space: str = "s") -> None:
    """Exactly the episodes ``expected`` are stored, each with its own vector, and check() is clean."""
    backend = SQLiteBackend(path)
    try:
        found = backend.get(space, [f"e{i}" for i in range(2000)])
        assert sorted(found) == sorted(f"e{i}" for i in expected)
        for eid, episode in found.items():
            np.testing.assert_array_equal(episode.embedding, vec(int(eid[1:])), err_msg=eid)
        assert backend.check(space) == []
    finally:
        backend.close()


def crash_after_fsync(n: int):
    """Patch os.fsync so that the process dies right after its n-th call."""
    real, calls = os.fsync, [0]

    def fsync(fd: int) -> None:
        real(fd)
        calls[0] += 1
        if calls[0] == n:
            os._exit(CRASHED)

    os.fsync = fsync


# ---------------------------------------------------------------- 1. compact and dotted names

def test_compacting_a_space_keeps_the_files_of_spaces_named_after_it(tmp_path):
    backend = SQLiteBackend(tmp_path / "s", dim=DIM)
    for space in ("a", "a.b", "a.0"):
        backend.ensure_space(space)
        backend.insert(space, episodes(0, 5))
    backend.delete("a", ["e0"])
    backend.compact("a")
    backend.close()
    for space, expected in (("a", set(range(1, 5))), ("a.b", set(range(5))), ("a.0", set(range(5)))):
        assert_intact(tmp_path / "s", expected, space)


# ---------------------------------------------------------------- 2. delete never zeroes live rows

def test_a_delete_that_fails_midway_leaves_every_vector_intact(tmp_path):
    filled(tmp_path / "s", 1000)
    backend = SQLiteBackend(tmp_path / "s")
    # The second chunk of 500 ids fails inside the transaction, after the first was deleted.
    backend._db.execute("CREATE TRIGGER boom BEFORE DELETE ON episodes WHEN old.id = 'e999' "
                        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    with pytest.raises(Exception, match="injected failure"):
        backend.delete("s", [f"e{i}" for i in range(1000)])
    backend._db.execute("DROP TRIGGER boom")
    backend.close()
    assert_intact(tmp_path / "s", set(range(1000)))


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_a_crash_inside_delete_loses_no_surviving_vector(tmp_path, crash_at):
    filled(tmp_path / "s", 300)

    def child() -> None:
        crash_after_fsync(crash_at)
        SQLiteBackend(tmp_path / "s").delete("s", [f"e{i}" for i in range(0, 300, 2)])

    assert in_child(child) in (0, CRASHED)
    backend = SQLiteBackend(tmp_path / "s")
    left = {int(e[1:]) for e in backend.get("s", [f"e{i}" for i in range(300)])}
    backend.close()
    assert left in (set(range(300)), set(range(1, 300, 2))), "a delete is all or nothing"
    assert_intact(tmp_path / "s", left)


# ---------------------------------------------------------------- 3. short writes and a full disk

def test_a_short_write_then_a_full_disk_aborts_the_insert_with_a_clear_error(tmp_path, monkeypatch):
    filled(tmp_path / "s", 10)
    real, calls = os.pwrite, [0]

    def pwrite(fd: int, data, offset: int) -> int:
        calls[0] += 1
        if calls[0] == 1:  # the disk fills up partway: part of the data goes, then nothing
            return real(fd, bytes(data)[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    backend = SQLiteBackend(tmp_path / "s")
    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(OSError, match=r"store .*s: no space left") as raised:
        backend.insert("s", episodes(10, 5))
    assert "reshape" not in str(raised.value)
    monkeypatch.setattr(os, "pwrite", real)
    backend.close()
    assert_intact(tmp_path / "s", set(range(10)))
    backend = SQLiteBackend(tmp_path / "s")
    backend.insert("s", episodes(10, 5))  # once there is space again, the same write succeeds
    backend.close()
    assert_intact(tmp_path / "s", set(range(15)))


def test_a_short_write_is_completed_not_ignored(tmp_path, monkeypatch):
    filled(tmp_path / "s", 10)
    real = os.pwrite

    def pwrite(fd: int, data, offset: int) -> int:  # the kernel may write less than asked
        data = bytes(data)
        return real(fd, data[: max(1, len(data) // 3)], offset)

    backend = SQLiteBackend(tmp_path / "s")
    monkeypatch.setattr(os, "pwrite", pwrite)
    backend.insert("s", episodes(10, 5))
    monkeypatch.setattr(os, "pwrite", real)
    backend.close()
    assert_intact(tmp_path / "s", set(range(15)))


def test_a_file_size_limit_stops_ingest_with_a_clear_error_and_loses_nothing(tmp_path):
    import resource

    filled(tmp_path / "s", 10)
    result = tmp_path / "result.txt"

    def child() -> None:
        backend = SQLiteBackend(tmp_path / "s")
        # Like `ulimit -f`: writes past 256 KiB fail (Python ignores SIGXFSZ, so they return errors).
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        done = 10
        try:
            for _ in range(10000):
                backend.insert("s", episodes(done, 50))
                done += 50
        except Exception as error:  # the message is what this test checks
            result.write_text(f"{done}\n{type(error).__name__}: {error}")
            return
        result.write_text(f"{done}\nno error")

    assert in_child(child) == 0
    done, message = result.read_text().split("\n", 1)
    assert "store " in message and str(tmp_path / "s") in message, message
    assert "reshape" not in message and "OperationalError" not in message, message
    assert_intact(tmp_path / "s", set(range(int(done))))


def test_sqlite_errors_name_the_store(tmp_path):
    (tmp_path / "s" / "engram.sqlite3").mkdir(parents=True)  # cannot be opened as a database
    with pytest.raises(OSError, match=r"store .*s: .*unable to open database file"):
        SQLiteBackend(tmp_path / "s", dim=DIM)


# ---------------------------------------------------------------- 4. rewriting a prototype

@pytest.mark.parametrize("crash_at", [1, 2, 3, 4])
def test_a_crash_while_a_prototype_is_rewritten_leaves_the_old_or_the_new_one(tmp_path, crash_at):
    backend = SQLiteBackend(tmp_path / "s", dim=DIM)
    backend.ensure_space("s")
    backend.insert("s", episodes(0, 20))
    old = Episode(id="proto", embedding=vec(100), payload={}, timestamp=0.0, kind="semantic")
    backend.upsert_semantic("s", old)
    backend.close()

    def child() -> None:
        crash_after_fsync(crash_at)
        new = Episode(id="proto", embedding=vec(101), payload={}, timestamp=1.0, kind="semantic")
        SQLiteBackend(tmp_path / "s").upsert_semantic("s", new)

    assert in_child(child) in (0, CRASHED)
    backend = SQLiteBackend(tmp_path / "s")
    proto = backend.get("s", ["proto"])["proto"]
    assert any(np.array_equal(proto.embedding, vec(v)) for v in (100, 101)), proto.embedding
    assert backend.check("s") == []
    backend.close()


# ---------------------------------------------------------------- 6. inconsistent and damaged stores

def test_a_store_whose_database_is_missing_is_refused_not_recreated(tmp_path):
    filled(tmp_path / "s", 10)
    (tmp_path / "s" / "engram.sqlite3").unlink()
    with pytest.raises(OSError, match=r"store .*s: .*database .*missing"):
        SQLiteBackend(tmp_path / "s", dim=DIM)
    assert not (tmp_path / "s" / "engram.sqlite3").exists(), "nothing new was created"
    (tmp_path / "s" / "engram.sqlite3").write_bytes(b"")  # an empty file is a missing database too
    with pytest.raises(OSError, match=r"store .*s: .*database .*missing"):
        SQLiteBackend(tmp_path / "s", dim=DIM)


def _vector_file(path, space: str = "s"):
    (file,) = (path / "vectors").glob(f"{space}.*.f32")
    return file


def test_a_short_vector_file_still_opens_is_reported_and_repaired(tmp_path):
    with MemoryStore(tmp_path / "s", space="s", dim=DIM) as store:
        store.add_batch(np.stack([vec(i) for i in range(20)]), ids=[f"e{i}" for i in range(20)])
    file = _vector_file(tmp_path / "s")
    os.truncate(file, file.stat().st_size - 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = MemoryStore(tmp_path / "s", space="s")
    assert any("e19" in str(w.message) for w in caught), "the damaged row is named when loading"
    with store:
        assert store.check() == ["e19: slot 19 is beyond the vector file (19 rows)"]
        with pytest.raises(OSError, match="e19"):
            store.get("e19")
        assert store.recall(vec(3), k=1).episodes[0].episode.id == "e3"
        assert store.backend.repair("s") == ["e19"]
        assert store.check() == [] and store.get("e19") is None and store.get("e18") is not None


def test_get_refuses_a_vector_that_fails_its_crc_and_names_it(tmp_path):
    filled(tmp_path / "s", 10)
    file = _vector_file(tmp_path / "s")
    data = bytearray(file.read_bytes())
    data[3 * DIM * 4 + 5] ^= 0x10  # one bit of e3's vector
    file.write_bytes(bytes(data))
    backend = SQLiteBackend(tmp_path / "s")
    with pytest.raises(OSError, match=r"e3.* fails its CRC"):
        backend.get("s", ["e2", "e3"])
    assert backend.get("s", ["e2"])["e2"].embedding.tolist() == vec(2).tolist()
    assert backend.check("s") == ["e3: vector at slot 3 fails its CRC"]
    assert backend.repair("s") == ["e3"] and backend.check("s") == []
    backend.close()


def test_space_names_that_differ_only_in_case_are_refused(tmp_path):
    backend = SQLiteBackend(tmp_path / "s", dim=DIM)
    backend.ensure_space("agent")
    with pytest.raises(ValueError, match=r"space: .*'Agent'.*'agent'"):
        backend.ensure_space("Agent")
    assert backend.spaces() == ["agent"]
    backend.close()


def test_vector_files_are_made_durable_in_their_directory(tmp_path, monkeypatch):
    """A new, renamed or removed file is only durable once its directory is fsynced."""
    real, synced = os.fsync, []

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    backend = SQLiteBackend(tmp_path / "s", dim=DIM)
    backend.ensure_space("s")
    synced.clear()
    backend.insert("s", episodes(0, 5))  # creates the vector file
    assert synced.index("dir") > synced.index("file")
    synced.clear()
    backend.delete("s", ["e0"])
    backend.compact("s")  # renames a new file in, removes the old one
    assert synced.count("dir") >= 2
    backend.close()


def test_the_store_is_private_to_its_owner(tmp_path):
    filled(tmp_path / "s", 5)
    backend = SQLiteBackend(tmp_path / "s")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "s", *(tmp_path / "s").rglob("*")]}
    backend.close()
    assert modes.pop("s") == 0o700 and modes.pop("vectors") == 0o700
    assert modes and all(mode == 0o600 for mode in modes.values()), modes


def test_tags_given_as_a_generator_are_stored(tmp_path):
    with MemoryStore(tmp_path / "s", dim=DIM, durable=False) as store:
        eid = store.add(vec(0), tags=(t for t in ["a", "b"]))
        assert store.get(eid).tags == ("a", "b")



def test_reading_never_creates_a_vector_file(tmp_path):
    backend = SQLiteBackend(tmp_path / "s", dim=DIM)
    backend.ensure_space("s")
    assert backend.get("s", ["e0"]) == {} and len(backend.index_rows("s").ids) == 0
    assert backend.check("s") == [] and list((tmp_path / "s" / "vectors").iterdir()) == []
    backend.close()


def test_a_space_whose_vector_file_vanished_is_reported_not_recreated(tmp_path):
    filled(tmp_path / "s", 5)
    _vector_file(tmp_path / "s").unlink()
    backend = SQLiteBackend(tmp_path / "s")
    assert backend.check("s") == [f"e{i}: the vector file s.0.f32 is missing" for i in range(5)]
    with pytest.raises(OSError, match=r"'e0': the vector file s.0.f32 is missing"):
        backend.get("s", ["e0"])
    assert list((tmp_path / "s" / "vectors").iterdir()) == []
    assert backend.repair("s") == [f"e{i}" for i in range(5)] and backend.check("s") == []
    backend.insert("s", episodes(10, 2))  # the repaired space takes new writes
    backend.close()
    assert_intact(tmp_path / "s", {10, 11})
