"""A LangGraph ``BaseStore`` over the engine, so LangGraph agents keep their long-term memory in Engram.

Each item (namespace, key) is one episode of a ``MemoryStore`` space: its value in the payload,
the text at its indexed paths embedded by the space's embedder, its namespace prefixes as tags,
so a query search is the engine's hybrid recall inside the namespace, with its gate. When the
gate finds too little evidence, ``search`` returns no items (a plain LangGraph caller gets
nothing to confabulate from); ``search_verdict`` gives the verdict, confidence and candidates.
Items may live for a TTL (LangGraph's ``TTLConfig``): reads refresh it, ``sweep_ttl`` or a
background sweeper deletes what expired.

Example:
    >>> memory = MemoryStore("memories", space="agent", embedder=HashingEmbedder())  # doctest: +SKIP
    >>> store = EngramStore(memory)                                                  # doctest: +SKIP
    >>> store.put(("users", "ada"), "diet", {"text": "Ada is allergic to peanuts"})  # doctest: +SKIP
    >>> store.search(("users",), query="what is Ada allergic to?")[0].key            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from engram.extras import require
from engram.store import arguments
from engram.store.backend import Episode
from engram.store.embed import check_embeddings
from engram.store.lexical import MAX_TEXT_CHARS
from engram.store.memory import MemoryStore

_lg = require("langgraph.store.base", "langgraph")

_ID_MAX = 128
_Key = tuple[tuple[str, ...], str]  # an item: (namespace, key)
_META = "langgraph"  # the payload key holding namespace, key, times and version
_NS_TAG = "langgraph:ns:"  # + the escaped labels of one namespace prefix, joined by '.'
_EQ_TAG = "langgraph:eq:"  # + JSON [field, kind, value] of one top-level scalar field
_EQ_TAG_MAX = 160
_UNINDEXED_TEXT = "-"  # stored text of an item indexed for nothing: no word, so no lexical match
_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
_ORDER = {"$gt": float.__gt__, "$gte": float.__ge__, "$lt": float.__lt__, "$lte": float.__le__}
# Characters an escaped label or key never holds as themselves: '%' (the escape), '.' (joins the
# parts), '~' (marks the second slot), and what an episode id may not contain.
_ESCAPED = re.compile("[%./\\\\~\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(part: str) -> str:
    return _ESCAPED.sub(
        lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8", "surrogatepass")), part)


def episode_ids(namespace: tuple[str, ...], key: str) -> tuple[str, str]:
    """The two episode ids an item may occupy: its labels and key escaped and joined by '.'
    (``users.ada.diet``), the second with a trailing '~'; a SHA-256 digest when too long.

    A put writes the new version into the free slot before deleting the old one, so an
    item is never absent in between; readers take the higher version.
    """
    base = ".".join(_escape(part) for part in (*namespace, key))
    if len(base) >= _ID_MAX:
        base = "sha256-" + hashlib.sha256(base.encode("utf-8", "surrogatepass")).hexdigest()
    return base, base + "~"


def parse_episode_id(eid: str) -> _Key | None:
    """(namespace, key) of an id made by ``episode_ids``; None for a digest id (its payload
    holds both)."""
    base = eid[:-1] if eid.endswith("~") else eid
    if "." not in base:
        return None
    *labels, key = (urllib.parse.unquote(part, errors="surrogatepass") for part in base.split("."))
    return tuple(labels), key


def _prefix_tag(labels: Sequence[str]) -> str:
    return _NS_TAG + ".".join(_escape(label) for label in labels)


def _equality_tag(field: str, value: Any) -> str | None:
    """The tag of ``field == value`` for a scalar value; equal scalars (1, 1.0, True) share one.
    None where the value is no scalar or the tag would be long (such filters stay post-filters)."""
    if value is None:
        typed = [field, "z", None]
    elif isinstance(value, str):
        typed = [field, "s", value]
    elif isinstance(value, (bool, int, float)):
        try:
            typed = [field, "n", float(value) + 0.0]  # + 0.0: -0.0 == 0.0, so one tag
        except OverflowError:
            return None
    else:
        return None
    tag = _EQ_TAG + json.dumps(typed)
    return tag if len(tag) <= _EQ_TAG_MAX else None


_seconds = time.time  # the clock TTLs are kept by (a name of its own, so tests can move it)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# ---------------------------------------------------------------------- input checks


def _check_namespace(namespace: Any, name: str, *, writing: bool) -> tuple[str, ...]:
    """A namespace as LangGraph's ``BaseStore`` checks it, for ops passed to ``batch`` directly."""
    if not isinstance(namespace, tuple):
        raise TypeError(f"{name}: expected a tuple of strings, got {type(namespace).__name__} {namespace!r}")
    for label in namespace:
        if not isinstance(label, str):
            raise _lg.InvalidNamespaceError(
                f"{name}: expected string labels, got {type(label).__name__} {label!r} in {namespace!r}")
        if not label or "." in label or "\x00" in label:
            raise _lg.InvalidNamespaceError(
                f"{name}: expected non-empty labels without '.' or NUL, got {label!r} in {namespace!r}")
    if writing and not namespace:
        raise _lg.InvalidNamespaceError(f"{name}: expected at least one label, got ()")
    if writing and namespace[0] == "langgraph":
        raise _lg.InvalidNamespaceError(f"{name}: the root label 'langgraph' is reserved, got {namespace!r}")
    return namespace


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key: expected a string, got {type(key).__name__} {key!r}")
    return key


