"""``MemoryStore``: a persistent episodic memory that completes, refuses, forgets and consolidates.

One object is one named memory space of a store (a directory, or a PostgreSQL database given
by its ``postgresql://`` URL); spaces of the same store never see each other's episodes, links
or calibration.

Example:
    >>> store = MemoryStore("memories", space="chat", embedder=HashingEmbedder())  # doctest: +SKIP
    >>> store.add(text="I adopted a dog called Rex", who="Ada", session=1)         # doctest: +SKIP
    >>> store.recall("What is the name of Ada's dog?", k=3).episodes[0].episode.text  # doctest: +SKIP
    >>> vectors = MemoryStore("vectors", dim=4)                                   # doctest: +SKIP
    >>> vectors.recall([1.0, 0.0, 0.0, 0.0], k=1, known=[1, 1, 0, 0])             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engram.ca3 import ModernHopfield
from engram.store import arguments, narrow, pipeline
from engram.store.backend import Episode, Link, StorageBackend, check_space_name
from engram.store.backends import open_backend
from engram.store.decay import DecayPolicy, StrengthReport, explain
from engram.store.embed import Embedder, HashingEmbedder, check_embeddings
from engram.store.gate import GateModel, default_gate, fit_gate
from engram.store.index import RecallIndex
from engram.store.lexical import MAX_TEXT_CHARS
from engram.store.pipeline import FEATURES, CueParts, RecallConfig, Separator

_ID_MAX = 128
_FIELD_MAX = 128
_CACHE_MAX = 50_000
_WHERE_FIELDS = ("who", "session", "tags", "kind")
# An id names one URL path segment: no '/' or '\\', no control characters, and not '.' or '..'
# (clients resolve those away). Written without look-arounds or surrogate escapes so JSON Schema
# tools read it as Python does; lone surrogates (not text, no UTF-8 form) are refused apart.
_ID_CHAR = r"[^/\\\x00-\x1f\x7f-\x9f]"
ID_PATTERN = rf"^(?:{_ID_CHAR}*[^/\\\x00-\x1f\x7f-\x9f.]{_ID_CHAR}*|\.{{3,}})$"
_ID_RULE = re.compile(ID_PATTERN)
# float32 normalises a vector exactly only inside this norm range: above it the sum of squares
# overflows, below it the index's 1e-12 floor keeps the stored direction short of unit norm.
_NORMS = (1e-12, 1e18)
_KINDS = {"c": "complex numbers", "U": "strings", "S": "bytes", "b": "booleans", "O": "Python objects",
          "M": "datetimes", "m": "timedeltas", "V": "records"}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# the field an episode check names -> the add_batch column it came from
_COLUMN_OF = {"payload": "payloads", "id": "ids", "timestamp": "timestamps", "reward": "rewards",
              "salience": "saliences", "tags": "tags", "unfinished": "unfinished"}
_EPISODE_KINDS = (None, "episode", "semantic")
# the other way round, for add(): the add_batch column -> the argument of one episode
_FIELD_OF = {**{column: field for field, column in _COLUMN_OF.items()}, "texts": "text",
             "sessions": "session", "who": "who"}


@dataclass(frozen=True)
class Recalled:
    """One ranked answer: the episode, its rank score, strength and what the stages saw."""

    episode: Episode
    score: float
    attention: float
    masked_cosine: float
    strength: float


@dataclass(frozen=True)
class RecallResult:
    """The answer to one cue.

    ``status`` is ``"recalled"`` or ``"insufficient_evidence"``; either way ``episodes`` holds
    the ranked candidates, best first (a refusal flags them, so an agent can still decide).
    ``decided_by`` names the stage that settled it: ``"search"`` (the fused search's best
    stood, or nothing was stored), ``"completion"`` (Hopfield completion changed the winner),
    ``"separation"`` (the sparse attractor did) or ``"gate"`` (refused).
    ``confidence`` is the gate's probability that the top episode answers the cue (a two-part
    gate refuses on ``trace["holds"]``, its probability that the memory holds an answer at all);
    ``calibrated`` says whether the gate was fitted (on this store or shipped for its
    embedder). ``completion`` is the completed cue (unit norm); ``trace`` holds per-stage
    detail, ``trace["features"]`` the gate's features by name.
    """

    status: str
    decided_by: str
    confidence: float
    calibrated: bool
    episodes: list[Recalled]
    completion: np.ndarray | None
    trace: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status == "recalled"


@dataclass(frozen=True)
class CalibrationReport:
    """What ``calibrate`` fitted: sample counts, accuracy on stored cues, refusal of novel ones."""

    samples: int
    stored_top1: float
    accept_stored: float
    refuse_novel: float
    coef: tuple[float, ...]
    intercept: float


def _finite_float(value: Any, name: str) -> float:
    # float32's range: wide enough for any time or weight, narrow enough that sums and means of
    # many of them (sleep averages rewards) stay finite
    return arguments.real(value, name, low=-_FLOAT32_MAX, high=_FLOAT32_MAX)


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_episode_id(eid: Any, name: str = "id") -> str:
    """The one id rule of every entry point (``ID_PATTERN``, at most 128 characters), so that
    every stored id is also one path segment of the HTTP API."""
    if not isinstance(eid, str):
        raise TypeError(f"{name}: expected a string, got {type(eid).__name__} {eid!r}")
    if not 0 < len(eid) <= _ID_MAX or not _ID_RULE.match(eid) or not _is_text(eid):
        raise ValueError(
            f"{name}: expected 1-{_ID_MAX} characters, none of them '/', '\\\\' or a control "
            f"character, and not '.' or '..', got {eid!r}"
        )
    return eid


class MemoryStore:
    """A persistent episodic memory space in a store directory or a PostgreSQL database.

    Args:
        path: the store directory (SQLite, created if absent), or a ``postgresql://`` URL
            (PostgreSQL with pgvector: several processes and machines share one database).
        space: the memory space this object reads and writes (created if absent).
        embedder: what embeds text (``engram.store.embed``); recorded in the space, and a space
            made with one embedder refuses another (name or dimension). None: vectors only,
            unless the space was made with the offline ``HashingEmbedder`` (rebuilt as needed).
        dim: embedding dimension, fixed when the store is created (the embedder's, else 768).
        config: the recall pipeline's settings (``RecallConfig``).
        decay: the forgetting schedule (``DecayPolicy``).
        durable: fsync every write, or on PostgreSQL commit with ``synchronous_commit`` on
            (``False`` trades power-loss or server-crash safety for speed; a crash of this
            process still loses nothing committed).
        backend: another ``StorageBackend`` (``path`` and ``durable`` are then ignored).
        seed: seed of the dentate-gyrus expansion and of calibration cues.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        space: str = "default",
        dim: int | None = None,
        config: RecallConfig | None = None,
        decay: DecayPolicy | None = None,
        durable: bool = True,
        backend: StorageBackend | None = None,
        seed: int = 0,
        embedder: Embedder | None = None,
    ):
        self.space = check_space_name(space)
        config = RecallConfig() if config is None else arguments.instance(config, "config", RecallConfig)
        decay = DecayPolicy() if decay is None else arguments.instance(decay, "decay", DecayPolicy)
        seed = arguments.integer(seed, "seed")
        if embedder is not None:
            dim = _embedder_dim(embedder, dim)
        if backend is None:
            backend = open_backend(path, dim=dim, durable=arguments.flag(durable, "durable"))
        self.backend = arguments.instance(backend, "backend", StorageBackend)
        self.dim = self.backend.dim
        self.config = config
        self.decay = decay
        self.seed = seed
        self.backend.ensure_space(self.space)
        self.embedder = self._check_embedder(embedder)
        self._lock = threading.RLock()
        self._hopfield = ModernHopfield(self.dim, beta=self.config.beta, steps=1)
        self._separator = (
            Separator(self.dim, self.config.dg_units, self.config.dg_sparsity, self.seed)
            if self.config.separation else None
        )
        self._index = RecallIndex(self.dim)
        self._index.reload(self.backend, self.space)
        self._gate = self._load_gate()
        self._pending: dict[str, tuple[float, float, int]] = {}
        # Recalled episodes as stored (payload, text, vector), so a recall reads no rows; any
        # write that could change one (delete, compact, touch, sleep, another process) clears it.
        self._recalled_cache: dict[str, Episode] = {}
        self._calibration_failed_at = 0
        self._last_flush = time.monotonic()

    # ------------------------------------------------------------------ input checks

    def _vectors(self, values: Any, name: str, one: bool) -> np.ndarray:
        if isinstance(values, (str, bytes, dict)) or values is None:
            raise TypeError(f"{name}: expected an array of {self.dim} numbers, got {type(values).__name__}")
        try:
            array = np.asarray(values)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}: expected an array of numbers, got {type(values).__name__} "
                            f"({error})") from error
        if array.dtype.kind not in "iuf":
            # numpy would silently parse numeric strings or drop imaginary parts
            raise TypeError(f"{name}: expected real numbers, got {_KINDS.get(array.dtype.kind, array.dtype)}")
        if one and array.shape != (self.dim,):
            raise ValueError(f"{name}: expected shape ({self.dim},), got {array.shape}")
        if not one and (array.ndim != 2 or array.shape[1] != self.dim):
            raise ValueError(f"{name}: expected shape (n, {self.dim}), got {array.shape}")
        wide = array.astype(np.float64)
        bad = ~(np.abs(wide) <= _FLOAT32_MAX)
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}: contains NaN, infinite or beyond-float32 values (expected finite "
                             f"numbers within float32 range), got {float(wide[at])!r} at index "
                             f"{at[0] if one else at}")
        narrow = wide.astype(np.float32)
        # the norm of what will be stored (float32-rounded), computed without float32 overflow
        norms = np.linalg.norm(narrow.astype(np.float64), axis=-1, keepdims=not one)
        outside = (norms < _NORMS[0]) | (norms > _NORMS[1])
        if outside.any():
            row = int(np.flatnonzero(outside)[0])
            label = name if one else f"{name}[{row}]"
            raise ValueError(f"{label}: expected a norm in [{_NORMS[0]:g}, {_NORMS[1]:g}], got "
                             f"{float(np.ravel(norms)[row]):.3g} (float32 cannot normalise it, so it "
                             "would never be found)")
        return np.ascontiguousarray(narrow)

    def _known(self, known: Any, shape: tuple[int, ...]) -> np.ndarray:
        if known is None:
            return np.ones(shape, dtype=bool)
        mask = np.asarray(known)
        if mask.dtype != bool:
            if mask.dtype.kind not in "iuf" or not np.isin(mask, (0, 1)).all():
                shown = known if mask.size <= 8 else f"{mask.dtype} array of shape {mask.shape}"
                raise ValueError(f"known: expected a boolean (or 0/1) mask of the cue's known "
                                 f"dimensions, got {shown!r}")
            mask = mask.astype(bool)
        if mask.shape == shape[-1:] and len(shape) == 2:
            mask = np.broadcast_to(mask, shape)
        if mask.shape != shape:
            raise ValueError(f"known: expected shape {shape[-1:]} or {shape}, got {mask.shape}")
        if not mask.any(axis=-1).all():
            raise ValueError("known: a cue has no known dimension, so there is no evidence")
        return np.ascontiguousarray(mask)

    def _episode(self, embedding: np.ndarray, payload: Any, eid: Any, timestamp: Any, reward: Any,
                 salience: Any, tags: Any, unfinished: Any, now: float) -> Episode:
        """Check one episode's fields; the payload is encoded (and size-checked) by the backend."""
        eid = os.urandom(16).hex() if eid is None else check_episode_id(eid)
        payload = {} if payload is None else payload
        if not isinstance(payload, dict):
            raise TypeError(f"payload: expected a JSON object (dict), got {type(payload).__name__}")
        timestamp = now if timestamp is None else _finite_float(timestamp, "timestamp")
        reward = _finite_float(reward, "reward")
        salience = _finite_float(salience, "salience")
        tags = tags if isinstance(tags, str) else tuple(tags)  # a generator would be spent by the check
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise TypeError(f"tags: expected a list of strings, got {tags!r}")
        if not isinstance(unfinished, (bool, np.bool_)):
            raise TypeError(f"unfinished: expected a bool, got {type(unfinished).__name__}")
        return Episode(
            id=eid, embedding=embedding, payload=payload, timestamp=timestamp,
            reward=reward, salience=salience, tags=tuple(tags), unfinished=bool(unfinished),
            stability=self.decay.initial_stability(salience, reward), last_access=timestamp,
        )

    def _check_embedder(self, embedder: Embedder | None) -> Embedder | None:
        """Record the space's embedder, or refuse one other than the recorded one."""
        recorded = self.backend.get_state(self.space).get("embedder")
        if embedder is None:
            if recorded and recorded["name"].startswith("hashing-"):
                return HashingEmbedder(int(recorded["dim"]))
            return None
        if embedder.dim != self.dim:
            raise ValueError(f"embedder: {embedder.name} makes {embedder.dim}-dimensional vectors, the "
                             f"store holds {self.dim}-dimensional ones")
        if recorded is None:
            self.backend.update_state(self.space, {"embedder": {"name": embedder.name, "dim": embedder.dim}})
        elif recorded["name"] != embedder.name or int(recorded["dim"]) != embedder.dim:
            raise ValueError(
                f"embedder: space {self.space!r} was made with {recorded['name']} ({recorded['dim']} "
                f"dimensions), got {embedder.name} ({embedder.dim}); mixing them would compare "
                "vectors of different models"
            )
        return embedder

    def _load_gate(self) -> GateModel:
        """The space's own fitted gate, else the one shipped for its embedder, else the prior."""
        state = self.backend.get_state(self.space).get("gate")
        if state:
            return GateModel.from_state(state)
        shipped = default_gate(self.embedder.name) if self.embedder is not None else None
        return shipped or GateModel.prior()

    def _embed(self, texts: list[str], name: str) -> np.ndarray:
        if self.embedder is None:
            raise ValueError(f"{name}: text needs an embedder; open the store with "
                             "MemoryStore(..., embedder=...) or pass embeddings")
        vectors = check_embeddings(self.embedder.embed(texts, progress=len(texts) >= 1000), len(texts),
                                   self.dim, self.embedder.name)
        empty = np.flatnonzero(np.linalg.norm(vectors.astype(np.float64), axis=1) < _NORMS[0])
        if len(empty):
            # e.g. the hashing embedder on text without ASCII letters or digits: never findable
            raise ValueError(f"{name}: {self.embedder.name} gives entry {int(empty[0])} "
                             f"({texts[int(empty[0])][:60]!r}) a zero vector, so it could never be "
                             "recalled; use an embedder that reads this text")
        return vectors

    def _embed_episodes(self, texts: list[str], who: list[str | None]) -> np.ndarray:
        inputs = [f"{w}: {t}" if self.config.embed_speaker and w else t
                  for t, w in zip(texts, who, strict=True)]
        return self._embed(inputs, "text")

    # ------------------------------------------------------------------ writing

    def add(self, embedding: Any = None, payload: dict[str, Any] | None = None, *, text: str | None = None,
            who: str | None = None, session: int | str | None = None, id: str | None = None,
            timestamp: float | None = None, reward: float = 0.0, salience: float = 0.0,
            tags: Sequence[str] = (), unfinished: bool = False) -> str:
        """Store one episode (its text, embedded by the store's embedder, and/or its embedding);
        returns its id once it is durable."""
        if isinstance(embedding, str) and text is None and self.embedder is not None:
            embedding, text = None, embedding
        try:
            return self.add_batch(
                None if embedding is None else self._vectors(embedding, "embedding", one=True)[None],
                [payload], texts=None if text is None else [text], ids=None if id is None else [id],
                who=[who], sessions=[session], timestamps=None if timestamp is None else [timestamp],
                rewards=[reward], saliences=[salience], tags=[tags], unfinished=[unfinished],
            )[0]
        except (TypeError, ValueError) as error:
            # add_batch names the column entry ("rewards[0]: ..."); here the argument is singular
            column, bracket, rest = str(error).partition("[0]:")
            if not bracket or column not in _FIELD_OF:
                raise
            raise type(error)(f"{_FIELD_OF[column]}:{rest}") from None

    def add_batch(self, embeddings: Any = None, payloads: Sequence[dict[str, Any] | None] | None = None, *,
                  texts: Sequence[str] | None = None, who: str | Sequence[str | None] | None = None,
                  sessions: Sequence[int | str | None] | None = None,
                  ids: Sequence[str] | None = None, timestamps: Sequence[float] | None = None,
                  rewards: Sequence[float] | None = None, saliences: Sequence[float] | None = None,
                  tags: Sequence[Sequence[str]] | None = None,
                  unfinished: Sequence[bool] | None = None) -> list[str]:
        """Store many episodes in one transaction (all or none); returns their ids.

        Give ``texts`` (embedded by the store's embedder, as "who: text" when
        ``config.embed_speaker``), ``embeddings``, or both (the text is then stored and searched,
        the embedding used as given). ``who`` is one speaker for all or one per episode.
        """
        if embeddings is None and texts is None:
            raise TypeError("embeddings: expected embeddings or texts=, got neither")
        texts = None if texts is None else _texts(texts)
        given = None if embeddings is None else self._vectors(embeddings, "embeddings", one=False)
        n = len(texts) if given is None else len(given)  # type: ignore[arg-type]
        who = [who] * n if who is None or isinstance(who, str) else list(who)
        columns = {"payloads": payloads, "ids": ids, "timestamps": timestamps, "rewards": rewards,
                   "saliences": saliences, "tags": tags, "unfinished": unfinished, "texts": texts,
                   "who": who, "sessions": sessions}
        for name, column in columns.items():
            if column is None:
                continue
            if isinstance(column, (str, bytes, dict)) or not isinstance(column, Sequence | np.ndarray):
                raise TypeError(f"{name}: expected a list of {n} entries (one per embedding), got "
                                f"{type(column).__name__} {column!r}")
            if len(column) != n:
                raise ValueError(f"{name}: expected {n} entries (one per embedding), got {len(column)}")
        if ids is not None:
            ids = [check_episode_id(eid, f"ids[{i}]") for i, eid in enumerate(ids)]
            if len(set(ids)) != n:
                twice = sorted(eid for eid, count in Counter(ids).items() if count > 1)
                raise ValueError(f"ids: expected unique ids within the batch, got {twice[:5]!r} "
                                 "more than once")
        speakers = [_field(w, "who", str) for w in who]
        session_of = [None] * n if sessions is None else [_field(v, "sessions", (int, str)) for v in sessions]
        now = time.time()
        # Check every field before embedding: a bad one costs no model time and stores nothing.
        vectors = given if given is not None else self._embed_episodes(list(texts), speakers)  # type: ignore[arg-type]
        episodes = []
        for i in range(n):
            try:
                episodes.append(self._episode(
                    vectors[i],
                    payloads[i] if payloads is not None else None,
                    ids[i] if ids is not None else None,
                    timestamps[i] if timestamps is not None else None,
                    rewards[i] if rewards is not None else 0.0,
                    saliences[i] if saliences is not None else 0.0,
                    tags[i] if tags is not None else (),
                    unfinished[i] if unfinished is not None else False,
                    now,
                ))
            except (TypeError, ValueError) as error:
                # _episode names the field ("reward: ..."); name the column entry instead
                field_name, _, rest = str(error).partition(":")
                column = _COLUMN_OF.get(field_name)
                if column is None:
                    raise
                raise type(error)(f"{column}[{i}]:{rest}") from None
        episodes = [dataclasses.replace(e, text=texts[i] if texts is not None else "", who=speakers[i],
                                        session=session_of[i]) for i, e in enumerate(episodes)]
        self._write(episodes)
        return [e.id for e in episodes]

    def _write(self, episodes: list[Episode]) -> None:
        with self._lock:
            self._flush_touches()
            self.backend.insert(self.space, episodes)
            if self._index.sync(self.backend, self.space):
                self._recalled_cache.clear()
            self._index.load(self.backend, self.space,
                             self.backend.index_rows(self.space, after_seq=self._index.max_seq))
            if len(self._recalled_cache) + len(episodes) <= _CACHE_MAX:
                # What was just stored is what a read would return (copies, so the caller's arrays
                # and dicts stay theirs), so recalls of fresh episodes read no rows either.
                stored = [dataclasses.replace(e, embedding=e.embedding.copy(),
                                              payload=json.loads(json.dumps(e.payload))) for e in episodes]
                self._recalled_cache.update({e.id: e for e in stored})

    def delete(self, ids: str | Sequence[str]) -> list[str]:
        """Delete episodes and their links; returns the ids that existed. ``compact()`` then
        removes every trace from disk."""
        if not isinstance(ids, str | Sequence | np.ndarray) or isinstance(ids, bytes):
            raise TypeError(f"ids: expected a string or a list of strings, got {type(ids).__name__} {ids!r}")
        ids = [ids] if isinstance(ids, str) else list(ids)
        if not all(isinstance(i, str) for i in ids):
            raise TypeError(f"ids: expected a string or a list of strings, got {ids!r}")
        with self._lock:
            self._flush_touches()
            removed = self.backend.delete(self.space, ids)
            self._recalled_cache.clear()
            self._index.remove(removed)
            self._index.sync(self.backend, self.space)
        return removed

    def compact(self) -> dict[str, int]:
        """Rewrite the files without deleted episodes (true deletion); returns slots reclaimed."""
        with self._lock:
            self._flush_touches()
            report = self.backend.compact(self.space)
            self._recalled_cache.clear()
            self._index.reload(self.backend, self.space)
        return report

    # ------------------------------------------------------------------ reading

    def get(self, id: str) -> Episode | None:
        """The episode with this id, or None."""
        if not isinstance(id, str):
            raise TypeError(f"id: expected a string, got {type(id).__name__}")
        return self._with_fields(self.backend.get(self.space, [id])).get(id)

    def get_many(self, ids: Sequence[str]) -> dict[str, Episode]:
        """The episodes among ``ids`` that exist, by id."""
        if isinstance(ids, str):
            raise TypeError(f"ids: expected a list of id strings, got the string {ids!r} "
                            "(get() takes one id)")
        if not isinstance(ids, Sequence | np.ndarray | set | frozenset):
            raise TypeError(f"ids: expected a list of id strings, got {type(ids).__name__} {ids!r}")
        ids = list(ids)
        for i, eid in enumerate(ids):
            if not isinstance(eid, str):
                raise TypeError(f"ids[{i}]: expected a string, got {type(eid).__name__} {eid!r}")
        return self._with_fields(self.backend.get(self.space, ids))

    def _with_fields(self, found: dict[str, Episode]) -> dict[str, Episode]:
        """Episodes with their text, speaker and session (kept beside the row by the backend)."""
        fields = self.backend.episode_fields(self.space, list(found)) if found else {}
        return {i: dataclasses.replace(e, text=fields[i].text, who=fields[i].who, session=fields[i].session)
                if i in fields else e for i, e in found.items()}

    def search_text(self, query: str, k: int = 10) -> list[tuple[Episode, float]]:
        """Full-text search in the backend's syntax and ranking (SQLite: FTS5 and BM25; PostgreSQL:
        ``websearch_to_tsquery`` and ``ts_rank_cd``): (episode, score), best first."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"query: expected a non-empty full-text query string, got {query!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected a positive integer, got {k!r}")
        hits = self.backend.search_text(self.space, query, k)
        found = self.get_many([i for i, _ in hits])
        return [(found[i], score) for i, score in hits if i in found]

    def __len__(self) -> int:
        with self._lock:
            self._index.sync(self.backend, self.space)
            return self._index.live

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and self.get(id) is not None

    def iter_episodes(self, kind: str | None = None) -> Iterator[Episode]:
        """Every live episode (without embeddings), in insertion order."""
        arguments.choice(kind, "kind", _EPISODE_KINDS)
        for _, episode in self.backend.scan(self.space, kind=kind):
            yield episode

    def links(self, id: str | None = None, kind: str | None = None) -> list[Link]:
        """The links touching episode ``id`` (all links of the space when None), of one kind if given."""
        for name, value in (("id", id), ("kind", kind)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name}: expected a string or None, got {type(value).__name__} {value!r}")
        return self.backend.links(self.space, None if id is None else [id], kind)

    # ------------------------------------------------------------------ recall

    def recall(self, cue: Any, k: int = 5, known: Any = None, *, text: str | None = None,
               where: dict[str, Any] | None = None, since: float | None = None, until: float | None = None,
               now: float | None = None, blind: Any = None) -> RecallResult:
        """Ranked episodes for a cue, and whether memory holds enough evidence to answer.

        ``cue`` is a text (embedded by the store's embedder; its words also drive the lexical
        search) or a vector (d,); with a vector, ``text`` gives the words. ``known`` masks the
        dimensions of a partial vector cue (the rest is filled in by completion). ``where``
        filters inside the search: ``{"who": "Ada", "session": 3, "tags": ["work"],
        "kind": "episode"}`` (a list of values means any of them; tags: all of them);
        ``since`` / ``until`` bound the episode's timestamp. ``blind``: with a vector cue whose
        text names a speaker, the embedding of ``blind_text(text)`` (the store embeds it itself
        when it has an embedder and none is given; it judges who told the best matches).
        """
        if isinstance(cue, str):
            if text is not None or known is not None or blind is not None:
                raise ValueError("text: a text cue is its own text (and has no known mask or blind "
                                 "cue); give text=, known= and blind= only with a vector cue")
            return self.recall_batch([cue], k=k, where=where, since=since, until=until, now=now)[0]
        _check_k(k)
        cue = self._vectors(cue, "cue", one=True)[None]
        mask = np.ones(cue.shape, dtype=bool) if known is None else self._known(known, (self.dim,))[None]
        texts = None if text is None else [_texts([text], "texts")[0]]
        blinds = None if blind is None else self._vectors(blind, "blind", one=True)[None]
        return self._recall_checked(cue, mask, texts, k, where, since, until, now, blinds)[0]

    def recall_batch(self, cues: Any, k: int = 5, known: Any = None, *,
                     texts: Sequence[str | None] | None = None,
                     where: dict[str, Any] | None = None, since: float | None = None,
                     until: float | None = None, now: float | None = None,
                     blinds: Any = None) -> list[RecallResult]:
        """``recall`` for a batch: texts, or vectors (B, d) with masks (d,) or (B, d) and
        optional ``texts`` (one per cue, None for none) and ``blinds`` (B, d, see ``recall``;
        a cue that names nobody may give itself: its row is not read)."""
        _check_k(k)
        if isinstance(cues, (list, tuple)) and cues and all(isinstance(c, str) for c in cues):
            if texts is not None or blinds is not None:
                raise ValueError("texts: give texts and blinds only with vector cues (text cues are "
                                 "their own text)")
            texts = list(_texts(cues, "cues"))
            # The cues and their speaker-blind forms in one call to the embedder.
            blind_texts = [self.blind_text(t) if self.config.blind_speakers else t for t in texts]
            extra = [i for i, (t, bt) in enumerate(zip(texts, blind_texts, strict=True)) if bt != t]
            vectors = self._embed(texts + [blind_texts[i] for i in extra], "cues")
            cues, blinds = vectors[:len(texts)], vectors[:len(texts)].copy()
            blinds[extra] = vectors[len(texts):]
        cues = self._vectors(cues, "cues", one=False)
        if texts is not None:
            texts = [None if t is None else _texts([t], "texts")[0] for t in texts]
            if len(texts) != len(cues):
                raise ValueError(f"texts: expected {len(cues)} entries (one per cue), got {len(texts)}")
        if blinds is not None:
            blinds = self._vectors(blinds, "blinds", one=False)
            if len(blinds) != len(cues):
                raise ValueError(f"blinds: expected {len(cues)} rows (one per cue), got {len(blinds)}")
        known = self._known(known, cues.shape)
        return self._recall_checked(cues, known, texts, k, where, since, until, now, blinds)

    def blind_text(self, text: str) -> str:
        """The text with every speaker of this space it names replaced by "someone": the cue that
        judges who told what recall finds (``recall(..., blind=)``)."""
        return self._index.blind_text(_texts([text], "text")[0])

    def _recall_checked(self, cues: np.ndarray, known: np.ndarray, texts: list[str | None] | None, k: int,
                        where: dict[str, Any] | None, since: float | None, until: float | None,
                        now: float | None, blinds: np.ndarray | None = None) -> list[RecallResult]:
        """``recall_batch`` on cues, masks, texts and blind cues already checked (``recall`` checks
        one cue once)."""
        known_norms = np.linalg.norm(np.where(known, cues, 0.0).astype(np.float64), axis=1)
        if not (known_norms >= _NORMS[0]).all():
            row = int(np.flatnonzero(known_norms < _NORMS[0])[0])
            raise ValueError(
                f"{'cue' if len(cues) == 1 else f'cues[{row}]'}: expected the known dimensions to have a "
                f"norm of at least {_NORMS[0]:g}, got {known_norms[row]:.3g}, so there is no evidence"
            )
        now = time.time() if now is None else _finite_float(now, "now")
        bounds = (None if since is None else _finite_float(since, "since"),
                  None if until is None else _finite_float(until, "until"))
        where = _where(where)
        with self._lock:
            if self._index.sync(self.backend, self.space):
                # Another process may have recalibrated the gate (e.g. `engram store sleep`).
                self._gate = self._load_gate()
                self._recalled_cache.clear()
            if self._index.live == 0:
                return [RecallResult("insufficient_evidence", "search", 0.0, self._gate.calibrated, [],
                                     None, {"reason": "the space holds no episodes"}) for _ in cues]
            live = self._index.live
            if (self.embedder is None and not self._gate.calibrated and live >= self.config.min_calibration
                    and live >= 2 * self._calibration_failed_at):
                try:
                    self._calibrate_locked(samples=min(256, live), seed=self.seed)
                except ValueError:
                    # Too uniform to fit (e.g. every cue answered wrongly): keep the prior, retry
                    # once the space has doubled.
                    self._calibration_failed_at = live
            parts = self._index.cue_parts(list(texts) if texts is not None else [None] * len(cues))
            hidden = self._filter_mask(where, bounds)
            blinds = self._blind_cues(cues, parts, blinds) if self.config.blind_speakers else None
            stages = self._run(cues, known, now, parts=parts, hidden=hidden, blinds=blinds)
            features = pipeline.features(stages, parts)
            confidence = self._gate.confidence(features)
            holds = self._gate.holds(features)
            refusal = confidence if holds is None else holds
            # Strength of the candidates only: O(B·C), not O(n), per query.
            rows = np.maximum(stages.rows, 0)
            strengths = self.decay.strength(self._index.stability[rows], now - self._index.last_access[rows])
            answers = [self._answer(stages, features[i], i, confidence[i], refusal[i],
                                    None if holds is None else float(holds[i]), strengths[i], k)
                       for i in range(len(cues))]
            if self.config.strengthen_on_recall:
                self._touch([picks[0][0] for result, picks in answers if result.accepted and picks], now)
        self._attach_episodes(answers)
        return [result for result, _ in answers]

    def _blind_cues(self, cues: np.ndarray, parts: CueParts, given: np.ndarray | None) -> np.ndarray | None:
        """(B, d) unit speaker-blind cues: ``given``, else embedded here when the store has an
        embedder; None when no cue names a speaker or there is no way to embed them."""
        named = [i for i, t in enumerate(parts.blind_texts) if t is not None]
        if not named or (given is None and self.embedder is None):
            return None
        if given is None:
            given = cues.copy()
            given[named] = self._embed([parts.blind_texts[i] for i in named], "blind")
        return given / np.maximum(np.linalg.norm(given, axis=1, keepdims=True), 1e-12)

    def _filter_mask(self, where: dict[str, Any],
                     bounds: tuple[float | None, float | None]) -> np.ndarray | None:
        """(n,) rows the filters exclude (None: no filter)."""
        idx = self._index
        hidden = np.zeros(idx.size, dtype=bool)
        if "who" in where:
            codes = [idx.speakers[w] for w in where["who"] if w in idx.speakers]
            hidden |= ~np.isin(idx.who, codes)
        if "session" in where:
            codes = [idx.sessions[v] for v in where["session"] if v in idx.sessions]
            hidden |= ~np.isin(idx.session, codes)
        for tag in where.get("tags", ()):
            has = np.zeros(idx.size, dtype=bool)
            has[idx.tag_rows.get(tag, [])] = True
            hidden |= ~has
        if "kind" in where:
            hidden |= ~np.isin(np.asarray(idx.kinds), where["kind"])
        since, until = bounds
        if since is not None:
            hidden |= idx.timestamps < since
        if until is not None:
            hidden |= idx.timestamps > until
        return hidden if (where or since is not None or until is not None) else None

    def _strengths(self, now: float) -> np.ndarray:
        idx = self._index
        return self.decay.strength(idx.stability, now - idx.last_access)

    def _run(self, cues: np.ndarray, known: np.ndarray, now: float, parts: CueParts | None = None,
             hidden: np.ndarray | None = None, exclude_rows: np.ndarray | None = None,
             blinds: np.ndarray | None = None) -> pipeline.Stages:
        idx = self._index
        parts = parts or CueParts.none(len(cues))
        dead = idx.dead_mask()
        if self.decay.forget_below > self.decay.floor:
            forgotten = self._strengths(now) < self.decay.forget_below
            dead = forgotten if dead is None else dead | forgotten
        # Prototypes without content never take result slots (sleep's links still reach them).
        empty_prototypes = idx.content_free_prototypes()
        if empty_prototypes is not None:
            dead = empty_prototypes if dead is None else dead | empty_prototypes
        if hidden is not None:
            dead = hidden if dead is None else dead | hidden
        lexical = named = None
        if any(parts.terms):
            lexical = np.zeros((len(cues), idx.size), dtype=np.float32)
            for i, terms in enumerate(parts.terms):
                _, ceiling = idx.lexical.scores(terms, idx.size, out=lexical[i])
                if ceiling > 0:  # else nothing matched: the row stays zero
                    lexical[i] /= ceiling
        blind_lexical = None
        if lexical is not None and blinds is not None:
            blind_lexical = np.zeros_like(lexical)
            for i, terms in enumerate(parts.blind_terms):
                _, ceiling = idx.lexical.scores(terms, idx.size, out=blind_lexical[i])
                if ceiling > 0:
                    blind_lexical[i] /= ceiling
        if any(parts.speakers):
            named = np.zeros((len(cues), idx.size), dtype=bool)
            for i, speakers in enumerate(parts.speakers):
                for code in speakers:
                    named[i] |= idx.who == code
        graph = idx.graph(self.backend, self.space, self.config.graph_links) if self.config.graph else None
        candidates = None
        queries = pipeline.masked_cues(cues, known)
        if exclude_rows is None:
            # The fast first stages (engram.store.ann): exact when the score is the cosine alone.
            dense_only = named is None and not (self.config.lexical and lexical is not None) and not (
                self.config.graph and graph is not None)
            if narrow.applies(self.config, idx.live, fused=not dense_only):
                shortlist = idx.dense_shortlist(queries, dead, self.config)
                return narrow.run(idx.view(), idx.who, idx.person, cues, known, queries, shortlist,
                                  self.config, self._hopfield, self._separator, dead, lexical, named, graph,
                                  blinds, blind_lexical)
            candidates = idx.shortlist(queries, dead, self.config, exact=dense_only)
            if candidates is None and self.config.sketch_dim:
                candidates = idx.sketch_search(queries, self.config.candidates,
                                               self.config.sketch_dim, self.config.sketch_shortlist,
                                               self.seed, dead)
        return pipeline.run(idx.view(), cues, known, self.config, self._hopfield, self._separator,
                            candidates=candidates, dead=dead, exclude_rows=exclude_rows, lexical=lexical,
                            named=named, graph=graph, person=idx.person, queries=queries,
                            speakers=idx.speaker_groups() if named is not None else None,
                            blind=blinds, blind_lexical=blind_lexical)

    def _answer(self, stages: pipeline.Stages, features: np.ndarray, i: int, confidence: float,
                refusal: float, holds: float | None, strengths: np.ndarray, k: int
                ) -> tuple[RecallResult, list[tuple[Any, ...]]]:
        """Cue ``i``'s answer (its episodes still empty) and its ranked picks, best first:
        (id, score, attention, masked cosine, strength) of at most ``k`` candidates; ``refusal``
        is what the threshold is compared with (``GateModel.refusal_scores``)."""
        ids = self._index.ids
        rows = stages.rows[i]
        valid = np.flatnonzero(rows >= 0)
        winner = int(stages.winner[i])
        threshold = self.config.threshold if self.config.threshold is not None else self._gate.threshold
        shown = valid[:k]
        separation = float(stages.separation_confidence[i])
        trace = {
            "search": [{"id": ids[row], "score": score} for row, score in
                       zip(rows[shown].tolist(), stages.search_scores[i, shown].tolist(), strict=True)],
            "completion_winner": ids[rows[winner]] if len(valid) else None,
            "features": dict(zip(FEATURES, features.tolist(), strict=True)),
            "separation_confidence": None if np.isnan(separation) else separation,
            "threshold": threshold,
            "holds": holds,
        }
        completion = stages.states[i]
        # Decayed strength lowers the rank additively: a fresh episode loses nothing.
        score = stages.scores[i] + self.config.strength_weight * (strengths - 1.0)
        ranked = valid[np.argsort(-score[valid], kind="stable")]
        order = np.concatenate([[winner], ranked[ranked != winner]])[:k]
        order = order[rows[order] >= 0]
        picks = list(zip([ids[row] for row in rows[order].tolist()], score[order].tolist(),
                         stages.attention[i, order].tolist(), stages.masked_cos[i, order].tolist(),
                         strengths[order].tolist(), strict=True))
        if not picks:
            return RecallResult("insufficient_evidence", "search", 0.0, self._gate.calibrated, [], completion,
                                {**trace, "reason": "no episode passes the filters"}), picks
        if self.config.gate and refusal < threshold:
            return RecallResult("insufficient_evidence", "gate", float(confidence), self._gate.calibrated,
                                [], completion, trace), picks
        return RecallResult("recalled", stages.decided_by[i], float(confidence), self._gate.calibrated,
                            [], completion, trace), picks

    def _attach_episodes(self, answers: list[tuple[RecallResult, list[tuple[Any, ...]]]]) -> None:
        """Fill each answer with its picked episodes as stored (payload, text, metadata): from the
        cache of recalled episodes, reading only those it lacks (one read for the batch)."""
        cache = self._recalled_cache
        wanted = {pick[0] for _, picks in answers for pick in picks}
        stored = {eid: cache[eid] for eid in wanted if eid in cache}
        missing = sorted(wanted - stored.keys())
        if missing:
            fetched = self.get_many(missing)
            if len(cache) + len(fetched) > _CACHE_MAX:
                cache.clear()
            cache.update(fetched)
            stored.update(fetched)
        for result, picks in answers:
            result.episodes.extend(Recalled(stored[eid], *rest) for eid, *rest in picks if eid in stored)

    # ------------------------------------------------------------------ gate

    def gate_features(self, results: Sequence[RecallResult]) -> np.ndarray:
        """(len(results), len(FEATURES)) the gate's features of recall answers, for ``fit_gate``."""
        rows = []
        for r in results:
            if "features" not in r.trace:
                raise ValueError("results: an answer from an empty space has no gate features")
            rows.append([r.trace["features"][f] for f in FEATURES])
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))

    def set_gate(self, model: GateModel) -> None:
        """Use (and persist in the space) a gate fitted elsewhere, e.g. on labelled questions."""
        if not isinstance(model, GateModel):
            raise TypeError(f"model: expected a GateModel, got {type(model).__name__}")
        with self._lock:
            self.backend.update_state(self.space, {"gate": model.to_state()})
            self._gate = model

    # ------------------------------------------------------------------ decay

    def _touch(self, winners: list[str], now: float) -> None:
        """Recall restores strength: buffer the winners' new stability, write in batches."""
        idx = self._index
        for eid in winners:
            row = idx.row_of.get(eid)
            if row is None:
                continue
            new = self.decay.after_recall(float(idx.stability[row]), now - float(idx.last_access[row]))
            idx.stability[row] = new
            idx.last_access[row] = max(now, float(idx.last_access[row]))
            _, _, count = self._pending.get(idx.ids[row], (0.0, 0.0, 0))
            self._pending[idx.ids[row]] = (new, float(idx.last_access[row]), count + 1)
        if len(self._pending) >= 256 or time.monotonic() - self._last_flush > 2.0:
            self._flush_touches()

    def _flush_touches(self) -> None:
        if self._pending:
            self._recalled_cache.clear()
            self.backend.touch(self.space, [(eid, s, t, n) for eid, (s, t, n) in self._pending.items()])
            self._pending.clear()
        self._last_flush = time.monotonic()

    def strength(self, id: str, now: float | None = None) -> StrengthReport:
        """Why an episode is as strong as it is and when (if ever) it will be forgotten."""
        if not isinstance(id, str):
            raise TypeError(f"id: expected a string, got {type(id).__name__} {id!r}")
        now = time.time() if now is None else _finite_float(now, "now")
        with self._lock:
            self._flush_touches()
        episode = self.backend.get(self.space, [id], with_embeddings=False).get(id)
        if episode is None:
            raise KeyError(f"id: no episode {id!r} in space {self.space!r}")
        return explain(self.decay, id, episode.stability, episode.last_access, episode.recalls,
                       episode.replays, episode.salience, episode.reward, now)

    def forget(self, now: float | None = None) -> list[str]:
        """Delete (truly, after ``compact``) every episode whose strength fell below
        ``decay.forget_below``; with the default policy nothing is ever forgotten."""
        now = time.time() if now is None else _finite_float(now, "now")
        if self.decay.forget_below <= self.decay.floor:
            return []
        with self._lock:
            self._flush_touches()
            self._index.sync(self.backend, self.space)
            weak = np.flatnonzero((self._strengths(now) < self.decay.forget_below) & self._index.alive)
            ids = [self._index.ids[r] for r in weak]
        return self.delete(ids) if ids else []

    # ------------------------------------------------------------------ calibration

    def calibrate(self, samples: int = 256, seed: int | None = None) -> CalibrationReport:
        """Fit the gate on cues made from this space's episodes (see ``engram.store.gate``)."""
        samples = arguments.integer(samples, "samples", low=1)
        seed = None if seed is None else arguments.integer(seed, "seed")
        with self._lock:
            self._index.sync(self.backend, self.space)
            return self._calibrate_locked(samples, self.seed if seed is None else seed)

    def _calibrate_locked(self, samples: int, seed: int) -> CalibrationReport:
        idx = self._index
        pool = np.flatnonzero(idx.alive & (np.array(idx.kinds) == "episode"))
        if len(pool) < 8:
            raise ValueError(f"samples: calibration needs at least 8 episodes, the space has {len(pool)}")
        rng = np.random.default_rng(seed)
        sources = rng.choice(pool, size=min(samples, len(pool)), replace=False)
        cues, known = synthetic_cues(idx.unit[sources], rng)
        with_source = self._run(cues, known, time.time())
        held_out = self._run(cues, known, time.time(), exclude_rows=sources)
        got = with_source.rows[np.arange(len(sources)), with_source.winner] == sources
        none = CueParts.none(len(sources))
        features = np.concatenate([pipeline.features(with_source, none), pipeline.features(held_out, none)])
        labels = np.concatenate([got, np.zeros(len(sources), dtype=bool)])
        try:
            self._gate = fit_gate(features, labels)
        except ValueError:
            self._gate = GateModel.prior()
            raise
        self.backend.update_state(self.space, {"gate": self._gate.to_state()})
        confidence = self._gate.confidence(features)
        accepted = confidence >= (self.config.threshold if self.config.threshold is not None else 0.5)
        n = len(sources)
        return CalibrationReport(
            samples=n, stored_top1=float(got.mean()), accept_stored=float(accepted[:n].mean()),
            refuse_novel=float(1.0 - accepted[n:].mean()), coef=self._gate.coef,
            intercept=self._gate.intercept,
        )

    @property
    def gate(self) -> GateModel:
        return self._gate

    # ------------------------------------------------------------------ sleep, stats, export

    def sleep(self, **options: Any):
        """Consolidate: replay, link, cluster into semantic prototypes, propose associations.

        See ``engram.store.consolidation.SleepConfig`` for the options; returns a ``SleepReport``.
        """
        from engram.store.consolidation import SleepConfig, consolidate

        with self._lock:
            self._flush_touches()
            report = consolidate(self, SleepConfig(**options))
            self._recalled_cache.clear()
            self._index.links_changed()
            self._index.sync(self.backend, self.space)
        return report

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._flush_touches()
            self._index.sync(self.backend, self.space)
            strengths = self._strengths(time.time())[self._index.alive]
        state = self.backend.get_state(self.space)
        return {
            "space": self.space,
            "dim": self.dim,
            "episodes": self.backend.count(self.space, "episode"),
            "semantic": self.backend.count(self.space, "semantic"),
            "links": len(self.backend.links(self.space)),
            "gate_calibrated": self._gate.calibrated,
            "strength_mean": float(strengths.mean()) if len(strengths) else None,
            "strength_min": float(strengths.min()) if len(strengths) else None,
            "sleeps": state.get("sleeps", 0),
            "embedder": state.get("embedder"),
        }

    def export(self, path: str | os.PathLike[str], embeddings: bool = True) -> int:
        """Write every episode (and its links) as JSON Lines; returns the number written."""
        from engram.io import atomic_write_text

        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path: expected a file path, got {type(path).__name__} {path!r}")
        embeddings = arguments.flag(embeddings, "embeddings")

        lines = []
        ids = [e.id for e in self.iter_episodes()]
        for start in range(0, len(ids), 1000):
            batch = self._with_fields(
                self.backend.get(self.space, ids[start : start + 1000], with_embeddings=embeddings))
            for eid in ids[start : start + 1000]:
                e = batch[eid]
                record = {
                    "id": e.id, "kind": e.kind, "timestamp": e.timestamp, "payload": e.payload,
                    "reward": e.reward, "salience": e.salience, "tags": list(e.tags),
                    "unfinished": e.unfinished, "recalls": e.recalls, "replays": e.replays,
                    "text": e.text, "who": e.who, "session": e.session,
                }
                if embeddings:
                    record["embedding"] = e.embedding.tolist()
                lines.append(json.dumps(record))
        for link in self.links():
            lines.append(json.dumps({"link": [link.src, link.dst, link.kind, link.weight]}))
        atomic_write_text(Path(path), "\n".join(lines) + ("\n" if lines else ""))
        return len(ids)

    def check(self) -> list[str]:
        """Integrity problems of this space (empty: every row's vector is present and intact)."""
        return self.backend.check(self.space)

    def repair(self) -> list[str]:
        """Drop the episodes ``check`` reports (vector missing or failing its CRC) so that the space
        is consistent again, then reload the index; returns the ids dropped."""
        with self._lock:
            self._flush_touches()
            removed = self.backend.repair(self.space)
            self._recalled_cache.clear()
            self._index.reload(self.backend, self.space)
        return removed

    def close(self) -> None:
        with self._lock:
            self._flush_touches()
            self.backend.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryStore(space={self.space!r}, dim={self.dim}, episodes={self._index.live})"


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")


