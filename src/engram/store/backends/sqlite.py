"""The embedded backend: SQLite (WAL) for metadata, payloads and links; a float32 array per space.

Layout of a store directory (0700; every file 0600)::

    engram.sqlite3            episodes, links, spaces, meta (schema version, dimension),
                              scrubs (slots of deleted rows still to be zeroed)
    vectors/<space>.<gen>.f32 row ``slot`` holds the embedding of the episode with that slot

No step ever writes over a vector that a committed row references:

- insert and ``upsert_semantic`` write new vectors into free slots and fsync them (and the
  directory, for a new file) before the commit that points rows at them; a crash before the
  commit leaves only unreferenced slots, which the next writer reuses.
- delete commits first, recording the freed slots, and zeroes them afterwards; a crash in
  between leaves deleted bytes only in unreferenced slots, zeroed on the next open or compact.
- compact writes the next generation's file beside the current one, renames it into place and
  fsyncs the directory, commits, and only then removes the old file.

Readers take the generation, slots and CRCs in one read transaction (one snapshot) and verify
every vector's CRC: a concurrent delete or compact can zero or remove what an older snapshot
points at, so a failure is read again from a fresh snapshot, and one that repeats is damage,
reported by name (``get``), left out with a warning (``index_rows``) or listed (``check``).
SQLite's own files are durable at each commit (WAL with ``synchronous=FULL``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import re
import sqlite3
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engram.store import lexical
from engram.store.backend import (
    Episode,
    EpisodeFields,
    IndexRows,
    Link,
    StorageBackend,
    StoreError,
    check_space_name,
    encode_payload,
    exact_nearest,
)

SCHEMA_VERSION = 1
DATABASE = "engram.sqlite3"
# <space>.<generation>.f32, or .f32.tmp while compact writes it; the generation is the last number.
_VECTOR_FILE = re.compile(r"^(?P<space>.+)\.(?P<generation>[0-9]+)\.f32(?:\.tmp)?$")
Fetch = Callable[[sqlite3.Connection], list[tuple]]  # the queries of one read snapshot
_CHUNK = 500  # ids per "IN (...)" query, below SQLite's variable limit
_READ_ATTEMPTS = 20  # fresh snapshots a read may take while concurrent writers move vectors
_ZEROS = 1 << 22  # bytes of zeros written per call when scrubbing

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spaces (
    name TEXT PRIMARY KEY,
    next_slot INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS episodes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    space TEXT NOT NULL,
    id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    kind TEXT NOT NULL,
    timestamp REAL NOT NULL,
    payload TEXT NOT NULL,
    reward REAL NOT NULL,
    salience REAL NOT NULL,
    tags TEXT NOT NULL,
    unfinished INTEGER NOT NULL,
    stability REAL NOT NULL,
    last_access REAL NOT NULL,
    recalls INTEGER NOT NULL DEFAULT 0,
    replays INTEGER NOT NULL DEFAULT 0,
    UNIQUE (space, id),
    UNIQUE (space, slot)
);
CREATE TABLE IF NOT EXISTS links (
    space TEXT NOT NULL,
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    kind TEXT NOT NULL,
    weight REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (space, src, dst, kind)
);
CREATE TABLE IF NOT EXISTS scrubs (
    space TEXT NOT NULL,
    generation INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    PRIMARY KEY (space, generation, slot)
);
CREATE INDEX IF NOT EXISTS links_dst ON links (space, dst);
CREATE INDEX IF NOT EXISTS episodes_order ON episodes (space, seq);
"""

_COLUMNS = (
    "seq, id, slot, crc, kind, timestamp, payload, reward, salience, tags, unfinished, "
    "stability, last_access, recalls, replays"
)

# What SQLite's terse messages mean for someone looking at a store directory.
_SQLITE_HINTS = {
    "database or disk is full": "no space left on the device (SQLite: database or disk is full)",
    "unable to open database file": "unable to open database file (a missing directory, no "
    "permission, or a read-only file system)",
    "attempt to write a readonly database": "the database is read-only (attempt to write a "
    "readonly database)",
    "disk I/O error": "the disk reported an I/O error (SQLite: disk I/O error; a full disk, a file "
    "size limit or failing hardware)",
    "database is locked": "another connection held the write lock for over a minute "
    "(database is locked)",
}


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _delete_rows(db: sqlite3.Connection, space: str, ids: Sequence[str]) -> None:
    """Delete episodes' rows, their text and their links (inside the caller's transaction)."""
    marks = ",".join("?" * len(ids))
    db.execute(f"DELETE FROM episodes WHERE space = ? AND id IN ({marks})", (space, *ids))
    lexical.delete(db, space, ids)
    db.execute(
        f"DELETE FROM links WHERE space = ? AND (src IN ({marks}) OR dst IN ({marks}))",
        (space, *ids, *ids),
    )