def _check_value(value: Any) -> dict[str, Any]:
    """A copy of the value that JSON stores exactly (so what ``get`` returns equals what was put)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"value: expected a mapping (dict) or None, got {type(value).__name__}")
    value = dict(value)
    try:
        copy = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise TypeError(f"value: expected JSON data (no NaN or infinity), got one that is not: {error}") \
            from None
    if copy != value:
        raise TypeError("value: expected JSON data that reads back equal (string keys; lists, not tuples), "
                        f"got {value!r}")
    return copy


def _check_filter(filter: Any, name: str = "filter") -> dict[str, Any]:
    """A value filter in LangGraph's form: fields to values, nested dicts, or ``$`` operators."""
    if filter is None:
        return {}
    if not isinstance(filter, dict):
        raise TypeError(f"{name}: expected a dict of field filters, got {type(filter).__name__} {filter!r}")
    for field, wanted in filter.items():
        if not isinstance(field, str):
            raise TypeError(f"{name}: expected string fields, got {type(field).__name__} {field!r}")
        if isinstance(wanted, dict):
            if any(isinstance(k, str) and k.startswith("$") for k in wanted):
                unknown = [k for k in wanted if k not in _OPERATORS]
                if unknown:
                    raise ValueError(f"{name}: {field}: expected operators among {', '.join(_OPERATORS)}, "
                                     f"got {unknown[0]!r}")
            else:
                _check_filter(wanted, f"{name}.{field}")
    return filter


def _matches(value: Any, wanted: Any) -> bool:
    """Whether a stored value satisfies one filter entry, as LangGraph's ``InMemoryStore`` decides;
    where that raises (an order operator on a missing or non-numeric value), no match."""
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_satisfies(value, op, operand) for op, operand in wanted.items())
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        return (isinstance(value, (list, tuple)) and len(value) == len(wanted)
                and all(_matches(v, w) for v, w in zip(value, wanted, strict=True)))
    return bool(value == wanted)