def _embedder_dim(embedder: Any, dim: Any) -> int:
    if not isinstance(embedder, Embedder):
        raise TypeError(
            f"embedder: expected an object with name, dim and embed(), got {type(embedder).__name__}")
    if dim is not None and dim != embedder.dim:
        raise ValueError(f"dim: {embedder.name} makes {embedder.dim}-dimensional vectors, got dim={dim}")
    return int(embedder.dim)


def _texts(texts: Any, name: str = "texts") -> list[str]:
    """Texts checked: a list of non-empty strings of at most ``MAX_TEXT_CHARS`` characters."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name}: expected a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}: entry {i} is {type(text).__name__}, expected a string")
        if not text.strip():
            raise ValueError(f"{name}: entry {i} is empty; an episode or cue needs some text")
        if len(text) > MAX_TEXT_CHARS:
            raise ValueError(f"{name}: entry {i} has {len(text)} characters, more than {MAX_TEXT_CHARS}")
    return list(texts)


def _field(value: Any, name: str, kinds: type | tuple[type, ...]) -> Any:
    """A speaker or session value checked: None, or a short non-empty string (or an integer)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{name}: expected {' or '.join(k.__name__ for k in np.atleast_1d(kinds))} or None, "
                        f"got {type(value).__name__} {value!r}")
    if isinstance(value, str) and not 0 < len(value) <= _FIELD_MAX:
        raise ValueError(f"{name}: expected 1-{_FIELD_MAX} characters, got {value!r}")
    return value


