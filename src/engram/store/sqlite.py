"""The embedded backend: SQLite (WAL) for metadata, payloads and links; a float32 array per space.

Layout of a store directory::

    engram.sqlite3            episodes, links, spaces, meta (schema version, dimension)
    vectors/<space>.<gen>.f32 row ``slot`` holds the embedding of the episode with that slot

A write allocates slots, writes the vectors and fsyncs them, then commits the rows that point
at them, all under SQLite's write lock: a crash before the commit leaves only unreferenced
slots (reused by the next writer), a crash after it loses nothing. Each row keeps a CRC-32 of
its vector so ``check()`` can prove every acknowledged row is intact.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engram.store import lexical
from engram.store.backend import Episode, EpisodeFields, IndexRows, Link, StorageBackend

SCHEMA_VERSION = 1
_SPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CHUNK = 500  # ids per "IN (...)" query, below SQLite's variable limit
MAX_PAYLOAD_BYTES = 256 * 1024

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
CREATE INDEX IF NOT EXISTS links_dst ON links (space, dst);
CREATE INDEX IF NOT EXISTS episodes_order ON episodes (space, seq);
"""

_COLUMNS = (
    "seq, id, slot, crc, kind, timestamp, payload, reward, salience, tags, unfinished, "
    "stability, last_access, recalls, replays"
)