def _satisfies(value: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return bool(value == operand)
    if operator == "$ne":
        return bool(value != operand)
    try:
        return _ORDER[operator](float(value), float(operand))
    except (TypeError, ValueError, OverflowError):
        return False


def _check_ttl(ttl: Any, name: str) -> float | None:
    """A TTL in minutes: a finite number above 0, or None (the item never expires)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"{name}: expected minutes to live (a finite number > 0) or None, got {ttl!r}")
    return float(ttl)


def _check_ttl_config(config: Any) -> dict[str, Any] | None:
    """LangGraph's ``TTLConfig``, its values checked."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise TypeError(f"ttl: expected a TTLConfig dict, got {type(config).__name__} {config!r}")
    known = ("refresh_on_read", "omit_expired", "default_ttl", "sweep_interval_minutes")
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ValueError(f"ttl: unknown setting {unknown[0]!r}; expected some of {', '.join(known)}")
    for flag in ("refresh_on_read", "omit_expired"):
        if flag in config and not isinstance(config[flag], bool):
            raise TypeError(f"ttl.{flag}: expected True or False, got {config[flag]!r}")
    _check_ttl(config.get("default_ttl"), "ttl.default_ttl")
    _check_ttl(config.get("sweep_interval_minutes"), "ttl.sweep_interval_minutes")
    return dict(config)


def _paging(limit: Any, offset: Any) -> tuple[int, int]:
    return arguments.integer(limit, "limit", low=0), arguments.integer(offset, "offset", low=0)


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class Verdict:
    """A query search with the engine's verdict.

    ``status`` is ``"recalled"`` or ``"insufficient_evidence"`` (the gate refused, or nothing in
    the namespace matched); ``items`` is what ``search`` returns: the ranked matches when
    recalled, empty when refused. ``candidates`` holds them in either case, best first, so a
    caller can look at what was too weak; ``confidence`` is the gate's P(top match is right).
    """

    status: str
    confidence: float
    items: list[Any]
    candidates: list[Any]

    @property
    def accepted(self) -> bool:
        return self.status == "recalled"


@dataclass(frozen=True)
class _Stored:
    """One stored version of an item, as read back from its episode."""

    eid: str
    namespace: tuple[str, ...]
    key: str
    value: dict[str, Any]
    created_at: str
    updated_at: str
    version: int
    ttl: float | None = None  # minutes
    expires_at: float | None = None  # Unix seconds

    @classmethod
    def of(cls, episode: Episode) -> _Stored | None:
        meta = episode.payload.get(_META)
        if not isinstance(meta, dict):
            return None  # an episode someone stored in this space without the adapter
        return cls(episode.id, tuple(meta["namespace"]), meta["key"], episode.payload["value"],
                   meta["created_at"], meta["updated_at"], int(meta["version"]), meta.get("ttl"),
                   meta.get("expires_at"))

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def item(self) -> Any:
        return _lg.Item(value=self.value, key=self.key, namespace=self.namespace,
                        created_at=datetime.fromisoformat(self.created_at),
                        updated_at=datetime.fromisoformat(self.updated_at))

    def search_item(self, score: float | None = None, copy: bool = False) -> Any:
        value = json.loads(json.dumps(self.value)) if copy else self.value
        return _lg.SearchItem(namespace=self.namespace, key=self.key, value=value,
                              created_at=datetime.fromisoformat(self.created_at),
                              updated_at=datetime.fromisoformat(self.updated_at), score=score)


def _newest(versions: Iterable[_Stored | None]) -> _Stored | None:
    found = [v for v in versions if v is not None]
    return max(found, key=lambda v: v.version) if found else None


# ---------------------------------------------------------------------- the store


class EngramStore(_lg.BaseStore):
    """LangGraph's ``BaseStore`` over one ``MemoryStore`` space (which must have an embedder).

    Args:
        memory: the engine space that holds the items; its embedder embeds their text and the
            queries, its ``RecallConfig`` (``candidates``: how deep a query search ranks) and
            gate decide recall. ``close()`` closes it.
        index: LangGraph's index config: ``fields`` (JSON paths whose text is embedded; default
            ``["$"]``, the whole value) and optionally ``dims`` (checked against the embedder).
            Search by query is on even without it, since every episode is embedded.

        ttl: LangGraph's ``TTLConfig``: ``default_ttl`` (minutes) for puts that give none,
            ``refresh_on_read`` (default True: a get or search restarts an item's TTL),
            ``omit_expired`` (default False: an expired item is read until a sweep deletes it),
            ``sweep_interval_minutes`` (the period ``start_ttl_sweeper`` uses).

    A TTL is kept in the item's episode (its expiry time), so it survives reopening; refreshing
    one rewrites the item's episode with the same vector, text and tags.
    """

    supports_ttl = True

    def __init__(self, memory: MemoryStore, *, index: Mapping[str, Any] | None = None,
                 ttl: Mapping[str, Any] | None = None):
        self.memory = arguments.instance(memory, "memory", MemoryStore)
        if memory.embedder is None:
            raise ValueError("memory: expected a MemoryStore with an embedder (items are stored as text), "
                             "got one without")
        self._embedder = memory.embedder
        self._fields = self._index_fields(index)
        self.ttl_config = _check_ttl_config(ttl)  # type: ignore[assignment]
        self._write_lock = threading.Lock()
        self._sweeper: tuple[threading.Thread, threading.Event, concurrent.futures.Future] | None = None

    def _index_fields(self, index: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
        if index is None:
            return [("$", "$")]
        if not isinstance(index, Mapping):
            raise TypeError(f"index: expected a dict like {{'fields': ['text']}}, got {type(index).__name__}")
        unknown = sorted(set(index) - {"fields", "dims", "embed"})
        if unknown:
            raise ValueError(f"index: unknown setting {unknown[0]!r}; expected fields and dims")
        if index.get("embed") is not None:
            raise ValueError("index: embed is the MemoryStore's embedder here (MemoryStore(..., "
                             f"embedder=...)), got {type(index['embed']).__name__}")
        dims = index.get("dims")
        if dims is not None and dims != self._embedder.dim:
            raise ValueError(f"index: dims {dims!r} differs from the embedder's {self._embedder.dim} "
                             f"({self._embedder.name})")
        return self._paths(index.get("fields") or ["$"], "index.fields")

    @staticmethod
    def _paths(paths: Any, name: str) -> list[tuple[str, Any]]:
        if isinstance(paths, str) or not isinstance(paths, Sequence) or \
                not all(isinstance(p, str) for p in paths):
            raise TypeError(f"{name}: expected a list of JSON path strings, got {paths!r}")
        return [(p, p if p == "$" else _lg.tokenize_path(p)) for p in paths]

    # ------------------------------------------------------------------ LangGraph's interface

    def batch(self, ops: Iterable[Any]) -> list[Any]:
        """Run LangGraph ops in order of kind: reads see the store as it was before the batch's
        writes (as ``InMemoryStore``); the puts, the last one per item winning, commit together."""
        ops = list(ops)
        results: list[Any] = [None] * len(ops)
        puts: dict[_Key, Any] = {}
        gets: list[tuple[int, tuple[str, ...], str]] = []
        for i, op in enumerate(ops):
            if isinstance(op, _lg.GetOp):
                namespace = _check_namespace(op.namespace, "namespace", writing=False)
                gets.append((i, namespace, _check_key(op.key)))
            elif isinstance(op, _lg.PutOp):
                puts[(_check_namespace(op.namespace, "namespace", writing=True), _check_key(op.key))] = \
                    self._check_put(op)
            elif isinstance(op, _lg.SearchOp):
                _check_namespace(op.namespace_prefix, "namespace_prefix", writing=False)
            elif isinstance(op, _lg.ListNamespacesOp):
                _lg.validate_op_namespace(op)
            else:
                raise TypeError(f"ops[{i}]: expected a GetOp, PutOp, SearchOp or ListNamespacesOp, "
                                f"got {type(op).__name__}")
        read: dict[_Key, _Stored] = {}  # items whose TTL the batch's reads restart
        if gets:
            found = self._live(self._read([(ns, key) for _, ns, key in gets]))
            for i, ns, key in gets:
                current = found.get((ns, key))
                results[i] = None if current is None else current.item()
                if current is not None and ops[i].refresh_ttl:
                    read[(ns, key)] = current
        scanned: list[_Stored] | None = None  # one scan serves every listing of the batch
        for i, op in enumerate(ops):
            if isinstance(op, _lg.SearchOp) and op.query:
                verdict, shown = self._rank(op)
                results[i] = verdict.items
            elif isinstance(op, (_lg.SearchOp, _lg.ListNamespacesOp)):
                if scanned is None:
                    scanned = list(self._live({(s.namespace, s.key): s for s in self._scan()}).values())
                if isinstance(op, _lg.SearchOp):
                    shown = self._list(scanned, op)
                    results[i] = [s.search_item() for s in shown]
                else:
                    results[i] = self._namespaces(scanned, op)
                    continue
            else:
                continue
            if op.refresh_ttl:
                read.update({(s.namespace, s.key): s for s in shown})
        if puts:
            self._write(puts)
        refresh = [s for item, s in read.items() if s.ttl is not None and item not in puts]
        if refresh:
            self._refresh(refresh)
        return results

    async def abatch(self, ops: Iterable[Any]) -> list[Any]:
        """``batch`` in a worker thread: SQLite and the embedder block."""
        return await asyncio.get_running_loop().run_in_executor(None, self.batch, list(ops))

    def search_verdict(self, namespace_prefix: tuple[str, ...], /, *, query: str,
                       filter: dict[str, Any] | None = None, limit: int = 10, offset: int = 0) -> Verdict:
        """``search`` by query with the engine's verdict and its candidates also when it refuses."""
        _check_namespace(namespace_prefix, "namespace_prefix", writing=False)
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"query: expected a non-empty string, got {query!r}")
        return self._rank(_lg.SearchOp(namespace_prefix, filter, limit, offset, query))[0]

    async def asearch_verdict(self, namespace_prefix: tuple[str, ...], /, *, query: str,
                              filter: dict[str, Any] | None = None, limit: int = 10,
                              offset: int = 0) -> Verdict:
        """``search_verdict`` in a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.search_verdict(namespace_prefix, query=query, filter=filter, limit=limit,
                                              offset=offset))

    def close(self) -> None:
        self.stop_ttl_sweeper()
        self.memory.close()

    # ------------------------------------------------------------------ TTL

    def sweep_ttl(self) -> int:
        """Delete every item whose TTL has run out; returns how many items went."""
        with self._write_lock:
            now = _seconds()
            gone = {(s.namespace, s.key) for s in self._scan() if s.expired(now)}
            stale = [eid for item in gone for eid in episode_ids(*item)]
            if stale:
                self.memory.delete(stale)
        return len(gone)

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> concurrent.futures.Future:
        """Sweep every ``sweep_interval_minutes`` (default: the TTL config's) in a background
        thread until ``stop_ttl_sweeper``; the future ends when the thread does."""
        interval = sweep_interval_minutes
        if interval is None:
            interval = (self.ttl_config or {}).get("sweep_interval_minutes")
        interval = _check_ttl(interval, "sweep_interval_minutes")
        if interval is None:
            raise ValueError("sweep_interval_minutes: expected minutes between sweeps (here or in "
                             "ttl.sweep_interval_minutes), got None")
        if self._sweeper is not None:
            return self._sweeper[2]
        stop, done = threading.Event(), concurrent.futures.Future()

        def sweep() -> None:
            try:
                while not stop.wait(interval * 60):
                    self.sweep_ttl()
                done.set_result(None)
            except BaseException as error:  # reported through the future
                done.set_exception(error)

        thread = threading.Thread(target=sweep, name="engram-ttl-sweeper", daemon=True)
        self._sweeper = (thread, stop, done)
        thread.start()
        return done

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the background sweeper; True when it has stopped (or none ran)."""
        if self._sweeper is None:
            return True
        thread, stop, _ = self._sweeper
        stop.set()
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._sweeper = None
        return True

    def _live(self, found: dict[_Key, _Stored]) -> dict[_Key, _Stored]:
        """``found`` without expired items when the TTL config omits them from reads."""
        if not (self.ttl_config or {}).get("omit_expired"):
            return found
        now = _seconds()
        return {item: s for item, s in found.items() if not s.expired(now)}

    def _refresh(self, read: list[_Stored]) -> None:
        """Restart the TTL of items just read: each gets a new version with a later expiry and
        the same value, times, vector, text and tags (written before the old one is deleted)."""
        memory = self.memory
        with self._write_lock:
            current = self._read([(s.namespace, s.key) for s in read])  # as of now, under the lock
            slots = {item: episode_ids(*item) for item in current}
            found = memory.get_many([eid for pair in slots.values() for eid in pair])
            now, rows, stale = _seconds(), [], []
            for item, stored in current.items():
                if stored.ttl is None:
                    continue
                episode = found[stored.eid]
                meta = dict(episode.payload[_META], version=stored.version + 1,
                            expires_at=now + stored.ttl * 60)
                other = next(eid for eid in slots[item] if eid != stored.eid)
                if other in found:  # a put cut short left the older version behind
                    memory.delete([other])
                rows.append((other, episode, {_META: meta, "value": episode.payload["value"]}))
                stale.append(stored.eid)
            if rows:
                memory.add_batch(np.stack([e.embedding for _, e, _ in rows]), [p for _, _, p in rows],
                                 texts=[e.text for _, e, _ in rows], ids=[eid for eid, _, _ in rows],
                                 tags=[list(e.tags) for _, e, _ in rows])
                memory.delete(stale)

    def __enter__(self) -> EngramStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def _read(self, items: Sequence[_Key]) -> dict[_Key, _Stored]:
        """The current version of each item that exists (one read for all)."""
        slots = {item: episode_ids(*item) for item in items}
        found = self.memory.get_many([eid for pair in slots.values() for eid in pair])
        out = {}
        for item, pair in slots.items():
            newest = _newest(_Stored.of(found[eid]) for eid in pair if eid in found)
            if newest is not None:
                out[item] = newest
        return out

    def _scan(self) -> list[_Stored]:
        """Every item's current version, in the order of their last write."""
        current: dict[_Key, _Stored] = {}
        for episode in self.memory.iter_episodes(kind="episode"):
            stored = _Stored.of(episode)
            if stored is None:
                continue
            item = (stored.namespace, stored.key)
            if item not in current or current[item].version < stored.version:
                current.pop(item, None)
                current[item] = stored
        return list(current.values())

    @staticmethod
    def _list(scanned: list[_Stored], op: Any) -> list[_Stored]:
        """Search without a query: the items under the prefix that pass the filter, unranked."""
        limit, offset = _paging(op.limit, op.offset)
        filter = _check_filter(op.filter)
        n = len(op.namespace_prefix)
        kept = [s for s in scanned if s.namespace[:n] == op.namespace_prefix
                and all(_matches(s.value.get(f), w) for f, w in filter.items())]
        return kept[offset : offset + limit]

    def _rank(self, op: Any) -> tuple[Verdict, list[_Stored]]:
        """Search with a query: the engine's hybrid recall inside the namespace prefix, with the
        filter's equality parts as tags (so the gate judges the filtered set) and the rest after;
        also the items it returns (whose TTL a read restarts)."""
        if not isinstance(op.query, str):
            raise TypeError(f"query: expected a string or None, got {type(op.query).__name__} {op.query!r}")
        limit, offset = _paging(op.limit, op.offset)
        filter = _check_filter(op.filter)
        depth = self.memory.config.candidates
        if offset + limit > depth:
            raise ValueError(
                f"limit: a query search ranks the engine's top {depth} candidates (RecallConfig.candidates), "
                f"so offset + limit may be at most {depth}, got {offset + limit}; open the MemoryStore "
                f"with RecallConfig(candidates={offset + limit}) to rank deeper")
        tags = [_prefix_tag(op.namespace_prefix)]
        for field, wanted in filter.items():
            scalar = wanted.get("$eq") if isinstance(wanted, dict) and "$eq" in wanted else wanted
            tag = None if isinstance(scalar, (dict, list, tuple)) else _equality_tag(field, scalar)
            if tag is not None:
                tags.append(tag)
        answer = self.memory.recall(op.query, k=depth, where={"tags": tags, "kind": "episode"})
        ranked = [(s, r.score) for r in answer.episodes if (s := _Stored.of(r.episode)) is not None]
        # A version whose successor is already committed (a put in progress elsewhere, or one cut
        # short by a crash before it deleted the old version) is not the item any more.
        siblings = self.memory.get_many([eid for s, _ in ranked for eid in episode_ids(s.namespace, s.key)])
        current = [(s, score) for s, score in ranked
                   if all(o.version <= s.version for eid in episode_ids(s.namespace, s.key)
                          if eid in siblings and (o := _Stored.of(siblings[eid])) is not None)]
        omit = (self.ttl_config or {}).get("omit_expired")
        now = _seconds()
        passing = [(s, score) for s, score in current
                   if all(_matches(s.value.get(f), w) for f, w in filter.items())
                   and not (omit and s.expired(now))]
        page = passing[offset : offset + limit]
        candidates = [s.search_item(score, copy=True) for s, score in page]
        accepted = answer.accepted and bool(passing)
        verdict = Verdict("recalled" if accepted else "insufficient_evidence", answer.confidence,
                          candidates if accepted else [], candidates)
        return verdict, [s for s, _ in page] if accepted else []

    @staticmethod
    def _namespaces(scanned: list[_Stored], op: Any) -> list[tuple[str, ...]]:
        """The namespaces holding items, matched, cut to ``max_depth``, sorted, paged."""
        limit, offset = _paging(op.limit, op.offset)
        depth = None if op.max_depth is None else arguments.integer(op.max_depth, "max_depth", low=1)
        found = {s.namespace for s in scanned}
        for condition in op.match_conditions or ():
            arguments.choice(condition.match_type, "match_type", ("prefix", "suffix"))
            found = {ns for ns in found if _namespace_matches(ns, condition.path, condition.match_type)}
        if depth is not None:
            found = {ns[:depth] for ns in found}
        return sorted(found)[offset : offset + limit]

    # ------------------------------------------------------------------ writing

    def _check_put(self, op: Any) -> Any:
        _check_ttl(op.ttl, "ttl")
        if op.value is None:
            return op
        if op.index is not None and op.index is not False:
            self._paths(op.index, "index")
        return op._replace(value=_check_value(op.value))

    def _text(self, op: Any) -> str | None:
        """The text an item is found by: its indexed paths' text, joined; None when indexed for nothing."""
        if op.index is False:
            return None
        paths = self._fields if op.index is None else self._paths(op.index, "index")
        texts = [t for _, path in paths for t in _lg.get_text_at_path(op.value, path)]
        if not any(c.isalnum() for t in texts for c in t):
            return None  # no word to find it by (e.g. the empty value's "{}")
        # SQLite keeps UTF-8: a lone surrogate in a value is kept in the payload, not in the text
        return "\n".join(texts)[:MAX_TEXT_CHARS].encode("utf-8", "replace").decode("utf-8")

    def _write(self, puts: dict[_Key, Any]) -> None:
        """Insert every new version in one transaction, then delete what they replace."""
        memory = self.memory
        with self._write_lock:
            slots = {item: episode_ids(*item) for item in puts}
            found = memory.get_many([eid for pair in slots.values() for eid in pair])
            stale: list[str] = []
            episodes: list[tuple[str, dict[str, Any], str | None, list[str]]] = []
            now = _now()
            for (namespace, key), op in puts.items():
                pair = slots[(namespace, key)]
                versions = [_Stored.of(found[eid]) if eid in found else None for eid in pair]
                newest = _newest(versions)
                if op.value is None:
                    stale += [eid for eid in pair if eid in found]
                    continue
                free = next((i for i, v in enumerate(versions) if v is None), None)
                if free is None:  # both slots full (a put cut short): the older version goes first
                    free = min((0, 1), key=lambda i: versions[i].version)  # type: ignore[union-attr]
                    memory.delete([pair[free]])
                stale += [eid for i, eid in enumerate(pair) if i != free and eid in found]
                text = self._text(op)
                tags = [] if text is None else [
                    _prefix_tag(namespace[:d]) for d in range(len(namespace) + 1)
                ] + [t for f, v in op.value.items() if (t := _equality_tag(f, v)) is not None]
                meta = {"namespace": list(namespace), "key": key, "updated_at": now,
                        "version": newest.version + 1 if newest else 0,
                        "created_at": newest.created_at if newest else now}
                if op.ttl is not None:
                    meta.update(ttl=float(op.ttl), expires_at=_seconds() + op.ttl * 60)
                episodes.append((pair[free], {_META: meta, "value": op.value}, text, tags))
            if episodes:
                try:
                    memory.add_batch(self._vectors([text for _, _, text, _ in episodes]),
                                     [payload for _, payload, _, _ in episodes],
                                     texts=[text or _UNINDEXED_TEXT for _, _, text, _ in episodes],
                                     ids=[eid for eid, _, _, _ in episodes],
                                     tags=[tags for _, _, _, tags in episodes])
                except ValueError as error:
                    field, colon, rest = str(error).partition(":")
                    if not colon or field != "payload":
                        raise
                    raise ValueError(f"value:{rest}") from None  # the payload is the value (and its times)
            if stale:
                memory.delete(stale)

    def _vectors(self, texts: list[str | None]) -> np.ndarray:
        """Embeddings of the indexed texts; an unindexed item gets a fixed unit vector (it carries
        no namespace tag, so no query search ever sees it)."""
        embedder = self._embedder
        vectors = np.zeros((len(texts), embedder.dim), dtype=np.float32)
        vectors[:, 0] = 1.0
        indexed = [t for t in texts if t is not None]
        if indexed:
            made = check_embeddings(embedder.embed(indexed), len(indexed), embedder.dim, embedder.name)
            empty = np.flatnonzero(np.linalg.norm(made.astype(np.float64), axis=1) < 1e-12)
            if len(empty):
                text = indexed[int(empty[0])][:60]
                raise ValueError(f"value: {embedder.name} gives the indexed text {text!r} a zero vector, so "
                                 "it could never be found; index other fields or use another embedder")
            vectors[[i for i, t in enumerate(texts) if t is not None]] = made
        return vectors


def _namespace_matches(namespace: tuple[str, ...], path: Sequence[str], kind: str) -> bool:
    """Whether the namespace starts (``prefix``) or ends (``suffix``) with ``path``; '*' is any label."""
    if len(namespace) < len(path):
        return False
    part = namespace[: len(path)] if kind == "prefix" else namespace[len(namespace) - len(path):]
    return all(p in ("*", label) for p, label in zip(path, part, strict=True))


__all__ = ["EngramStore", "Verdict", "episode_ids", "parse_episode_id"]