def _where(where: Any) -> dict[str, list[Any]]:
    """A ``where=`` filter checked and normalised: each field to the list of accepted values."""
    if where is None:
        return {}
    if not isinstance(where, dict):
        raise TypeError(f"where: expected a dict of field filters, got {type(where).__name__}")
    unknown = sorted(set(where) - set(_WHERE_FIELDS))
    if unknown:
        raise ValueError(
            f"where: unknown field {unknown[0]!r}; filterable fields are {', '.join(_WHERE_FIELDS)}")
    kinds: dict[str, tuple[type, ...]] = {"who": (str,), "session": (int, str), "tags": (str,),
                                          "kind": (str,)}
    out: dict[str, list[Any]] = {}
    for key, value in where.items():
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, kinds[key]):
                raise TypeError(f"where: {key} expects {' or '.join(k.__name__ for k in kinds[key])} values, "
                                f"got {type(v).__name__} {v!r}")
        out[key] = values
    return out


def synthetic_cues(unit: np.ndarray, rng: np.random.Generator, keep: tuple[float, float] = (0.3, 0.7),
                   noise: tuple[float, float] = (0.0, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """Partial, noisy cues from unit-norm embeddings: a random share ``keep`` of dimensions
    known, Gaussian noise of relative size ``noise`` (per cue, uniform in the ranges)."""
    n, d = unit.shape
    fractions = rng.uniform(*keep, size=(n, 1))
    known = rng.random((n, d)) < fractions
    known[np.arange(n), rng.integers(0, d, n)] = True
    sigma = rng.uniform(*noise, size=(n, 1)) / np.sqrt(d)
    cues = (unit + sigma * rng.standard_normal((n, d))).astype(np.float32)
    return cues, known


__all__ = ["CalibrationReport", "MemoryStore", "RecallResult", "Recalled", "synthetic_cues"]
