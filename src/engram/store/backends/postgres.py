"""The shared backend: PostgreSQL with pgvector, so that engine processes on several machines
use one store (``MemoryStore("postgresql://user@host/db")``, extra ``engram[postgres]``).

One database (or one schema, through ``search_path`` in the URL) holds one store::

    engram_meta       schema version, dimension
    engram_spaces     one row per space: its JSON state, a change counter, the write lock
    engram_episodes   one row per episode: embedding (``vector(dim)``, an HNSW index for
                      ``nearest`` once the store is large), payload, decay fields, text (a
                      generated ``tsvector`` with a GIN index for ``search_text``), who, session
    engram_links      typed links between episodes of a space

Where SQLite takes its database-wide write lock, a write here locks its space's row
(``SELECT … FOR UPDATE``): writers of one space queue, writers of different spaces do not, and
sequence numbers are drawn under that lock, so they increase in commit order within a space
(what the recall index's incremental sync relies on). Creating the schema takes an advisory
lock, so processes that start together do not race. A write commits before it returns
(``synchronous_commit`` on, or off for ``durable=False``: a server crash may then lose the last
commits, never half of one). ``compact`` runs ``VACUUM FULL``, which rewrites the tables into new
files so that deleted rows are gone from them (the write-ahead log keeps them until the server
recycles it). ``changed`` compares the sum of the spaces' change counters with what this
connection last saw, counting its own commits.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from engram.store.backend import (
    Episode,
    EpisodeFields,
    IndexRows,
    Link,
    StorageBackend,
    StoreError,
    check_space_name,
    encode_payload,
)

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format
    from psycopg.types.json import Jsonb
except ImportError as missing:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "a postgresql:// store needs psycopg 3: pip install 'engram[postgres]'"
    ) from missing

SCHEMA_VERSION = 1
_SCHEMA_LOCK = 0x656E6772616D  # advisory lock key ("engram") taken while the schema is created
_COLUMNS = ("seq, id, kind, timestamp, payload, reward, salience, tags, unfinished, stability, "
            "last_access, recalls, replays")
_COPY = ("COPY engram_episodes (space, seq, id, embedding, kind, timestamp, payload, reward, salience, "
         "tags, unfinished, stability, last_access, recalls, replays, text, who, session) "
         "FROM STDIN (FORMAT BINARY)")
_COPY_TYPES = ("text", "int8", "text", "vector", "text", "float8", "text", "float8", "float8", "text",
               "bool", "float8", "float8", "int4", "int4", "text", "text", "jsonb")
_INSERT = ("INSERT INTO engram_episodes (space, seq, id, embedding, kind, timestamp, payload, reward, "
           "salience, tags, unfinished, stability, last_access, recalls, replays, text, who, session) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


class _Vector:
    """A float32 embedding on its way to a ``vector`` column (binary form, no text round trip)."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray):
        self.values = values


class _VectorDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: _Vector) -> bytes:
        values = np.asarray(obj.values, dtype=">f4").reshape(-1)
        return np.array([len(values), 0], dtype=">u2").tobytes() + values.tobytes()


class _VectorLoader(Loader):
    format = Format.BINARY

    def load(self, data: Any) -> np.ndarray:
        # pgvector's binary form: dimensions (int16), unused (int16), then big-endian float32s
        return np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)


def _hnsw_index(m: int, ef_construction: int) -> str:
    return (f"CREATE INDEX IF NOT EXISTS engram_episodes_hnsw ON engram_episodes USING hnsw "
            f"(embedding vector_cosine_ops) WITH (m = {m}, ef_construction = {ef_construction})")


