"""An in-memory backend: the interface's behaviour without files or a server, for tests of the
layers above (recall, sleep, the server) and for throwaway stores. Nothing outlives the object."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from engram.store import lexical
from engram.store.backend import (
    Episode,
    EpisodeFields,
    IndexRows,
    Link,
    StorageBackend,
    check_space_name,
    encode_payload,
    exact_nearest,
)


@dataclasses.dataclass
class _Space:
    episodes: dict[str, tuple[int, Episode]] = dataclasses.field(default_factory=dict)  # id -> (seq, ep.)
    links: dict[tuple[str, str, str], Link] = dataclasses.field(default_factory=dict)
    state: str = "{}"
    freed: int = 0  # deleted or replaced since the last compact


class MemoryBackend(StorageBackend):
    """Episodes, links and state in dictionaries, guarded by one lock (every method is atomic).

    Payloads and state go through JSON as in the durable backends, so what comes back is a copy
    and a payload SQLite would refuse is refused here too.
    """

    def __init__(self, dim: int | None = None):
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1):
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        self.dim = 768 if dim is None else int(dim)
        self.location = f"memory:{id(self):x}"
        self._lock = threading.RLock()
        self._spaces: dict[str, _Space] = {}
        self._seq = 0

    def _space(self, space: str) -> _Space:
        if space not in self._spaces:
            raise ValueError(f"space: no memory space named {space!r} in {self.location}")
        return self._spaces[space]

    # ---------------------------------------------------------------- spaces and state

    def ensure_space(self, space: str) -> None:
        check_space_name(space)
        with self._lock:
            if space in self._spaces:
                return
            clash = next((name for name in self._spaces if name.lower() == space.lower()), None)
            if clash:
                raise ValueError(f"space: {space!r} differs from the existing space {clash!r} only in case")
            self._spaces[space] = _Space()

    def spaces(self) -> list[str]:
        with self._lock:
            return sorted(self._spaces)

    def get_state(self, space: str) -> dict[str, Any]:
        with self._lock:
            return json.loads(self._space(space).state)

    def update_state_with(self, space: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        with self._lock:
            target = self._space(space)
            state = json.loads(target.state)
            for key, value in change(dict(state)).items():
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = value
            target.state = json.dumps(state)

    # ---------------------------------------------------------------- episodes

    def _stored(self, episode: Episode) -> Episode:
        """A private copy: float32 embedding, payload and tags through their stored forms."""
        vector = np.array(episode.embedding, dtype=np.float32).reshape(-1)
        if vector.shape != (self.dim,):
            raise ValueError(f"embedding: expected {self.dim} values, got {vector.size}")
        payload = json.loads(encode_payload(episode.payload))
        return dataclasses.replace(episode, embedding=vector, payload=payload, tags=tuple(episode.tags))

    def insert(self, space: str, episodes: Sequence[Episode]) -> None:
        with self._lock:
            target = self._space(space)
            seen: set[str] = set()
            for e in episodes:
                if e.id in target.episodes or e.id in seen:
                    raise ValueError(f"id: an episode with id {e.id!r} is already in space {space!r}")
                seen.add(e.id)
            stored = [self._stored(e) for e in episodes]  # all checked before anything is kept
            for e in stored:
                self._seq += 1
                target.episodes[e.id] = (self._seq, e)

    def upsert_semantic(self, space: str, episode: Episode) -> None:
        with self._lock:
            target = self._space(space)
            stored = self._stored(episode)
            if target.episodes.pop(episode.id, None) is not None:
                target.freed += 1
            self._seq += 1
            target.episodes[episode.id] = (self._seq, stored)

    @staticmethod
    def _bare(episode: Episode, with_embedding: bool) -> Episode:
        """What ``get`` returns: a copy without text fields (those are ``episode_fields``')."""
        return dataclasses.replace(
            episode, payload=json.loads(json.dumps(episode.payload)), text="", who=None, session=None,
            embedding=episode.embedding.copy() if with_embedding else np.zeros(0, dtype=np.float32),
        )

    def get(self, space: str, ids: Sequence[str], with_embeddings: bool = True) -> dict[str, Episode]:
        with self._lock:
            found = self._space(space).episodes
            return {i: self._bare(found[i][1], with_embeddings) for i in ids if i in found}

    def delete(self, space: str, ids: Sequence[str]) -> list[str]:
        with self._lock:
            target = self._space(space)
            removed = [i for i in dict.fromkeys(ids) if target.episodes.pop(i, None) is not None]
            gone = set(removed)
            target.links = {key: link for key, link in target.links.items()
                            if link.src not in gone and link.dst not in gone}
            target.freed += len(removed)
            return removed

    def compact(self, space: str | None = None) -> dict[str, int]:
        with self._lock:
            names = [space] if space else sorted(self._spaces)
            report = {name: self._space(name).freed for name in names}
            for name in names:
                self._spaces[name].freed = 0
            return report

    def count(self, space: str, kind: str | None = None) -> int:
        with self._lock:
            return sum(kind is None or e.kind == kind for _, e in self._space(space).episodes.values())

    def _ordered(self, space: str, after_seq: int) -> list[tuple[int, Episode]]:
        rows = [row for row in self._space(space).episodes.values() if row[0] > after_seq]
        return sorted(rows, key=lambda row: row[0])

    def scan(self, space: str, after_seq: int = -1, kind: str | None = None) -> list[tuple[int, Episode]]:
        with self._lock:
            return [(seq, self._bare(e, False)) for seq, e in self._ordered(space, after_seq)
                    if kind is None or e.kind == kind]

    def episode_fields(self, space: str, ids: Sequence[str]) -> dict[str, EpisodeFields]:
        with self._lock:
            found = self._space(space).episodes
            return {i: EpisodeFields(e.timestamp, e.tags, e.text, e.who, e.session)
                    for i in ids if i in found for e in [found[i][1]]}

    def touch(self, space: str, updates: Iterable[tuple[str, float, float, int]]) -> None:
        with self._lock:
            found = self._space(space).episodes
            for eid, stability, at, recalls in updates:
                if eid in found:
                    seq, e = found[eid]
                    found[eid] = (seq, dataclasses.replace(e, stability=stability,
                                                           recalls=e.recalls + recalls,
                                                           last_access=max(e.last_access, at)))

    def mark_replayed(self, space: str, updates: Iterable[tuple[str, float]]) -> None:
        with self._lock:
            found = self._space(space).episodes
            for eid, stability in updates:
                if eid in found:
                    seq, e = found[eid]
                    found[eid] = (seq, dataclasses.replace(e, stability=stability, replays=e.replays + 1))

    # ---------------------------------------------------------------- what recall reads

    def index_rows(self, space: str, after_seq: int = -1) -> IndexRows:
        with self._lock:
            rows = self._ordered(space, after_seq)
            embeddings = (np.stack([e.embedding for _, e in rows]) if rows
                          else np.zeros((0, self.dim), dtype=np.float32))
            return IndexRows(
                seqs=np.array([seq for seq, _ in rows], dtype=np.int64),
                ids=[e.id for _, e in rows],
                embeddings=embeddings,
                kinds=[e.kind for _, e in rows],
                stability=np.array([e.stability for _, e in rows], dtype=np.float64),
                last_access=np.array([e.last_access for _, e in rows], dtype=np.float64),
            )

    def changed(self) -> bool:
        """Always True: several stores may share this object, and reading the rows after an
        index's last seq costs little here."""
        return True

    def search_text(self, space: str, query: str, limit: int) -> list[tuple[str, float]]:
        """Episodes holding every stemmed content word of ``query``; score: summed tf·idf."""
        words = set(lexical.tokens(query))
        if not words:
            return []
        with self._lock:
            rows = self._ordered(space, -1)
            counts = [(e.id, lexical.tokens(e.text)) for _, e in rows]
        holding = {w: sum(w in toks for _, toks in counts) for w in words}
        scored = [(eid, sum(toks.count(w) * math.log1p(len(counts) / holding[w]) for w in words))
                  for eid, toks in counts if words <= set(toks)]
        return sorted(scored, key=lambda hit: -hit[1])[:limit]

    def nearest(self, space: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        rows = self.index_rows(space)
        return exact_nearest(rows.ids, rows.embeddings, np.asarray(vector, dtype=np.float32), k)

    # ---------------------------------------------------------------- links

    def add_links(self, space: str, links: Sequence[Link]) -> int:
        with self._lock:
            target = self._space(space)
            new = 0
            for link in links:
                key = (link.src, link.dst, link.kind)
                if key not in target.links:
                    target.links[key] = Link(link.src, link.dst, link.kind, float(link.weight),
                                             link.created or time.time())
                    new += 1
            return new

    def links(self, space: str, ids: Sequence[str] | None = None, kind: str | None = None) -> list[Link]:
        with self._lock:
            wanted = None if ids is None else set(ids)
            return [link for link in self._space(space).links.values()
                    if (kind is None or link.kind == kind)
                    and (wanted is None or link.src in wanted or link.dst in wanted)]

    # ---------------------------------------------------------------- integrity

    def check(self, space: str) -> list[str]:
        """Nothing can be damaged in memory; the space must exist."""
        with self._lock:
            self._space(space)
        return []

    def repair(self, space: str) -> list[str]:
        return self.check(space)

    def close(self) -> None:
        """Nothing to release: the data lives as long as this object (a later store may reopen it)."""