def check_space_name(space: Any) -> str:
    """A space name is 1–64 characters of letters, digits, '_', '.', '-' (it names a file)."""
    if not isinstance(space, str) or not _SPACE_NAME.match(space):
        raise ValueError(
            f"space: expected 1-64 characters of letters, digits, '_', '.', '-' starting with a "
            f"letter or digit, got {space!r}"
        )
    return space


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class SQLiteBackend(StorageBackend):
    """SQLite in WAL mode plus memory-mapped vector files, in one directory.

    Args:
        path: the store directory (created if absent).
        dim: embedding dimension; fixed when the store is created, checked when it is opened
            (None: use the stored one, 768 for a new store).
        durable: fsync vectors and use ``synchronous=FULL`` so that a committed write survives
            power loss, not only a process crash.
    """

    def __init__(self, path: str | os.PathLike[str], dim: int | None = None, durable: bool = True):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"path: expected a directory for the store, got the file {self.path}")
        (self.path / "vectors").mkdir(parents=True, exist_ok=True)
        self.durable = bool(durable)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.path / "engram.sqlite3", timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        # Deleted payloads are overwritten with zeros in the database pages, not just unlinked.
        self._db.execute("PRAGMA secure_delete=ON")
        self._files: dict[tuple[str, int], int] = {}
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
        self._row_bytes = self.dim * 4
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]

    @staticmethod
    def _check_dim(dim: Any) -> int:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        return int(dim)

    # ------------------------------------------------------------------ plumbing

    class _Txn:
        def __init__(self, backend: SQLiteBackend):
            self.backend = backend

        def __enter__(self) -> sqlite3.Connection:
            self.backend._lock.acquire()
            try:
                self.backend._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.backend._lock.release()
                raise
            return self.backend._db

        def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
            try:
                self.backend._db.execute("COMMIT" if kind is None else "ROLLBACK")
            finally:
                self.backend._lock.release()

    def _transaction(self) -> SQLiteBackend._Txn:
        """A write transaction holding SQLite's write lock (other writers wait)."""
        return SQLiteBackend._Txn(self)

    def _space_row(self, space: str) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT next_slot, generation FROM spaces WHERE name = ?", (space,)
        ).fetchone()
        if row is None:
            raise ValueError(f"space: no memory space named {space!r} in {self.path}")
        return int(row[0]), int(row[1])

    def _vector_path(self, space: str, generation: int) -> Path:
        return self.path / "vectors" / f"{space}.{generation}.f32"

    def _fd(self, space: str, generation: int) -> int:
        key = (space, generation)
        if key not in self._files:
            stale = [k for k in self._files if k[0] == space]
            for k in stale:
                os.close(self._files.pop(k))
            self._files[key] = os.open(self._vector_path(space, generation), os.O_RDWR | os.O_CREAT, 0o644)
        return self._files[key]

    def _read_slots(self, space: str, generation: int, slots: np.ndarray) -> np.ndarray:
        """Embeddings at ``slots`` (k, d) from the space's current vector file."""
        if len(slots) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        fd = self._fd(space, generation)
        size = os.fstat(fd).st_size // self._row_bytes
        if len(slots) <= 64:
            rows = [os.pread(fd, self._row_bytes, int(s) * self._row_bytes) for s in slots]
            return np.frombuffer(b"".join(rows), dtype=np.float32).reshape(len(slots), self.dim).copy()
        array = np.memmap(self._vector_path(space, generation), dtype=np.float32, mode="r",
                          shape=(size, self.dim))
        return np.asarray(array[slots])

    def _write_slots(self, space: str, generation: int, first: int, vectors: np.ndarray) -> None:
        fd = self._fd(space, generation)
        os.pwrite(fd, np.ascontiguousarray(vectors, dtype=np.float32).tobytes(), first * self._row_bytes)
        if self.durable:
            os.fsync(fd)

    # ------------------------------------------------------------------ spaces and state

    def ensure_space(self, space: str) -> None:
        check_space_name(space)
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM spaces WHERE name = ?", (space,)).fetchone()
        if not exists:
            with self._transaction() as db:
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
        with self._transaction() as db:
            row = db.execute("SELECT state FROM spaces WHERE name = ?", (space,)).fetchone()
            if row is None:
                raise ValueError(f"space: no memory space named {space!r} in {self.path}")
            state = json.loads(row[0])
            for key, value in changes.items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
            db.execute("UPDATE spaces SET state = ? WHERE name = ?", (json.dumps(state), space))

    # ------------------------------------------------------------------ episodes

    @staticmethod
    def _encode(payload: dict[str, Any]) -> str:
        """JSON text of a payload; NaN, non-JSON values and oversized payloads raise ValueError."""
        try:
            text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"payload: expected JSON-serialisable data without NaN: {error}") from error
        if len(text) > MAX_PAYLOAD_BYTES // 4 and len(text.encode()) > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"payload: expected at most {MAX_PAYLOAD_BYTES} bytes of JSON, got {len(text.encode())}"
            )
        return text

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
                cls._encode(e.payload),
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
            self._write_slots(space, generation, next_slot, vectors)
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
            self._write_slots(space, generation, next_slot, vector)
            if old is not None:
                db.execute("DELETE FROM episodes WHERE space = ? AND id = ?", (space, episode.id))
                self._write_slots(space, generation, int(old[0]), np.zeros_like(vector))
            db.execute(
                "INSERT INTO episodes (space, id, slot, crc, kind, timestamp, payload, reward, salience, "
                "tags, unfinished, stability, last_access, recalls, replays) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            lexical.delete(db, space, [episode.id])
            lexical.insert(db, space, [episode])
            db.execute("UPDATE spaces SET next_slot = ? WHERE name = ?", (next_slot + 1, space))

    def _episode(self, row: tuple, embedding: np.ndarray) -> Episode:
        (_, eid, _, _, kind, timestamp, payload, reward, salience, tags, unfinished, stability,
         last_access, recalls, replays) = row
        return Episode(
            id=eid, embedding=embedding, payload=json.loads(payload), timestamp=timestamp,
            reward=reward, salience=salience, tags=tuple(json.loads(tags)), unfinished=bool(unfinished),
            kind=kind, stability=stability, last_access=last_access, recalls=recalls, replays=replays,
        )

    def get(self, space: str, ids: Sequence[str], with_embeddings: bool = True) -> dict[str, Episode]:
        found: dict[str, Episode] = {}
        with self._lock:
            _, generation = self._space_row(space)
            for chunk in _chunks(list(ids)):
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM episodes WHERE space = ? "
                    f"AND id IN ({','.join('?' * len(chunk))})",
                    (space, *chunk),
                ).fetchall()
                slots = np.array([r[2] for r in rows], dtype=np.int64)
                vectors = (
                    self._read_slots(space, generation, slots) if with_embeddings
                    else np.zeros((len(rows), 0), dtype=np.float32)
                )
                for row, vector in zip(rows, vectors, strict=True):
                    found[row[1]] = self._episode(row, vector)
        return found

    def delete(self, space: str, ids: Sequence[str]) -> list[str]:
        removed: list[str] = []
        with self._transaction() as db:
            _, generation = self._space_row(space)
            for chunk in _chunks(list(ids)):
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT id, slot FROM episodes WHERE space = ? AND id IN ({marks})", (space, *chunk)
                ).fetchall()
                db.execute(f"DELETE FROM episodes WHERE space = ? AND id IN ({marks})", (space, *chunk))
                lexical.delete(db, space, chunk)
                db.execute(
                    f"DELETE FROM links WHERE space = ? AND (src IN ({marks}) OR dst IN ({marks}))",
                    (space, *chunk, *chunk),
                )
                zeros = np.zeros((1, self.dim), dtype=np.float32)
                for eid, slot in rows:
                    self._write_slots(space, generation, int(slot), zeros)
                    removed.append(eid)
        return removed

    def compact(self, space: str | None = None) -> dict[str, int]:
        """Rewrite each vector file with live rows only, then VACUUM and truncate the WAL."""
        report: dict[str, int] = {}
        for name in [space] if space else self.spaces():
            with self._transaction() as db:
                next_slot, generation = self._space_row(name)
                rows = db.execute(
                    "SELECT seq, slot FROM episodes WHERE space = ? ORDER BY seq", (name,)
                ).fetchall()
                slots = np.array([r[1] for r in rows], dtype=np.int64)
                vectors = self._read_slots(name, generation, slots)
                new_path = self._vector_path(name, generation + 1)
                with open(new_path, "wb") as handle:
                    handle.write(np.ascontiguousarray(vectors).tobytes())
                    handle.flush()
                    os.fsync(handle.fileno())
                # Slots are unique per space, so shift them out of the way before renumbering.
                db.execute("UPDATE episodes SET slot = -slot - 1 WHERE space = ?", (name,))
                db.executemany(
                    "UPDATE episodes SET slot = ? WHERE seq = ?",
                    [(i, seq) for i, (seq, _) in enumerate(rows)],
                )
                db.execute(
                    "UPDATE spaces SET next_slot = ?, generation = ? WHERE name = ?",
                    (len(rows), generation + 1, name),
                )
                lexical.rebuild(db)
            report[name] = next_slot - len(rows)
            self._remove_stale_vectors(name, generation + 1)
        with self._lock:
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
        return report

    def _remove_stale_vectors(self, space: str, generation: int) -> None:
        for key in [k for k in self._files if k[0] == space and k[1] != generation]:
            os.close(self._files.pop(key))
        for path in (self.path / "vectors").glob(f"{space}.*.f32"):
            if path.name != f"{space}.{generation}.f32":
                path.unlink(missing_ok=True)

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
        with self._lock:
            _, generation = self._space_row(space)
            rows = self._db.execute(
                "SELECT seq, id, slot, kind, stability, last_access FROM episodes "
                "WHERE space = ? AND seq > ? ORDER BY seq",
                (space, after_seq),
            ).fetchall()
            slots = np.array([r[2] for r in rows], dtype=np.int64)
            vectors = self._read_slots(space, generation, slots)
        return IndexRows(
            seqs=np.array([r[0] for r in rows], dtype=np.int64),
            ids=[r[1] for r in rows],
            embeddings=vectors,
            kinds=[r[3] for r in rows],
            stability=np.array([r[4] for r in rows], dtype=np.float64),
            last_access=np.array([r[5] for r in rows], dtype=np.float64),
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
        with self._lock:
            return lexical.search(self._db, space, query, limit)

    # ------------------------------------------------------------------ integrity

    def check(self, space: str) -> list[str]:
        """Problems found: rows whose vector is missing or fails its CRC (empty list: consistent)."""
        problems: list[str] = []
        with self._lock:
            problems += lexical.check(self._db, space)
            _, generation = self._space_row(space)
            rows = self._db.execute(
                "SELECT id, slot, crc FROM episodes WHERE space = ?", (space,)
            ).fetchall()
            size = os.fstat(self._fd(space, generation)).st_size // self._row_bytes
            if not rows:
                return problems
            slots = np.array([r[1] for r in rows], dtype=np.int64)
            beyond = slots >= size
            vectors = self._read_slots(space, generation, np.where(beyond, 0, slots))
        for (eid, slot, crc), vector, out in zip(rows, vectors, beyond, strict=True):
            if out:
                problems.append(f"{eid}: slot {slot} is beyond the vector file ({size} rows)")
            elif zlib.crc32(vector.tobytes()) != crc:
                problems.append(f"{eid}: vector at slot {slot} fails its CRC")
        return problems

    def close(self) -> None:
        with self._lock:
            for fd in self._files.values():
                os.close(fd)
            self._files.clear()
            self._db.close()