def _schema(dim: int) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS engram_meta (key text PRIMARY KEY, value text NOT NULL)",
        "CREATE SEQUENCE IF NOT EXISTS engram_seq",
        """CREATE TABLE IF NOT EXISTS engram_spaces (
            name text PRIMARY KEY,
            state text NOT NULL DEFAULT '{}',
            version bigint NOT NULL DEFAULT 0,
            freed bigint NOT NULL DEFAULT 0,
            created double precision NOT NULL)""",
        "CREATE UNIQUE INDEX IF NOT EXISTS engram_spaces_folded ON engram_spaces (lower(name))",
        f"""CREATE TABLE IF NOT EXISTS engram_episodes (
            space text NOT NULL REFERENCES engram_spaces (name),
            seq bigint NOT NULL,
            id text NOT NULL,
            embedding vector({dim}) NOT NULL,
            kind text NOT NULL,
            timestamp double precision NOT NULL,
            payload text NOT NULL,
            reward double precision NOT NULL,
            salience double precision NOT NULL,
            tags text NOT NULL,
            unfinished boolean NOT NULL,
            stability double precision NOT NULL,
            last_access double precision NOT NULL,
            recalls integer NOT NULL,
            replays integer NOT NULL,
            text text NOT NULL,
            who text,
            session jsonb,
            words tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
            PRIMARY KEY (space, id))""",
        "CREATE UNIQUE INDEX IF NOT EXISTS engram_episodes_order ON engram_episodes (space, seq)",
        "CREATE INDEX IF NOT EXISTS engram_episodes_words ON engram_episodes USING gin (words)",
        """CREATE TABLE IF NOT EXISTS engram_links (
            space text NOT NULL,
            src text NOT NULL,
            dst text NOT NULL,
            kind text NOT NULL,
            weight double precision NOT NULL,
            created double precision NOT NULL,
            PRIMARY KEY (space, src, dst, kind))""",
        "CREATE INDEX IF NOT EXISTS engram_links_dst ON engram_links (space, dst)",
    ]


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _no_nul(value: str | None, name: str) -> str | None:
    """PostgreSQL text cannot hold NUL characters: refuse them by name instead of failing late."""
    if value is not None and "\x00" in value:
        raise ValueError(f"{name}: PostgreSQL cannot store the NUL character (\\x00), got {value[:40]!r}")
    return value


