"""The storage interface every backend implements, and the records that cross it.

``MemoryStore`` talks only to ``StorageBackend``; the embedded default (``SQLiteBackend``:
SQLite in WAL mode plus one memory-mapped float32 array per space) needs no server, and a
server backend (PostgreSQL with pgvector) can follow by implementing the same methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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


class StoreError(OSError):
    """The store's files cannot be read or written as they are: damaged, inconsistent or unwritable.

    The message names the store and what to do; ``errno`` is the cause's, when there was one.
    """

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

    Every method that writes commits before it returns: a write that returned is durable.
    """

    dim: int

    @abstractmethod
    def ensure_space(self, space: str) -> None:
        """Create the space if it does not exist (idempotent)."""

    @abstractmethod
    def spaces(self) -> list[str]:
        """Names of all spaces."""

    @abstractmethod
    def insert(self, space: str, episodes: Sequence[Episode]) -> None:
        """Add episodes atomically (all or none); an id already in the space raises ValueError."""

    @abstractmethod
    def upsert_semantic(self, space: str, episode: Episode) -> None:
        """Insert or replace a semantic prototype (same id: new embedding and payload)."""

    @abstractmethod
    def get(self, space: str, ids: Sequence[str], with_embeddings: bool = True) -> dict[str, Episode]:
        """The episodes among ``ids`` that exist, by id."""

    @abstractmethod
    def delete(self, space: str, ids: Sequence[str]) -> list[str]:
        """Delete episodes and their links; return the ids that existed."""

    @abstractmethod
    def compact(self, space: str | None = None) -> dict[str, int]:
        """Rewrite storage without deleted data so that it is gone from disk."""

    @abstractmethod
    def count(self, space: str, kind: str | None = None) -> int:
        """Number of live episodes (of one kind, if given)."""

    @abstractmethod
    def index_rows(self, space: str, after_seq: int = -1) -> IndexRows:
        """Live episodes with seq > ``after_seq``, for building the recall index."""

    @abstractmethod
    def changed(self) -> bool:
        """True when another connection committed since the last call (cheap)."""

    @abstractmethod
    def touch(self, space: str, updates: Iterable[tuple[str, float, float, int]]) -> None:
        """Record recalls: (id, new stability, access time, added recalls)."""

    @abstractmethod
    def mark_replayed(self, space: str, updates: Iterable[tuple[str, float]]) -> None:
        """Record replays: (id, new stability); bumps the replay count."""

    @abstractmethod
    def scan(self, space: str, after_seq: int = -1, kind: str | None = None) -> list[tuple[int, Episode]]:
        """(seq, episode without embedding) of live episodes with seq > after_seq, in order."""

    @abstractmethod
    def add_links(self, space: str, links: Sequence[Link]) -> int:
        """Insert links that are not there yet; return how many were new."""

    @abstractmethod
    def links(self, space: str, ids: Sequence[str] | None = None, kind: str | None = None) -> list[Link]:
        """Links touching ``ids`` (all links of the space when None), optionally of one kind."""

    @abstractmethod
    def get_state(self, space: str) -> dict[str, Any]:
        """The space's JSON state (sleep progress, gate calibration, key hash)."""

    @abstractmethod
    def update_state(self, space: str, changes: dict[str, Any]) -> None:
        """Merge ``changes`` into the space's state (a None value removes a key)."""

    @abstractmethod
    def update_state_with(self, space: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Merge ``change(state)`` into the space's state, read and written atomically (no
        concurrent update can fall between the read and the write)."""

    def episode_fields(self, space: str, ids: Sequence[str]) -> dict[str, EpisodeFields]:
        """Timestamp, tags, text, who and session of the live episodes among ``ids`` (a
        vector-only backend may leave text, who and session empty)."""
        found = self.get(space, ids, with_embeddings=False)
        return {i: EpisodeFields(e.timestamp, e.tags, e.text, e.who, e.session) for i, e in found.items()}

    def search_text(self, space: str, query: str, limit: int) -> list[tuple[str, float]]:
        """Full-text query: (id, score) best first; backends without a text index raise."""
        raise NotImplementedError(f"{type(self).__name__} has no full-text index")

    @abstractmethod
    def close(self) -> None:
        """Release files and connections."""
