"""The storage interface every backend implements, and the records that cross it.

``MemoryStore`` talks only to ``StorageBackend``. The backends (``engram.store.backends``):
SQLite in WAL mode plus one float32 file per space (embedded, the default), PostgreSQL with
pgvector (several processes on several machines share one database), and an in-memory one
for tests of the layers above. The interface holds what the layers above call and nothing of
how a backend keeps its data (files, slots, connections); ``tests/store/test_store_backends.py``
is the conformance suite every backend passes.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.errors import EngramError

MAX_PAYLOAD_BYTES = 256 * 1024
_SPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_space_name(space: Any) -> str:
    """A space name is 1–64 characters of letters, digits, '_', '.', '-' (it names a file)."""
    if not isinstance(space, str) or not _SPACE_NAME.match(space):
        raise ValueError(
            f"space: expected 1-64 characters of letters, digits, '_', '.', '-' starting with a "
            f"letter or digit, got {space!r}"
        )
    return space


def encode_payload(payload: dict[str, Any]) -> str:
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


def exact_nearest(ids: Sequence[str], vectors: np.ndarray, vector: np.ndarray,
                  k: int) -> list[tuple[str, float]]:
    """The ``k`` rows most cosine-similar to ``vector`` by a full scan: (id, cosine), best first."""
    if not len(ids):
        return []
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosines = unit @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
    order = np.argsort(-cosines, kind="stable")[:k]
    return [(ids[i], float(cosines[i])) for i in order]


@dataclass(frozen=True)
class Episode:
    """One stored episode: what happened (embedding, payload), when, and how it matters.

    ``kind`` is ``"episode"`` for what a user added and ``"semantic"`` for a prototype that
    ``sleep()`` made from a cluster of episodes (its sources are linked with kind ``"source"``).
    ``stability`` (seconds) and ``last_access`` (Unix time) drive the decay schedule.
    ``text``, ``who`` (speaker) and ``session`` are the conversation fields recall searches
    and filters on (empty / None for vector-only episodes).
    """

    id: str
    embedding: np.ndarray
    payload: dict[str, Any]
    timestamp: float
    reward: float = 0.0
    salience: float = 0.0
    tags: tuple[str, ...] = ()
    unfinished: bool = False
    kind: str = "episode"
    stability: float = 0.0
    last_access: float = 0.0
    recalls: int = 0
    replays: int = 0
    text: str = ""
    who: str | None = None
    session: int | str | None = None


@dataclass(frozen=True)
class Link:
    """A directed, typed association between two episodes of one space."""

    src: str
    dst: str
    kind: str  # "similar", "temporal", "source", "proposed"
    weight: float
    created: float = 0.0


@dataclass
class IndexRows:
    """What the recall index needs of every live episode: ids, row order and embeddings."""

    seqs: np.ndarray  # (n,) int64, increasing insertion order
    ids: list[str]
    embeddings: np.ndarray  # (n, d) float32, as stored (not normalised)
    kinds: list[str] = field(default_factory=list)
    stability: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) seconds
    last_access: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) Unix time
    damaged: list[str] = field(default_factory=list)  # ids left out: their vector failed its check


class StoreError(EngramError, OSError):
    """The store cannot be read or written as it is: damaged, inconsistent, unwritable or unreachable.

    The message names the store and what to do; ``errno`` is the cause's, when there was one.
    """

    exit_status = 1  # not a usage error: the engram command exits 1, as for any unusable resource

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


@dataclass(frozen=True)
class EpisodeFields:
    """The fields of an episode that recall filters and ranks on, besides its embedding."""

    timestamp: float
    tags: tuple[str, ...]
    text: str
    who: str | None
    session: int | str | None


class StorageBackend(ABC):
    """Durable storage of episodes, links and per-space state for one store.

    Every method that writes commits before it returns: a write that returned is durable, and a
    write that raised left nothing behind. Several backends (in one process or in several) may
    work on one store at once; each method is atomic with respect to the others.
    """

    dim: int
    location: str  # the store, as messages name it (a path, or a URL without its password)
    local: bool = True  # reads without a network round trip (a server may run them on its event loop)

    # ---------------------------------------------------------------- spaces and their state

    @abstractmethod
    def ensure_space(self, space: str) -> None:
        """Create the space if it does not exist (idempotent; a name differing only in case from an
        existing one is a ValueError)."""

    @abstractmethod
    def spaces(self) -> list[str]:
        """Names of all spaces, sorted."""

    @abstractmethod
    def get_state(self, space: str) -> dict[str, Any]:
        """The space's JSON state (sleep progress, gate calibration, key hashes)."""

    @abstractmethod
    def update_state_with(self, space: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Merge ``change(state)`` into the space's state (a None value removes a key), read and
        written atomically: no concurrent update can fall between the read and the write."""

    def update_state(self, space: str, changes: dict[str, Any]) -> None:
        """Merge ``changes`` into the space's state (a None value removes a key)."""
        self.update_state_with(space, lambda _: changes)

    # ---------------------------------------------------------------- episodes

    @abstractmethod
    def insert(self, space: str, episodes: Sequence[Episode]) -> None:
        """Add episodes atomically (all or none); an id already in the space raises ValueError."""

    @abstractmethod
    def upsert_semantic(self, space: str, episode: Episode) -> None:
        """Insert or replace a semantic prototype (same id: new embedding, payload and text)."""

    @abstractmethod
    def get(self, space: str, ids: Sequence[str], with_embeddings: bool = True) -> dict[str, Episode]:
        """The episodes among ``ids`` that exist, by id (their text fields are ``episode_fields``')."""

    @abstractmethod
    def delete(self, space: str, ids: Sequence[str]) -> list[str]:
        """Delete episodes, their text and their links; return the ids that existed."""

    @abstractmethod
    def compact(self, space: str | None = None) -> dict[str, int]:
        """Rewrite storage without deleted data, so that it is gone from the store's files; by
        space, the number of deleted or replaced episodes whose storage was reclaimed."""

    @abstractmethod
    def count(self, space: str, kind: str | None = None) -> int:
        """Number of live episodes (of one kind, if given)."""

    @abstractmethod
    def scan(self, space: str, after_seq: int = -1, kind: str | None = None) -> list[tuple[int, Episode]]:
        """(seq, episode without embedding) of live episodes with seq > after_seq, in order."""

    @abstractmethod
    def episode_fields(self, space: str, ids: Sequence[str]) -> dict[str, EpisodeFields]:
        """Timestamp, tags, text, who and session of the live episodes among ``ids``."""

    @abstractmethod
    def touch(self, space: str, updates: Iterable[tuple[str, float, float, int]]) -> None:
        """Record recalls: (id, new stability, access time, added recalls)."""

    @abstractmethod
    def mark_replayed(self, space: str, updates: Iterable[tuple[str, float]]) -> None:
        """Record replays: (id, new stability); bumps the replay count."""

    # ---------------------------------------------------------------- what recall reads

    @abstractmethod
    def index_rows(self, space: str, after_seq: int = -1) -> IndexRows:
        """Live episodes with seq > ``after_seq``, for building the recall index.

        Seqs increase in commit order within a space, so a reader that has every row up to
        ``after_seq`` and reads the rows after it has every committed row.
        """

    @abstractmethod
    def changed(self) -> bool:
        """True when another connection committed since the last call (cheap: recall asks it)."""

    @abstractmethod
    def search_text(self, space: str, query: str, limit: int) -> list[tuple[str, float]]:
        """Full-text query over the episodes' text: (id, score, higher better), best first. The
        query syntax and the score are the backend's (FTS5 BM25, PostgreSQL ``ts_rank_cd``, ...);
        plain words match episodes holding all of them (after stemming) in every backend."""

    @abstractmethod
    def nearest(self, space: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The ``k`` live episodes most cosine-similar to ``vector``: (id, cosine), best first
        (exact, or a backend's approximate index such as pgvector's HNSW)."""

    # ---------------------------------------------------------------- links

    @abstractmethod
    def add_links(self, space: str, links: Sequence[Link]) -> int:
        """Insert links that are not there yet; return how many were new."""

    @abstractmethod
    def links(self, space: str, ids: Sequence[str] | None = None, kind: str | None = None) -> list[Link]:
        """Links touching ``ids`` (all links of the space when None), optionally of one kind."""

    # ---------------------------------------------------------------- integrity

    @abstractmethod
    def check(self, space: str) -> list[str]:
        """Problems found in the space's stored data (empty list: consistent)."""

    @abstractmethod
    def repair(self, space: str) -> list[str]:
        """Drop the episodes ``check`` reports, so that the space is consistent again; their ids."""

    @abstractmethod
    def close(self) -> None:
        """Release files and connections."""