def holds_store(url: str) -> bool:
    """Whether the database at ``url`` already holds an Engram store (its schema); the database
    is only read. Raises ``StoreError`` when the server cannot be reached."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=30) as db:
            return bool(db.execute("SELECT to_regclass('engram_meta') IS NOT NULL").fetchone()[0])
    except psycopg.Error as error:
        reason = " ".join(str(error).split()) or type(error).__name__  # libpq: several lines
        raise StoreError(f"store {redact(url)}: cannot connect to PostgreSQL ({reason})") from error


class PostgresBackend(StorageBackend):
    """PostgreSQL + pgvector: one database shared by every process and machine that opens its URL.

    Args:
        url: a libpq connection URL (``postgresql://user:password@host:5432/db``).
        dim: embedding dimension; fixed when the store is created, checked when it is opened
            (None: use the stored one, 768 for a new store).
        durable: ``synchronous_commit`` on (a returned write survives a server crash) or off.
        hnsw_above: the HNSW index is built once the store has held more episodes than this
            (one bulk build, then incremental inserts); below, ``nearest`` scans exactly, and
            ingest does not pay HNSW's per-row insertion cost. 0: from the first episode.
        hnsw_m, hnsw_ef_construction: the HNSW index's parameters, used when it is built.
        ef_search: candidates HNSW keeps while searching (``hnsw.ef_search``); higher is slower
            and closer to exact. ``nearest`` asks for at least ``k``.

    Raises ``StoreError`` naming the server (password left out) when it cannot be reached or the
    ``vector`` extension cannot be created.
    """

    local = False  # every read is a round trip to the database

    def __init__(self, url: str, dim: int | None = None, durable: bool = True, *, hnsw_above: int = 10_000,
                 hnsw_m: int = 16, hnsw_ef_construction: int = 64, ef_search: int = 100):
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"url: expected a postgresql:// connection URL, got {url!r}")
        self.url = url
        self.location = redact(url)
        self.durable = bool(durable)
        if isinstance(hnsw_above, bool) or not isinstance(hnsw_above, (int, np.integer)) or hnsw_above < 0:
            raise ValueError(f"hnsw_above: expected a non-negative integer, got {hnsw_above!r}")
        self.hnsw_above = int(hnsw_above)
        self._m = _positive(hnsw_m, "hnsw_m")
        self._ef_construction = _positive(hnsw_ef_construction, "hnsw_ef_construction")
        self.ef_search = _positive(ef_search, "ef_search")
        self._lock = threading.RLock()
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=30)
        except psycopg.Error as error:
            reason = " ".join(str(error).split()) or type(error).__name__  # libpq: several lines
            raise StoreError(f"store {self.location}: cannot connect to PostgreSQL ({reason})") from error
        try:
            self._open(dim)
        except BaseException:
            self._db.close()
            raise

    # ---------------------------------------------------------------- opening

    def _open(self, dim: int | None) -> None:
        with self._errors("creating the extension vector"), self._db.transaction():
            # the advisory lock: processes opening a new database together create it once
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            if not self._db.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
                try:
                    with self._db.transaction():  # a savepoint: the error must not end the lock's
                        self._db.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg.Error as error:
                    raise StoreError(
                        f"store {self.location}: the pgvector extension is not enabled and this user "
                        f"cannot enable it ({error}); run CREATE EXTENSION vector; in this database as "
                        "a user allowed to (see docs/engine/postgres.md)"
                    ) from error
        info = psycopg.types.TypeInfo.fetch(self._db, "vector")
        info.register(self._db)  # by name too, for COPY's column types
        self._db.adapters.register_loader(info.oid, _VectorLoader)
        dumper = type("_BoundVectorDumper", (_VectorDumper,), {"oid": info.oid})
        self._db.adapters.register_dumper(_Vector, dumper)
        if not self.durable:
            self._db.execute("SET synchronous_commit = off")
        with self._errors("creating the schema"), self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            meta = dict(self._db.execute(
                "SELECT key, value FROM engram_meta").fetchall()) if self._has_schema() else {}
            if not meta:
                self.dim = 768 if dim is None else _positive(dim, "dim")
                for statement in _schema(self.dim):
                    self._db.execute(statement)
                self._db.execute("INSERT INTO engram_meta VALUES ('schema_version', %s), ('dim', %s)",
                                 (str(SCHEMA_VERSION), str(self.dim)))
            else:
                version = int(meta["schema_version"])
                if version > SCHEMA_VERSION:
                    raise ValueError(f"path: store {self.location} has schema version {version}, newer "
                                     f"than this Engram ({SCHEMA_VERSION}); upgrade Engram to open it")
                self.dim = int(meta["dim"])
                if dim is not None and _positive(dim, "dim") != self.dim:
                    raise ValueError(f"dim: store {self.location} holds {self.dim}-dimensional "
                                     f"embeddings, got dim={dim}")
        self._seen = self._version()
        self._hnsw = self._read("SELECT to_regclass('engram_episodes_hnsw') IS NOT NULL", ())[0][0]
        if not self._hnsw and self.hnsw_above == 0:
            self._build_hnsw()

    def _build_hnsw(self) -> None:
        """Build the HNSW index (once per store: an advisory lock and IF NOT EXISTS make the
        processes that cross the threshold together build it once). Writers wait meanwhile."""
        with self._lock, self._errors("building the HNSW index"), self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            self._db.execute(_hnsw_index(self._m, self._ef_construction))
            self._db.execute("ANALYZE engram_episodes")  # row estimates for the planner
        self._hnsw = True

    def _grown(self, last_seq: int) -> None:
        """After a commit: build the index once the store has held more than ``hnsw_above``."""
        if not self._hnsw and last_seq > self.hnsw_above:
            self._build_hnsw()

    def _has_schema(self) -> bool:
        return self._db.execute("SELECT to_regclass('engram_meta') IS NOT NULL").fetchone()[0]

    # ---------------------------------------------------------------- errors and transactions

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """PostgreSQL's errors as ones naming the store; bad input stays a ValueError."""
        try:
            yield
        except (pg_errors.DataError, pg_errors.IntegrityError) as error:
            raise ValueError(f"store {self.location}: PostgreSQL refused the data while {doing}: "
                             f"{str(error).splitlines()[0]}") from error
        except psycopg.Error as error:
            hint = ("no space left on the server's disk" if isinstance(error, pg_errors.DiskFull)
                    else str(error).splitlines()[0] if str(error) else type(error).__name__)
            raise StoreError(f"store {self.location}: {hint} while {doing}") from error

    @contextmanager
    def _write(self, space: str, doing: str) -> Iterator[psycopg.Connection]:
        """A transaction holding the space's write lock (its row, FOR UPDATE); bumps the space's
        change counter, and counts the bump as seen once it has committed."""
        with self._lock, self._errors(doing):
            with self._db.transaction():
                if not self._db.execute("SELECT 1 FROM engram_spaces WHERE name = %s FOR UPDATE",
                                        (space,)).fetchone():
                    raise ValueError(f"space: no memory space named {space!r} in {self.location}")
                yield self._db
                self._db.execute("UPDATE engram_spaces SET version = version + 1 WHERE name = %s", (space,))
            self._seen += 1

    def _read(self, query: str, params: Sequence[Any], binary: bool = False) -> list[tuple]:
        with self._lock, self._errors("reading"), self._db.cursor(binary=binary) as cursor:
            return cursor.execute(query, params).fetchall()

    def _version(self) -> int:
        return int(self._read("SELECT coalesce(sum(version), 0) FROM engram_spaces", ())[0][0])

    def _exists(self, space: str) -> None:
        if not self._read("SELECT 1 FROM engram_spaces WHERE name = %s", (space,)):
            raise ValueError(f"space: no memory space named {space!r} in {self.location}")

    # ---------------------------------------------------------------- spaces and state

    def ensure_space(self, space: str) -> None:
        check_space_name(space)
        if self._read("SELECT 1 FROM engram_spaces WHERE name = %s", (space,)):
            return
        with self._lock, self._errors("creating a space"):
            try:
                self._db.execute("INSERT INTO engram_spaces (name, created) VALUES (%s, %s) "
                                 "ON CONFLICT (name) DO NOTHING", (space, time.time()))
            except pg_errors.UniqueViolation as error:  # the case-folded index
                clash = self._read("SELECT name FROM engram_spaces WHERE lower(name) = lower(%s)", (space,))
                raise ValueError(f"space: {space!r} differs from the existing space "
                                 f"{clash[0][0] if clash else '?'!r} only in case") from error

    def spaces(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM engram_spaces ORDER BY name", ())]

    def get_state(self, space: str) -> dict[str, Any]:
        rows = self._read("SELECT state FROM engram_spaces WHERE name = %s", (space,))
        if not rows:
            raise ValueError(f"space: no memory space named {space!r} in {self.location}")
        return json.loads(rows[0][0])

    def update_state_with(self, space: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        with self._write(space, "updating the space's state") as db:
            state = json.loads(db.execute("SELECT state FROM engram_spaces WHERE name = %s",
                                          (space,)).fetchone()[0])
            for key, value in change(dict(state)).items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
            db.execute("UPDATE engram_spaces SET state = %s WHERE name = %s", (json.dumps(state), space))

    # ---------------------------------------------------------------- episodes

    def _row(self, space: str, seq: int, e: Episode) -> tuple:
        vector = np.asarray(e.embedding, dtype=np.float32).reshape(-1)
        if vector.shape != (self.dim,):
            raise ValueError(f"embedding: expected {self.dim} values, got {vector.size}")
        return (space, seq, e.id, _Vector(vector), e.kind, e.timestamp, encode_payload(e.payload), e.reward,
                e.salience, json.dumps(list(e.tags)), bool(e.unfinished), e.stability, e.last_access,
                e.recalls, e.replays, _no_nul(e.text, "text") or "", _no_nul(e.who, "who"),
                None if e.session is None else Jsonb(e.session))

    def _seqs(self, db: psycopg.Connection, n: int) -> list[int]:
        """``n`` new sequence numbers (drawn under the space's lock: commit order within a space)."""
        return [r[0] for r in db.execute("SELECT nextval('engram_seq') FROM generate_series(1, %s)", (n,))]

    def insert(self, space: str, episodes: Sequence[Episode]) -> None:
        if not episodes:
            return
        with self._write(space, f"inserting {len(episodes)} episodes") as db:
            ids = [e.id for e in episodes]
            taken = db.execute("SELECT id FROM engram_episodes WHERE space = %s AND id = ANY(%s) LIMIT 1",
                               (space, ids)).fetchone()
            if taken or len(set(ids)) < len(ids):
                duplicate = taken[0] if taken else next(i for i in ids if ids.count(i) > 1)
                raise ValueError(f"id: an episode with id {duplicate!r} is already in space {space!r}")
            seqs = self._seqs(db, len(episodes))
            rows = [self._row(space, seq, e) for seq, e in zip(seqs, episodes, strict=True)]
            with db.cursor() as cursor, cursor.copy(_COPY) as copy:
                copy.set_types(_COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
        self._grown(seqs[-1])

    def upsert_semantic(self, space: str, episode: Episode) -> None:
        with self._write(space, "writing a prototype") as db:
            seq = self._seqs(db, 1)[0]
            row = self._row(space, seq, episode)
            if db.execute("DELETE FROM engram_episodes WHERE space = %s AND id = %s",
                          (space, episode.id)).rowcount:
                db.execute("UPDATE engram_spaces SET freed = freed + 1 WHERE name = %s", (space,))
            db.execute(_INSERT, row)
        self._grown(seq)

    @staticmethod
    def _episode(row: Sequence[Any], embedding: np.ndarray) -> Episode:
        (_, eid, kind, timestamp, payload, reward, salience, tags, unfinished, stability, last_access,
         recalls, replays) = row[:13]
        return Episode(
            id=eid, embedding=embedding, payload=json.loads(payload), timestamp=timestamp, reward=reward,
            salience=salience, tags=tuple(json.loads(tags)), unfinished=bool(unfinished), kind=kind,
            stability=stability, last_access=last_access, recalls=recalls, replays=replays,
        )

    def get(self, space: str, ids: Sequence[str], with_embeddings: bool = True) -> dict[str, Episode]:
        ids = list(ids)
        self._exists(space)
        if with_embeddings:
            rows = self._read(f"SELECT {_COLUMNS}, embedding FROM engram_episodes WHERE space = %s "
                              "AND id = ANY(%s)", (space, ids), binary=True)
            return {r[1]: self._episode(r, r[13]) for r in rows}
        rows = self._read(f"SELECT {_COLUMNS} FROM engram_episodes WHERE space = %s AND id = ANY(%s)",
                          (space, ids))
        empty = np.zeros(0, dtype=np.float32)
        return {r[1]: self._episode(r, empty) for r in rows}

    def delete(self, space: str, ids: Sequence[str]) -> list[str]:
        ids = list(dict.fromkeys(ids))
        with self._write(space, f"deleting {len(ids)} episodes") as db:
            removed = [r[0] for r in db.execute(
                "DELETE FROM engram_episodes WHERE space = %s AND id = ANY(%s) RETURNING id", (space, ids))]
            if removed:
                db.execute("DELETE FROM engram_links WHERE space = %s AND (src = ANY(%s) OR dst = ANY(%s))",
                           (space, removed, removed))
                db.execute("UPDATE engram_spaces SET freed = freed + %s WHERE name = %s",
                           (len(removed), space))
        order = {eid: i for i, eid in enumerate(ids)}
        return sorted(removed, key=order.__getitem__)

    def compact(self, space: str | None = None) -> dict[str, int]:
        """``VACUUM FULL`` of the episode and link tables (new files without deleted rows; it holds
        an exclusive lock on them while it runs, so other processes wait)."""
        names = [space] if space else self.spaces()
        for name in names:
            self._exists(name)
        freed = dict(self._read("SELECT name, freed FROM engram_spaces WHERE name = ANY(%s)", (names,)))
        with self._lock, self._errors("compacting (VACUUM FULL; it needs the tables' owner)"):
            self._db.execute("VACUUM FULL engram_episodes, engram_links")
        for name in names:
            with self._write(name, "compacting") as db:
                db.execute("UPDATE engram_spaces SET freed = freed - %s WHERE name = %s", (freed[name], name))
        return {name: int(freed[name]) for name in names}

    def count(self, space: str, kind: str | None = None) -> int:
        self._exists(space)
        if kind is None:
            return int(self._read("SELECT count(*) FROM engram_episodes WHERE space = %s", (space,))[0][0])
        return int(self._read("SELECT count(*) FROM engram_episodes WHERE space = %s AND kind = %s",
                              (space, kind))[0][0])

    def scan(self, space: str, after_seq: int = -1, kind: str | None = None) -> list[tuple[int, Episode]]:
        self._exists(space)
        query = f"SELECT {_COLUMNS} FROM engram_episodes WHERE space = %s AND seq > %s"
        params: tuple[Any, ...] = (space, after_seq)
        if kind is not None:
            query, params = query + " AND kind = %s", (*params, kind)
        empty = np.zeros(0, dtype=np.float32)
        return [(int(r[0]), self._episode(r, empty)) for r in self._read(query + " ORDER BY seq", params)]

    def episode_fields(self, space: str, ids: Sequence[str]) -> dict[str, EpisodeFields]:
        rows = self._read("SELECT id, timestamp, tags, text, who, session FROM engram_episodes "
                          "WHERE space = %s AND id = ANY(%s)", (space, list(ids)))
        return {eid: EpisodeFields(timestamp, tuple(json.loads(tags)), text, who, session)
                for eid, timestamp, tags, text, who, session in rows}

    def touch(self, space: str, updates: Iterable[tuple[str, float, float, int]]) -> None:
        updates = list(updates)
        if not updates:
            return
        with self._write(space, "recording recalls") as db, db.cursor() as cursor:
            cursor.executemany(
                "UPDATE engram_episodes SET stability = %s, last_access = greatest(last_access, %s), "
                "recalls = recalls + %s WHERE space = %s AND id = %s",
                [(s, t, n, space, eid) for eid, s, t, n in updates])

    def mark_replayed(self, space: str, updates: Iterable[tuple[str, float]]) -> None:
        updates = list(updates)
        if not updates:
            return
        with self._write(space, "recording replays") as db, db.cursor() as cursor:
            cursor.executemany("UPDATE engram_episodes SET stability = %s, replays = replays + 1 "
                               "WHERE space = %s AND id = %s", [(s, space, eid) for eid, s in updates])

    # ---------------------------------------------------------------- what recall reads

    def index_rows(self, space: str, after_seq: int = -1) -> IndexRows:
        self._exists(space)
        rows = self._read("SELECT seq, id, kind, stability, last_access, embedding FROM engram_episodes "
                          "WHERE space = %s AND seq > %s ORDER BY seq", (space, after_seq), binary=True)
        return IndexRows(
            seqs=np.array([r[0] for r in rows], dtype=np.int64),
            ids=[r[1] for r in rows],
            embeddings=(np.stack([r[5] for r in rows]) if rows else np.zeros((0, self.dim), np.float32)),
            kinds=[r[2] for r in rows],
            stability=np.array([r[3] for r in rows], dtype=np.float64),
            last_access=np.array([r[4] for r in rows], dtype=np.float64),
        )

    def changed(self) -> bool:
        version = self._version()
        if version != self._seen:
            self._seen = version
            return True
        return False

    def search_text(self, space: str, query: str, limit: int) -> list[tuple[str, float]]:
        """``websearch_to_tsquery`` syntax (words, "a phrase", or, -word) with English stemming;
        the score is ``ts_rank_cd`` (cover density), not BM25."""
        rows = self._read(
            "SELECT id, ts_rank_cd(words, q) AS score FROM engram_episodes, "
            "websearch_to_tsquery('english', %s) q WHERE space = %s AND words @@ q "
            "ORDER BY score DESC, seq LIMIT %s", (query, space, limit))
        return [(eid, float(score)) for eid, score in rows]

    def nearest(self, space: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Through the HNSW index once it is built (an exact scan before); where its candidates
        hold fewer than ``k`` of this space's episodes (a small space among large ones: pgvector
        filters after the index scan), an exact scan of the space answers instead."""
        k = _positive(k, "k")
        cue = _Vector(np.asarray(vector, dtype=np.float32).reshape(-1))
        query = ("SELECT id, 1 - (embedding <=> %s) FROM engram_episodes WHERE space = %s "
                 "ORDER BY embedding <=> %s LIMIT %s")
        with self._lock, self._errors("searching"), self._db.transaction():
            self._db.execute(f"SET LOCAL hnsw.ef_search = {max(self.ef_search, k)}")
            if self._hnsw:
                # a sort is what any other plan needs; with stale row estimates (a bulk load
                # autovacuum has not analysed yet) the planner would otherwise scan and sort
                self._db.execute("SET LOCAL enable_sort = off")
            rows = self._db.execute(query, (cue, space, cue, k)).fetchall()
            if len(rows) < k and len(rows) < self.count(space):
                self._db.execute("SET LOCAL enable_sort = on")
                self._db.execute("SET LOCAL enable_indexscan = off")
                rows = self._db.execute(query, (cue, space, cue, k)).fetchall()
        return [(eid, float(score)) for eid, score in rows]

    # ---------------------------------------------------------------- links

    def add_links(self, space: str, links: Sequence[Link]) -> int:
        if not links:
            return 0
        rows = [(space, k.src, k.dst, k.kind, float(k.weight), k.created or time.time()) for k in links]
        with self._write(space, "adding links") as db:
            new = 0
            with db.cursor() as cursor:
                cursor.executemany("INSERT INTO engram_links VALUES (%s, %s, %s, %s, %s, %s) "
                                   "ON CONFLICT DO NOTHING", rows, returning=False)
                new = cursor.rowcount
            return max(new, 0)

    def links(self, space: str, ids: Sequence[str] | None = None, kind: str | None = None) -> list[Link]:
        query, params = "SELECT src, dst, kind, weight, created FROM engram_links WHERE space = %s", [space]
        if ids is not None:
            query += " AND (src = ANY(%s) OR dst = ANY(%s))"
            params += [list(ids), list(ids)]
        if kind:
            query += " AND kind = %s"
            params.append(kind)
        return [Link(*row) for row in self._read(query, params)]

    # ---------------------------------------------------------------- integrity

    def _problems(self, space: str) -> list[tuple[str, str]]:
        """(episode id, what is wrong): embeddings recall can never find, text whose search
        vector disagrees with it, links to episodes that are gone."""
        self._exists(space)
        rows = self._read(
            "SELECT id, 'embedding has zero norm' FROM engram_episodes WHERE space = %s "
            "AND vector_norm(embedding) = 0 UNION ALL "
            "SELECT id, 'full-text vector disagrees with the text' FROM engram_episodes WHERE space = %s "
            "AND words IS DISTINCT FROM to_tsvector('english', text) UNION ALL "
            "SELECT l.src || ' -> ' || l.dst, 'link to an episode that does not exist' FROM engram_links l "
            "WHERE l.space = %s AND NOT (EXISTS (SELECT 1 FROM engram_episodes e WHERE e.space = l.space "
            "AND e.id = l.src) AND EXISTS (SELECT 1 FROM engram_episodes e WHERE e.space = l.space "
            "AND e.id = l.dst))", (space, space, space))
        return [(r[0], r[1]) for r in rows]

    def check(self, space: str) -> list[str]:
        return [f"{what}: {why}" for what, why in self._problems(space)]

    def repair(self, space: str) -> list[str]:
        """Drop episodes with a zero-norm embedding or a stale text vector, and dangling links."""
        problems = self._problems(space)
        damaged = [eid for eid, why in problems if not why.startswith("link")]
        removed = self.delete(space, damaged) if damaged else []
        with self._write(space, "removing dangling links") as db:
            db.execute(
                "DELETE FROM engram_links l WHERE l.space = %s AND NOT (EXISTS (SELECT 1 FROM "
                "engram_episodes e WHERE e.space = l.space AND e.id = l.src) AND EXISTS (SELECT 1 FROM "
                "engram_episodes e WHERE e.space = l.space AND e.id = l.dst))", (space,))
        return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["PostgresBackend", "redact"]
