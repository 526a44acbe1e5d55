"""``MemoryStore``: a persistent episodic memory that completes, refuses, forgets and consolidates.

One object is one named memory space of a store directory; spaces of the same directory
never see each other's episodes, links or calibration.

Example:
    >>> store = MemoryStore("memories", space="agent-1", dim=4)          # doctest: +SKIP
    >>> store.add([1.0, 0.0, 0.5, 0.2], payload={"text": "met Ada"})     # doctest: +SKIP
    >>> store.recall([1.0, 0.0, 0.0, 0.0], k=1, known=[1, 1, 0, 0])      # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
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
from engram.store import arguments, pipeline
from engram.store.backend import Episode, Link, StorageBackend
from engram.store.decay import DecayPolicy, StrengthReport, explain
from engram.store.gate import GateModel, fit_gate
from engram.store.index import RecallIndex
from engram.store.pipeline import RecallConfig, Separator
from engram.store.sqlite import SQLiteBackend, check_space_name

_ID_MAX = 128
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
# faiss is optional: without it, spaces above ``faiss_above`` keep the exact scan.
_HAS_FAISS = importlib.util.find_spec("faiss") is not None


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

    ``status`` is ``"recalled"`` (``episodes`` ranked, best first) or ``"insufficient_evidence"``
    (``episodes`` empty). ``decided_by`` names the stage that settled it: ``"search"`` (the
    nearest neighbour stood, or nothing was stored), ``"completion"`` (Hopfield completion
    changed the winner), ``"separation"`` (the sparse attractor did) or ``"gate"`` (refused).
    ``confidence`` is the gate's probability that the top episode is the cue's own;
    ``calibrated`` says whether the gate was fitted on this store. ``completion`` is the
    completed cue (unit norm); ``trace`` holds per-stage detail for inspection.
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
    """A persistent episodic memory space in a directory.

    Args:
        path: the store directory (created if absent).
        space: the memory space this object reads and writes (created if absent).
        dim: embedding dimension, fixed when the store is created (768 by default).
        config: the recall pipeline's settings (``RecallConfig``).
        decay: the forgetting schedule (``DecayPolicy``).
        durable: fsync every write (``False`` trades power-loss safety for speed; a process
            crash still loses nothing committed).
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
    ):
        self.space = check_space_name(space)
        config = RecallConfig() if config is None else arguments.instance(config, "config", RecallConfig)
        decay = DecayPolicy() if decay is None else arguments.instance(decay, "decay", DecayPolicy)
        seed = arguments.integer(seed, "seed")
        if backend is None:
            backend = SQLiteBackend(path, dim=dim, durable=arguments.flag(durable, "durable"))
        self.backend = arguments.instance(backend, "backend", StorageBackend)
        self.dim = self.backend.dim
        self.config = config
        self.decay = decay
        self.seed = seed
        self.backend.ensure_space(self.space)
        self._lock = threading.RLock()
        self._hopfield = ModernHopfield(self.dim, beta=self.config.beta, steps=1)
        self._separator = (
            Separator(self.dim, self.config.dg_units, self.config.dg_sparsity, self.seed)
            if self.config.separation else None
        )
        self._index = RecallIndex(self.dim)
        self._index.reload(self.backend, self.space)
        self._gate = GateModel.from_state(self.backend.get_state(self.space).get("gate"))
        self._pending: dict[str, tuple[float, float, int]] = {}
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
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise TypeError(f"tags: expected a list of strings, got {tags!r}")
        if not isinstance(unfinished, (bool, np.bool_)):
            raise TypeError(f"unfinished: expected a bool, got {type(unfinished).__name__}")
        return Episode(
            id=eid, embedding=embedding, payload=payload, timestamp=timestamp,
            reward=reward, salience=salience, tags=tuple(tags), unfinished=bool(unfinished),
            stability=self.decay.initial_stability(salience, reward), last_access=timestamp,
        )

    # ------------------------------------------------------------------ writing

    def add(self, embedding: Any, payload: dict[str, Any] | None = None, *, id: str | None = None,
            timestamp: float | None = None, reward: float = 0.0, salience: float = 0.0,
            tags: Sequence[str] = (), unfinished: bool = False) -> str:
        """Store one episode; returns its id once it is durable."""
        vector = self._vectors(embedding, "embedding", one=True)
        episode = self._episode(vector, payload, id, timestamp, reward, salience, tags, unfinished,
                                time.time())
        self._write([episode])
        return episode.id

    def add_batch(self, embeddings: Any, payloads: Sequence[dict[str, Any] | None] | None = None, *,
                  ids: Sequence[str] | None = None, timestamps: Sequence[float] | None = None,
                  rewards: Sequence[float] | None = None, saliences: Sequence[float] | None = None,
                  tags: Sequence[Sequence[str]] | None = None,
                  unfinished: Sequence[bool] | None = None) -> list[str]:
        """Store many episodes in one transaction (all or none); returns their ids."""
        vectors = self._vectors(embeddings, "embeddings", one=False)
        n = len(vectors)
        columns = {"payloads": payloads, "ids": ids, "timestamps": timestamps, "rewards": rewards,
                   "saliences": saliences, "tags": tags, "unfinished": unfinished}
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
        now = time.time()
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
        self._write(episodes)
        return [e.id for e in episodes]

    def _write(self, episodes: list[Episode]) -> None:
        with self._lock:
            self._flush_touches()
            self.backend.insert(self.space, episodes)
            self._index.sync(self.backend, self.space)
            self._index.append(self.backend.index_rows(self.space, after_seq=self._index.max_seq))

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
            self._index.remove(removed)
            self._index.sync(self.backend, self.space)
        return removed

    def compact(self) -> dict[str, int]:
        """Rewrite the files without deleted episodes (true deletion); returns slots reclaimed."""
        with self._lock:
            self._flush_touches()
            report = self.backend.compact(self.space)
            self._index.reload(self.backend, self.space)
        return report

    # ------------------------------------------------------------------ reading

    def get(self, id: str) -> Episode | None:
        """The episode with this id, or None."""
        if not isinstance(id, str):
            raise TypeError(f"id: expected a string, got {type(id).__name__}")
        return self.backend.get(self.space, [id]).get(id)

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
        return self.backend.get(self.space, ids)

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

    def recall(self, cue: Any, k: int = 5, known: Any = None, *, now: float | None = None) -> RecallResult:
        """Ranked episodes for a cue (d,), or "insufficient evidence".

        ``known`` masks the dimensions of a partial cue (bool or 0/1, shape (d,)); the rest of
        the cue is ignored and filled in by completion.
        """
        cue = self._vectors(cue, "cue", one=True)
        return self.recall_batch(cue[None], k=k, known=None if known is None else self._known(
            known, (self.dim,))[None], now=now)[0]

    def recall_batch(self, cues: Any, k: int = 5, known: Any = None, *,
                     now: float | None = None) -> list[RecallResult]:
        """``recall`` for a batch of cues (B, d) with masks (d,) or (B, d)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k: expected a positive integer, got {k!r}")
        cues = self._vectors(cues, "cues", one=False)
        known = self._known(known, cues.shape)
        known_norms = np.linalg.norm(np.where(known, cues, 0.0).astype(np.float64), axis=1)
        if not (known_norms >= _NORMS[0]).all():
            row = int(np.flatnonzero(known_norms < _NORMS[0])[0])
            raise ValueError(
                f"{'cue' if len(cues) == 1 else f'cues[{row}]'}: expected the known dimensions to have a "
                f"norm of at least {_NORMS[0]:g}, got {known_norms[row]:.3g}, so there is no evidence"
            )
        now = time.time() if now is None else _finite_float(now, "now")
        with self._lock:
            if self._index.sync(self.backend, self.space):
                # Another process may have recalibrated the gate (e.g. `engram sleep`).
                self._gate = GateModel.from_state(self.backend.get_state(self.space).get("gate"))
            if self._index.live == 0:
                return [RecallResult("insufficient_evidence", "search", 0.0, self._gate.calibrated, [],
                                     None, {"reason": "the space holds no episodes"}) for _ in cues]
            live = self._index.live
            if (not self._gate.calibrated and live >= self.config.min_calibration
                    and live >= 2 * self._calibration_failed_at):
                try:
                    self._calibrate_locked(samples=min(256, live), seed=self.seed)
                except ValueError:
                    # Too uniform to fit (e.g. every cue answered wrongly): keep the prior, retry
                    # once the space has doubled.
                    self._calibration_failed_at = live
            stages = self._run(cues, known, now)
            features = stages.features()
            confidence = self._gate.confidence(features)
            # Strength of the candidates only: O(B·C), not O(n), per query.
            rows = np.maximum(stages.rows, 0)
            strengths = self.decay.strength(self._index.stability[rows], now - self._index.last_access[rows])
            results = [self._answer(stages, features[i], i, confidence[i], strengths[i], k)
                       for i in range(len(cues))]
            self._touch([r for r in results if r.accepted], now)
        self._attach_episodes(results)
        return results

    def _strengths(self, now: float) -> np.ndarray:
        idx = self._index
        return self.decay.strength(idx.stability, now - idx.last_access)

    def _run(self, cues: np.ndarray, known: np.ndarray, now: float,
             exclude_rows: np.ndarray | None = None) -> pipeline.Stages:
        idx = self._index
        dead = idx.dead_mask()
        if self.decay.forget_below > self.decay.floor:
            forgotten = self._strengths(now) < self.decay.forget_below
            dead = forgotten if dead is None else dead | forgotten
        candidates = None
        limit = self.config.faiss_above
        if limit is not None and idx.live >= limit and exclude_rows is None and _HAS_FAISS:
            queries = pipeline.masked_cues(cues, known)
            candidates = idx.faiss_search(queries, self.config.candidates, self.config.faiss_nprobe)
            if dead is not None:
                keep = np.where(candidates[0] >= 0, ~dead[np.maximum(candidates[0], 0)], False)
                candidates = (np.where(keep, candidates[0], -1), np.where(keep, candidates[1], -np.inf))
        elif self.config.sketch_dim and exclude_rows is None:
            candidates = idx.sketch_search(pipeline.masked_cues(cues, known), self.config.candidates,
                                           self.config.sketch_dim, self.config.sketch_shortlist,
                                           self.seed, dead)
        return pipeline.run(idx.view(), cues, known, self.config, self._hopfield, self._separator,
                            candidates=candidates, dead=dead, exclude_rows=exclude_rows)

    def _answer(self, stages: pipeline.Stages, features: np.ndarray, i: int, confidence: float,
                strengths: np.ndarray, k: int) -> RecallResult:
        idx = self._index
        rows = stages.rows[i]
        valid = np.flatnonzero(rows >= 0)
        winner = int(stages.winner[i])
        trace = {
            "search": [{"id": idx.ids[rows[j]], "score": float(stages.search_scores[i, j])}
                       for j in valid[:k]],
            "completion_winner": idx.ids[rows[winner]],
            "features": dict(zip(("masked_cosine", "margin", "attention"),
                                 map(float, features), strict=True)),
            "separation_confidence": None if np.isnan(stages.separation_confidence[i])
            else float(stages.separation_confidence[i]),
            "threshold": self.config.threshold,
        }
        completion = stages.states[i]
        if confidence < self.config.threshold:
            return RecallResult("insufficient_evidence", "gate", float(confidence), self._gate.calibrated,
                                [], completion, trace)
        w = self.config.strength_weight
        score = stages.attention[i, valid] * strengths[valid] ** w
        order = [winner] + [int(valid[j]) for j in np.argsort(-score, kind="stable") if valid[j] != winner]
        ranked = [
            Recalled(
                episode=Episode(id=idx.ids[rows[j]], embedding=idx.unit[rows[j]].copy(), payload={},
                                timestamp=0.0),
                score=float(stages.attention[i, j] * strengths[j] ** w),
                attention=float(stages.attention[i, j]),
                masked_cosine=float(stages.masked_cos[i, j]),
                strength=float(strengths[j]),
            )
            for j in order[:k]
        ]
        return RecallResult("recalled", stages.decided_by[i], float(confidence), self._gate.calibrated,
                            ranked, completion, trace)

    def _attach_episodes(self, results: list[RecallResult]) -> None:
        """Replace the placeholder episodes of answers with the stored ones (payload, metadata)."""
        wanted = {r.episode.id for result in results for r in result.episodes}
        if not wanted:
            return
        stored = self.backend.get(self.space, sorted(wanted))
        for result in results:
            result.episodes[:] = [
                Recalled(stored[r.episode.id], r.score, r.attention, r.masked_cosine, r.strength)
                for r in result.episodes if r.episode.id in stored
            ]

    # ------------------------------------------------------------------ decay

    def _touch(self, results: list[RecallResult], now: float) -> None:
        """Recall restores strength: buffer the winners' new stability, write in batches."""
        idx = self._index
        for result in results:
            row = idx.row_of.get(result.episodes[0].episode.id)
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
        features = np.concatenate([with_source.features(), held_out.features()])
        labels = np.concatenate([got, np.zeros(len(sources), dtype=bool)])
        try:
            self._gate = fit_gate(features, labels)
        except ValueError:
            self._gate = GateModel.prior()
            raise
        self.backend.update_state(self.space, {"gate": self._gate.to_state()})
        confidence = self._gate.confidence(features)
        accepted = confidence >= self.config.threshold
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
        }

    def export(self, path: str | os.PathLike[str], embeddings: bool = True) -> int:
        """Write every episode (and its links) as JSON Lines; returns the number written."""
        from engram.runs import atomic_write_text

        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path: expected a file path, got {type(path).__name__} {path!r}")
        embeddings = arguments.flag(embeddings, "embeddings")

        lines = []
        ids = [e.id for e in self.iter_episodes()]
        for start in range(0, len(ids), 1000):
            batch = self.backend.get(self.space, ids[start : start + 1000], with_embeddings=embeddings)
            for eid in ids[start : start + 1000]:
                e = batch[eid]
                record = {
                    "id": e.id, "kind": e.kind, "timestamp": e.timestamp, "payload": e.payload,
                    "reward": e.reward, "salience": e.salience, "tags": list(e.tags),
                    "unfinished": e.unfinished, "recalls": e.recalls, "replays": e.replays,
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
        check = getattr(self.backend, "check", None)
        return check(self.space) if check else []

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