def _runs(slots: Sequence[int]) -> Iterable[tuple[int, int]]:
    """(first, count) of each run of consecutive numbers in sorted ``slots``."""
    start = previous = None
    for slot in slots:
        if previous is not None and slot == previous + 1:
            previous = slot
            continue
        if start is not None:
            yield start, previous - start + 1
        start = previous = slot
    if start is not None:
        yield start, previous - start + 1


def _as_bytes(vectors: np.ndarray) -> memoryview:
    """The float32 rows as one flat run of bytes, without a copy (also for zero rows)."""
    return memoryview(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1).view(np.uint8))


class FileOps:
    """Every step by which the backend makes data durable or visible: vector writes, fsyncs,
    renames, removals and commits. The crash tests replace it to stop or fail at each step."""

    def open(self, path: Path, flags: int) -> int:
        return os.open(path, flags, 0o600)

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def commit(self, db: sqlite3.Connection) -> None:
        db.execute("COMMIT")


_io = FileOps()


class SQLiteBackend(StorageBackend):
    """SQLite in WAL mode plus memory-mapped vector files, in one directory.

    Args:
        path: the store directory (created if absent).
        dim: embedding dimension; fixed when the store is created, checked when it is opened
            (None: use the stored one, 768 for a new store).
        durable: fsync vectors and use ``synchronous=FULL`` so that a committed write survives
            power loss, not only a process crash.

    Raises ``StoreError`` (an ``OSError``) naming the store when its files cannot be used: a
    database missing beside existing vectors, a full disk, a read-only file system.
    """

    def __init__(self, path: str | os.PathLike[str], dim: int | None = None, durable: bool = True):
        self.path = Path(path)
        self.location = str(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"path: expected a directory for the store, got the file {self.path}")
        self.durable = bool(durable)
        self._lock = threading.RLock()
        self._vectors = self.path / "vectors"
        self._readers: dict[tuple[str, int], int] = {}
        self._writers: dict[tuple[str, int], int] = {}
        self._dir_synced: set[tuple[str, int]] = set()
        self._create_files()
        try:
            self._db = sqlite3.connect(
                self.path / DATABASE, timeout=60.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise self._sqlite_error(error, "opening the database") from error
        try:
            self._open_database(dim)
        except BaseException:
            self._db.close()
            raise
        self._row_bytes = self.dim * 4
        self._finish_scrubs()

    def _create_files(self) -> None:
        """The directories (0700) and an empty database file (0600: SQLite gives its WAL the same
        mode); refuses a directory whose database is gone while vector files remain."""
        database = self.path / DATABASE
        try:
            for folder in (self.path, self._vectors):
                if not folder.is_dir():
                    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                    if self.durable:
                        _io.fsync_dir(folder.parent)
            has_data = any(
                p.exists() and p.stat().st_size > 0 for p in (database, self.path / f"{DATABASE}-wal")
            )
            vectors = [p.name for p in self._vectors.iterdir() if _VECTOR_FILE.match(p.name)]
            if not has_data and vectors:
                raise StoreError(
                    f"store {self.path}: the database {DATABASE} is missing or empty, but vectors/ "
                    f"holds {len(vectors)} vector files ({vectors[0]}, ...); refusing to start a new "
                    f"store over them. Restore {DATABASE} from a backup, or move vectors/ away to "
                    "start an empty store"
                )
            if not database.exists():
                os.close(_io.open(database, os.O_WRONLY | os.O_CREAT))
                if self.durable:
                    _io.fsync_dir(self.path)
        except StoreError:
            raise
        except OSError as error:
            raise self._os_error(error, f"creating the store's files in {self.path}") from error

    def _open_database(self, dim: int | None) -> None:
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            # Deleted payloads are overwritten with zeros in the database pages, not just unlinked.
            self._db.execute("PRAGMA secure_delete=ON")
        except sqlite3.Error as error:
            raise self._sqlite_error(error, "opening the database") from error
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            lexical.create(self._db)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                self.dim = 768 if dim is None else self._check_dim(dim)
                self._db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("schema_version", str(SCHEMA_VERSION)), ("dim", str(self.dim))],
                )
            else:
                version = int(meta["schema_version"])
                if version > SCHEMA_VERSION:
                    raise ValueError(
                        f"path: store {self.path} has schema version {version}, newer than this "
                        f"Engram ({SCHEMA_VERSION}); upgrade Engram to open it"
                    )
                self.dim = int(meta["dim"])
                if dim is not None and self._check_dim(dim) != self.dim:
                    raise ValueError(
                        f"dim: store {self.path} holds {self.dim}-dimensional embeddings, got dim={dim}"
                    )
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]

    @staticmethod
    def _check_dim(dim: Any) -> int:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        return int(dim)

    # ------------------------------------------------------------------ errors

    def _os_error(self, error: OSError, doing: str) -> StoreError:
        """A failed file operation as an error that names the store and the likely cause."""
        if isinstance(error, StoreError):
            return error
        reasons = {
            errno.ENOSPC: "no space left on the device",
            errno.EDQUOT: "the disk quota is exhausted",
            errno.EFBIG: "the file size limit was reached (see `ulimit -f`)",
            errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied",
            errno.EPERM: "permission denied",
        }
        reason = reasons.get(error.errno or -1, error.strerror or str(error))
        return StoreError(f"store {self.path}: {reason} while {doing}", error.errno)

    def _sqlite_error(self, error: sqlite3.Error, doing: str) -> StoreError:
        """SQLite's terse error as one that names the store (and what the message usually means)."""
        message = str(error)
        return StoreError(f"store {self.path}: {_SQLITE_HINTS.get(message, message)} while {doing}")

    def _damaged(self, space: str, rows: Sequence[tuple], problems: dict[int, str], id_col: int) -> str:
        """The message for damaged rows: the first few by id and reason, and what to do."""
        named = [f"episode {rows[i][id_col]!r}: {problems[i]}" for i in sorted(problems)[:3]]
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        return (f"store {self.path}: space {space!r}: {'; '.join(named)}{more}; check() lists every "
                "damaged row and repair() drops them")

    # ------------------------------------------------------------------ transactions

    class _Txn:
        """BEGIN IMMEDIATE … COMMIT (through ``_io``, so tests can stop there), ROLLBACK on error."""

        def __init__(self, backend: SQLiteBackend):
            self.backend = backend

        def __enter__(self) -> sqlite3.Connection:
            backend = self.backend
            backend._lock.acquire()
            try:
                backend._db.execute("BEGIN IMMEDIATE")
            except BaseException as error:
                backend._lock.release()
                if isinstance(error, sqlite3.Error):
                    raise backend._sqlite_error(error, "starting a write") from error
                raise
            return backend._db

        def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
            backend = self.backend
            try:
                if kind is None:
                    try:
                        _io.commit(backend._db)
                    except BaseException as error:
                        self._rollback()
                        if isinstance(error, sqlite3.Error):
                            raise backend._sqlite_error(error, "committing") from error
                        raise
                else:
                    self._rollback()
                    if isinstance(value, sqlite3.OperationalError) or type(value) is sqlite3.DatabaseError:
                        raise backend._sqlite_error(value, "writing") from value
            finally:
                backend._lock.release()

        def _rollback(self) -> None:
            db = self.backend._db
            if db.in_transaction:
                # SQLite may have rolled back already (it does after some I/O errors); the next
                # BEGIN reports a connection that is really broken.
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")

    def _transaction(self) -> SQLiteBackend._Txn:
        """A write transaction holding SQLite's write lock (other writers wait)."""
        return SQLiteBackend._Txn(self)

    def _snapshot(self, space: str, fetch: Fetch) -> tuple[int, list[tuple]]:
        """The space's generation and ``fetch``'s rows, read in one transaction (one snapshot)."""
        db = self._db
        own = not db.in_transaction
        try:
            if own:
                db.execute("BEGIN")
            try:
                _, generation = self._space_row(space)
                return generation, fetch(db)
            finally:
                if own:
                    db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            raise self._sqlite_error(error, "reading") from error

    def _space_row(self, space: str) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT next_slot, generation FROM spaces WHERE name = ?", (space,)
        ).fetchone()
        if row is None:
            raise ValueError(f"space: no memory space named {space!r} in {self.path}")
        return int(row[0]), int(row[1])

    # ------------------------------------------------------------------ vector files

    def _vector_path(self, space: str, generation: int) -> Path:
        return self._vectors / f"{space}.{generation}.f32"

    def _reader(self, space: str, generation: int) -> int:
        """A read-only descriptor of the generation's file (never creates it)."""
        key = (space, generation)
        if key not in self._readers:
            self._forget(self._readers, space)
            self._readers[key] = os.open(self._vector_path(space, generation), os.O_RDONLY)
        return self._readers[key]

    def _writer(self, space: str, generation: int) -> int:
        """A read-write descriptor of the generation's file, created on the first write."""
        key = (space, generation)
        if key not in self._writers:
            self._forget(self._writers, space)
            self._writers[key] = _io.open(self._vector_path(space, generation), os.O_RDWR | os.O_CREAT)
        return self._writers[key]

    @staticmethod
    def _forget(files: dict[tuple[str, int], int], space: str, keep: int | None = None) -> None:
        """Close the cached descriptors of a space's files (but ``keep``'s generation)."""
        for key in [k for k in files if k[0] == space and k[1] != keep]:
            os.close(files.pop(key))

    def _load(self, space: str, generation: int, rows: Sequence[tuple], slot_col: int,
              crc_col: int) -> tuple[np.ndarray, dict[int, str]]:
        """The vectors of ``rows`` (n, d) and, by row index, why any of them cannot be trusted."""
        n = len(rows)
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return vectors, {}
        try:
            fd = self._reader(space, generation)
        except FileNotFoundError:
            missing = f"the vector file {self._vector_path(space, generation).name} is missing"
            return vectors, dict.fromkeys(range(n), missing)
        slots = np.fromiter((r[slot_col] for r in rows), dtype=np.int64, count=n)
        size = os.fstat(fd).st_size // self._row_bytes
        inside = np.flatnonzero(slots < size)
        if len(inside) <= 64:
            for i in inside:
                data = os.pread(fd, self._row_bytes, int(slots[i]) * self._row_bytes)
                if len(data) == self._row_bytes:
                    vectors[i] = np.frombuffer(data, dtype=np.float32)
        elif size:
            with mmap.mmap(fd, size * self._row_bytes, access=mmap.ACCESS_READ) as mapped:
                array = np.frombuffer(mapped, dtype=np.float32).reshape(size, self.dim)
                vectors[inside] = array[slots[inside]]
                del array  # the map cannot close while a view of it exists
        problems = {int(i): f"slot {slots[i]} is beyond the vector file ({size} rows)"
                    for i in np.flatnonzero(slots >= size)}
        for i in inside:
            if zlib.crc32(vectors[i].data) != rows[i][crc_col]:
                problems[int(i)] = f"vector at slot {slots[i]} fails its CRC"
        return vectors, problems

    def _read(self, space: str, fetch: Fetch, slot_col: int,
              crc_col: int) -> tuple[list[tuple], np.ndarray, dict[int, str]]:
        """Rows of one snapshot with their CRC-verified vectors, and the rows that are damaged.

        A delete or compaction committed after the snapshot may zero or remove what it points at;
        such a row is read again from a fresh snapshot (where it is gone or moved). A row that
        fails the same way in two snapshots in a row, or under the write lock, is damaged.
        """
        previous: set[tuple] = set()
        for attempt in range(_READ_ATTEMPTS):
            with self._lock:
                generation, rows = self._snapshot(space, fetch)
                vectors, problems = self._load(space, generation, rows, slot_col, crc_col)
                stable = self._db.in_transaction  # a write transaction: nothing moves under it
                if problems:
                    self._forget(self._readers, space)
            if not problems or stable:
                break
            failed = {(generation, rows[i][slot_col], rows[i][crc_col]) for i in problems}
            if failed <= previous:
                break
            previous = failed
            time.sleep(0.001 * attempt)
        return rows, vectors, problems

    def _write_all(self, fd: int, data: memoryview, offset: int) -> None:
        """Write every byte (a short write is continued; one that writes nothing is an error)."""
        done = 0
        while done < len(data):
            written = _io.pwrite(fd, data[done:], offset + done)
            if written <= 0:
                raise OSError(errno.EIO, f"a write of {len(data) - done} bytes wrote nothing")
            done += written

    def _sync(self, fd: int, space: str, generation: int) -> None:
        """Make a file's writes durable, and its directory entry once per file and process."""
        if not self.durable:
            return
        _io.fsync(fd)
        if (space, generation) not in self._dir_synced:
            _io.fsync_dir(self._vectors)
            self._dir_synced.add((space, generation))

    def _write_vectors(self, space: str, generation: int, first: int, vectors: np.ndarray) -> None:
        """Write rows from slot ``first`` on and make them durable (before any commit uses them)."""
        path = self._vector_path(space, generation)
        data = _as_bytes(vectors)
        try:
            fd = self._writer(space, generation)
            self._write_all(fd, data, first * self._row_bytes)
            self._sync(fd, space, generation)
        except OSError as error:
            # After a failed write or fsync the descriptor's state is unknown: start afresh.
            self._forget(self._writers, space)
            raise self._os_error(
                error, f"writing {len(data)} bytes of vectors to {path}; nothing was committed"
            ) from error

    def _write_generation(self, space: str, generation: int, vectors: np.ndarray) -> None:
        """A complete new vector file, written beside the old one and renamed into place."""
        path = self._vector_path(space, generation)
        partial = path.with_name(path.name + ".tmp")
        try:
            fd = _io.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                self._write_all(fd, _as_bytes(vectors), 0)
                if self.durable:
                    _io.fsync(fd)
            finally:
                os.close(fd)
            _io.replace(partial, path)
            if self.durable:
                _io.fsync_dir(self._vectors)
        except OSError as error:
            with contextlib.suppress(OSError):  # gone or renamed; compact removes leftovers anyway
                os.unlink(partial)
            raise self._os_error(error, f"writing {path}; nothing was committed") from error

    # ------------------------------------------------------------------ spaces and state

    def ensure_space(self, space: str) -> None:
        check_space_name(space)
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM spaces WHERE name = ?", (space,)).fetchone()
        if not exists:
            with self._transaction() as db:
                clash = db.execute(
                    "SELECT name FROM spaces WHERE lower(name) = lower(?) AND name != ?", (space, space)
                ).fetchone()
                if clash:
                    raise ValueError(
                        f"space: {space!r} differs from the existing space {clash[0]!r} only in case; "
                        "on a case-insensitive file system they would share one vector file"
                    )
                db.execute(
                    "INSERT OR IGNORE INTO spaces (name, created) VALUES (?, ?)", (space, time.time())
                )

    def spaces(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM spaces ORDER BY name")]

    def get_state(self, space: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT state FROM spaces WHERE name = ?", (space,)).fetchone()
        if row is None:
            raise ValueError(f"space: no memory space named {space!r} in {self.path}")
        return json.loads(row[0])

    def update_state(self, space: str, changes: dict[str, Any]) -> None:
        self.update_state_with(space, lambda _: changes)

    def update_state_with(self, space: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Merge ``change(state)`` into the space's state, reading and writing it in one write
        transaction, so that concurrent read-modify-writes (key rotations) never lose one another."""
        with self._transaction() as db:
            row = db.execute("SELECT state FROM spaces WHERE name = ?", (space,)).fetchone()
            if row is None:
                raise ValueError(f"space: no memory space named {space!r} in {self.path}")
            state = json.loads(row[0])
            changes = change(dict(state))
            for key, value in changes.items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
            db.execute("UPDATE spaces SET state = ? WHERE name = ?", (json.dumps(state), space))

    # ------------------------------------------------------------------ episodes

    @classmethod
    def _rows(
        cls, space: str, episodes: Sequence[Episode], first_slot: int, vectors: np.ndarray
    ) -> list[tuple]:
        # Encode every payload before anything is written, so a bad one leaves no trace.
        return [
            (
                space,
                e.id,
                first_slot + i,
                zlib.crc32(vectors[i].data),
                e.kind,
                e.timestamp,
                encode_payload(e.payload),
                e.reward,
                e.salience,
                json.dumps(list(e.tags)) if e.tags else "[]",
                int(e.unfinished),
                e.stability,
                e.last_access,
                e.recalls,
                e.replays,
            )
            for i, e in enumerate(episodes)
        ]

    def insert(self, space: str, episodes: Sequence[Episode]) -> None:
        if not episodes:
            return
        vectors = np.ascontiguousarray(np.stack([e.embedding for e in episodes]), dtype=np.float32)
        with self._transaction() as db:
            next_slot, generation = self._space_row(space)
            ids = [e.id for e in episodes]
            for chunk in _chunks(ids):
                taken = db.execute(
                    f"SELECT id FROM episodes WHERE space = ? AND id IN ({','.join('?' * len(chunk))})",
                    (space, *chunk),
                ).fetchone()
                if taken:
                    raise ValueError(f"id: an episode with id {taken[0]!r} is already in space {space!r}")
            rows = self._rows(space, episodes, next_slot, vectors)
            self._write_vectors(space, generation, next_slot, vectors)
            db.executemany(
                "INSERT INTO episodes (space, id, slot, crc, kind, timestamp, payload, reward, salience, "
                "tags, unfinished, stability, last_access, recalls, replays) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            lexical.insert(db, space, episodes)
            db.execute(
                "UPDATE spaces SET next_slot = ? WHERE name = ?", (next_slot + len(episodes), space)
            )

    def upsert_semantic(self, space: str, episode: Episode) -> None:
        vector = np.ascontiguousarray(episode.embedding[None], dtype=np.float32)
        with self._transaction() as db:
            next_slot, generation = self._space_row(space)
            old = db.execute(
                "SELECT slot FROM episodes WHERE space = ? AND id = ?", (space, episode.id)
            ).fetchone()
            row = self._rows(space, [episode], next_slot, vector)[0]
            # The new vector goes to a free slot; the old one stays intact until this commits.
            self._write_vectors(space, generation, next_slot, vector)
            if old is not None:
                db.execute("DELETE FROM episodes WHERE space = ? AND id = ?", (space, episode.id))
                db.execute("INSERT OR IGNORE INTO scrubs VALUES (?, ?, ?)", (space, generation, old[0]))
            db.execute(
                "INSERT INTO episodes (space, id, slot, crc, kind, timestamp, payload, reward, salience, "
                "tags, unfinished, stability, last_access, recalls, replays) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            lexical.delete(db, space, [episode.id])
            lexical.insert(db, space, [episode])
            db.execute("UPDATE spaces SET next_slot = ? WHERE name = ?", (next_slot + 1, space))
        if old is not None:
            self._scrub(space)

    def _episode(self, row: tuple, embedding: np.ndarray) -> Episode:
        (_, eid, _, _, kind, timestamp, payload, reward, salience, tags, unfinished, stability,
         last_access, recalls, replays) = row
        return Episode(
            id=eid, embedding=embedding, payload=json.loads(payload), timestamp=timestamp,
            reward=reward, salience=salience, tags=tuple(json.loads(tags)), unfinished=bool(unfinished),
            kind=kind, stability=stability, last_access=last_access, recalls=recalls, replays=replays,
        )

    def get(self, space: str, ids: Sequence[str], with_embeddings: bool = True) -> dict[str, Episode]:
        """The episodes among ``ids``; a vector that fails its CRC raises ``StoreError`` naming it."""
        ids = list(ids)

        def fetch(db: sqlite3.Connection) -> list[tuple]:
            rows: list[tuple] = []
            for chunk in _chunks(ids):
                rows += db.execute(
                    f"SELECT {_COLUMNS} FROM episodes WHERE space = ? "
                    f"AND id IN ({','.join('?' * len(chunk))})",
                    (space, *chunk),
                ).fetchall()
            return rows

        if not with_embeddings:
            with self._lock:
                _, rows = self._snapshot(space, fetch)
            empty = np.zeros(0, dtype=np.float32)
            return {row[1]: self._episode(row, empty) for row in rows}
        rows, vectors, problems = self._read(space, fetch, slot_col=2, crc_col=3)
        if problems:
            raise StoreError(self._damaged(space, rows, problems, id_col=1))
        return {row[1]: self._episode(row, vector) for row, vector in zip(rows, vectors, strict=True)}

    def delete(self, space: str, ids: Sequence[str]) -> list[str]:
        removed: list[str] = []
        with self._transaction() as db:
            _, generation = self._space_row(space)
            for chunk in _chunks(list(ids)):
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT id, slot FROM episodes WHERE space = ? AND id IN ({marks})", (space, *chunk)
                ).fetchall()
                _delete_rows(db, space, chunk)
                # Zeroed only after the commit: a rollback must find every vector as it was.
                db.executemany("INSERT OR IGNORE INTO scrubs VALUES (?, ?, ?)",
                               [(space, generation, slot) for _, slot in rows])
                removed += [eid for eid, _ in rows]
        if removed:
            self._scrub(space)
        return removed

    def _scrub(self, space: str) -> None:
        """Zero the slots that committed deletes freed, then forget them (deleted bytes must not
        linger in the file). A failure here loses nothing: the slots stay listed for next time."""
        try:
            with self._transaction() as db:
                _, generation = self._space_row(space)
                slots = [r[0] for r in db.execute(
                    "SELECT slot FROM scrubs WHERE space = ? AND generation = ? AND slot NOT IN "
                    "(SELECT slot FROM episodes WHERE space = ?) ORDER BY slot",
                    (space, generation, space),
                )]
                if slots:
                    self._zero_slots(space, generation, slots)
                db.execute("DELETE FROM scrubs WHERE space = ?", (space,))
        except StoreError as error:
            warnings.warn(f"{error}; the deleted vectors will be zeroed by the next delete, compact or "
                          "open of the store", RuntimeWarning, stacklevel=3)

    def _zero_slots(self, space: str, generation: int, slots: list[int]) -> None:
        path = self._vector_path(space, generation)
        try:
            fd = self._writer(space, generation)
            size = os.fstat(fd).st_size // self._row_bytes
            zeros = memoryview(bytes(min(_ZEROS, len(slots) * self._row_bytes)))
            for first, count in _runs([s for s in slots if s < size]):
                start, end = first * self._row_bytes, (first + count) * self._row_bytes
                for offset in range(start, end, len(zeros)):
                    self._write_all(fd, zeros[: min(len(zeros), end - offset)], offset)
            self._sync(fd, space, generation)
        except OSError as error:
            self._forget(self._writers, space)
            raise self._os_error(error, f"zeroing {len(slots)} deleted vectors in {path}") from error

    def _finish_scrubs(self) -> None:
        """Zero what deletes interrupted by a crash left behind."""
        with self._lock:
            pending = [r[0] for r in self._db.execute("SELECT DISTINCT space FROM scrubs")]
        for space in pending:
            self._scrub(space)

    def compact(self, space: str | None = None) -> dict[str, int]:
        """Rewrite each vector file with live rows only, then VACUUM and truncate the WAL.

        A space with damaged rows is refused (``repair()`` them first): compacting would make the
        damage look like data.
        """
        report: dict[str, int] = {}
        for name in [space] if space else self.spaces():
            with self._transaction() as db:
                next_slot, generation = self._space_row(name)
                rows = db.execute(
                    "SELECT seq, slot, crc, id FROM episodes WHERE space = ? ORDER BY seq", (name,)
                ).fetchall()
                vectors, problems = self._load(name, generation, rows, slot_col=1, crc_col=2)
                if problems:
                    raise StoreError(self._damaged(name, rows, problems, id_col=3) + ", then compact")
                self._write_generation(name, generation + 1, vectors)
                # Slots are unique per space, so shift them out of the way before renumbering.
                db.execute("UPDATE episodes SET slot = -slot - 1 WHERE space = ?", (name,))
                db.executemany(
                    "UPDATE episodes SET slot = ? WHERE seq = ?",
                    [(i, row[0]) for i, row in enumerate(rows)],
                )
                db.execute("DELETE FROM scrubs WHERE space = ?", (name,))
                db.execute(
                    "UPDATE spaces SET next_slot = ?, generation = ? WHERE name = ?",
                    (len(rows), generation + 1, name),
                )
                lexical.rebuild(db)
            report[name] = next_slot - len(rows)
            self._remove_stale_vectors(name)
        with self._lock:
            try:
                self._db.execute("VACUUM")
                # Old page images (deleted payloads included) live in the WAL until it is truncated,
                # which a reader in another connection can block for a while.
                for _ in range(50):
                    busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                    if not busy:
                        break
                    time.sleep(0.1)
                else:
                    raise RuntimeError(
                        f"compact: another connection to {self.path} kept reading, so the write-ahead "
                        "log still holds deleted data; run compact() again when it is idle"
                    )
            except sqlite3.OperationalError as error:
                raise self._sqlite_error(error, "compacting the database (VACUUM)") from error
        return report

    def _remove_stale_vectors(self, space: str) -> None:
        """Remove the space's files other than its current generation's: older generations and
        files of compactions that crashed. Under the write lock, so no compaction is midway."""
        try:
            with self._transaction():
                _, generation = self._space_row(space)
                self._forget(self._readers, space, keep=generation)
                self._forget(self._writers, space, keep=generation)
                current = self._vector_path(space, generation).name
                stale = [p for p in self._vectors.iterdir() if p.name != current
                         and (m := _VECTOR_FILE.match(p.name)) and m["space"] == space]
                for path in stale:
                    with contextlib.suppress(FileNotFoundError):  # another process was first
                        _io.unlink(path)
                if stale and self.durable:
                    _io.fsync_dir(self._vectors)
        except OSError as error:
            warnings.warn(f"{self._os_error(error, 'removing old vector files')}; the next compact "
                          "removes them", RuntimeWarning, stacklevel=3)

    def count(self, space: str, kind: str | None = None) -> int:
        with self._lock:
            if kind is None:
                row = self._db.execute("SELECT COUNT(*) FROM episodes WHERE space = ?", (space,))
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM episodes WHERE space = ? AND kind = ?", (space, kind)
                )
            return int(row.fetchone()[0])

    def index_rows(self, space: str, after_seq: int = -1) -> IndexRows:
        """Live rows after ``after_seq``; rows whose vector is damaged are left out, with a warning."""

        def fetch(db: sqlite3.Connection) -> list[tuple]:
            return db.execute(
                "SELECT seq, id, slot, crc, kind, stability, last_access FROM episodes "
                "WHERE space = ? AND seq > ? ORDER BY seq",
                (space, after_seq),
            ).fetchall()

        rows, vectors, problems = self._read(space, fetch, slot_col=2, crc_col=3)
        damaged = [rows[i][1] for i in sorted(problems)]
        if problems:
            warnings.warn(f"{self._damaged(space, rows, problems, id_col=1)}; recall leaves them out",
                          RuntimeWarning, stacklevel=2)
            keep = np.array([i not in problems for i in range(len(rows))], dtype=bool)
            rows, vectors = [r for r, k in zip(rows, keep, strict=True) if k], vectors[keep]
        return IndexRows(
            seqs=np.array([r[0] for r in rows], dtype=np.int64),
            ids=[r[1] for r in rows],
            embeddings=vectors,
            kinds=[r[4] for r in rows],
            stability=np.array([r[5] for r in rows], dtype=np.float64),
            last_access=np.array([r[6] for r in rows], dtype=np.float64),
            damaged=damaged,
        )

    def changed(self) -> bool:
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            return True
        return False

    def touch(self, space: str, updates: Iterable[tuple[str, float, float, int]]) -> None:
        updates = list(updates)
        if not updates:
            return
        with self._transaction() as db:
            db.executemany(
                "UPDATE episodes SET stability = ?, last_access = MAX(last_access, ?), "
                "recalls = recalls + ? WHERE space = ? AND id = ?",
                [(s, t, n, space, eid) for eid, s, t, n in updates],
            )

    def mark_replayed(self, space: str, updates: Iterable[tuple[str, float]]) -> None:
        updates = list(updates)
        if not updates:
            return
        with self._transaction() as db:
            db.executemany(
                "UPDATE episodes SET stability = ?, replays = replays + 1 WHERE space = ? AND id = ?",
                [(s, space, eid) for eid, s in updates],
            )

    def scan(self, space: str, after_seq: int = -1, kind: str | None = None) -> list[tuple[int, Episode]]:
        query = f"SELECT {_COLUMNS} FROM episodes WHERE space = ? AND seq > ?"
        params: tuple[Any, ...] = (space, after_seq)
        if kind is not None:
            query += " AND kind = ?"
            params += (kind,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq", params).fetchall()
        empty = np.zeros(0, dtype=np.float32)
        return [(int(r[0]), self._episode(r, empty)) for r in rows]

    # ------------------------------------------------------------------ links

    def add_links(self, space: str, links: Sequence[Link]) -> int:
        if not links:
            return 0
        with self._transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO links (space, src, dst, kind, weight, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(space, k.src, k.dst, k.kind, float(k.weight), k.created or time.time()) for k in links],
            )
            return db.total_changes - before

    def links(self, space: str, ids: Sequence[str] | None = None, kind: str | None = None) -> list[Link]:
        rows: list[tuple] = []
        kind_sql = " AND kind = ?" if kind else ""
        kind_arg: tuple[Any, ...] = (kind,) if kind else ()
        with self._lock:
            if ids is None:
                rows = self._db.execute(
                    f"SELECT src, dst, kind, weight, created FROM links WHERE space = ?{kind_sql}",
                    (space, *kind_arg),
                ).fetchall()
            else:
                for chunk in _chunks(list(ids)):
                    marks = ",".join("?" * len(chunk))
                    rows += self._db.execute(
                        f"SELECT src, dst, kind, weight, created FROM links WHERE space = ? "
                        f"AND (src IN ({marks}) OR dst IN ({marks})){kind_sql}",
                        (space, *chunk, *chunk, *kind_arg),
                    ).fetchall()
        return [Link(*row) for row in dict.fromkeys(rows)]

    def episode_fields(self, space: str, ids: Sequence[str]) -> dict[str, EpisodeFields]:
        with self._lock:
            return lexical.episode_fields(self._db, space, ids)

    def search_text(self, space: str, query: str, limit: int) -> list[tuple[str, float]]:
        """FTS5 query syntax; the score is FTS5's BM25 (negated, so higher is better)."""
        with self._lock:
            return lexical.search(self._db, space, query, limit)

    def nearest(self, space: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Exact: the cosine of every live episode's stored vector (the recall index is faster)."""
        rows = self.index_rows(space)
        return exact_nearest(rows.ids, rows.embeddings, vector, k)

    # ------------------------------------------------------------------ integrity

    def check(self, space: str) -> list[str]:
        """Problems found: rows whose vector is missing or fails its CRC (empty list: consistent)."""

        def fetch(db: sqlite3.Connection) -> list[tuple]:
            return db.execute(
                "SELECT id, slot, crc FROM episodes WHERE space = ? ORDER BY seq", (space,)
            ).fetchall()

        rows, _, problems = self._read(space, fetch, slot_col=1, crc_col=2)
        with self._lock:
            text_problems = lexical.check(self._db, space)
        return text_problems + [f"{rows[i][0]}: {problems[i]}" for i in sorted(problems)]

    def repair(self, space: str) -> list[str]:
        """Drop the rows (and their links) whose vector is missing or fails its CRC, so that the
        space is consistent again; returns their ids. What is left of their vectors is zeroed."""
        with self._transaction() as db:
            _, generation = self._space_row(space)
            rows = db.execute(
                "SELECT id, slot, crc FROM episodes WHERE space = ? ORDER BY seq", (space,)
            ).fetchall()
            self._forget(self._readers, space)
            _, problems = self._load(space, generation, rows, slot_col=1, crc_col=2)
            damaged = [rows[i][0] for i in sorted(problems)]
            for chunk in _chunks(damaged):
                _delete_rows(db, space, chunk)
            db.executemany("INSERT OR IGNORE INTO scrubs VALUES (?, ?, ?)",
                           [(space, generation, rows[i][1]) for i in problems])
        if damaged:
            self._scrub(space)
        return damaged

    def close(self) -> None:
        with self._lock:
            for files in (self._readers, self._writers):
                for fd in files.values():
                    os.close(fd)
                files.clear()
            self._db.close()
