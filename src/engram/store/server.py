"""The HTTP API (``engram store serve``): FastAPI over one store directory, one API key per space.

Two raw ASGI layers answer before FastAPI parses anything. ``BodyLimit`` refuses a body over
the limit (413), by its Content-Length or by counting what arrives. ``KeyCheck`` answers a
space route that lacks the space's key (401 without a key; 403 for a wrong key *or* a space
that does not exist, the same answer, so names cannot be probed) from one small read of the
space's state: a request without the key is never read further, and its space never opened.

Keys are random 32-byte tokens shown once; only their SHA-256 is stored (in the space's state)
and compared in constant time. A new key leaves the previous ones valid for an overlap period,
so a crash between committing a key and showing it never locks the owner out. Every status a
route can answer is in the OpenAPI schema with its body (``Error``: one ``detail`` string that
names the field); ``/metrics`` serves Prometheus text.

Episodes and cues are text, vectors or both: ``create_app(path, embedder=...)`` embeds text in
the spaces it serves (a space made with the offline ``HashingEmbedder`` reopens it without one);
recall filters by ``where`` (who, session, tags, kind) and ``since``/``until``, and every answer
lists its ranked candidates with their text, also a refusal.
"""

import asyncio
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from types import SimpleNamespace
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from engram.store import arguments
from engram.store.backend import check_space_name
from engram.store.backends import open_backend
from engram.store.consolidation import SleepReport
from engram.store.embed import Embedder
from engram.store.lexical import MAX_TEXT_CHARS
from engram.store.memory import ID_PATTERN, MemoryStore, RecallResult, check_episode_id

MAX_BATCH = 1024
# A full batch (1024 × 768 numbers, ~21 characters each in JSON) is ~16 MiB: twice that.
MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_OVERLAP = 3600.0  # seconds a replaced key keeps working
_MAX_PREVIOUS_KEYS = 8
# Vector rules JSON Schema can state and that imply the store's norm range [1e-12, 1e18] even
# after float32 rounding: one number of magnitude ≥ 2e-12, none above 0.99e18/√dim.
_SMALLEST = 2e-12
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SPACE_ROUTE = re.compile(r"^/v1/spaces/([^/]*)(?:/|$)")
_ADMITTED = "engram.admitted"  # the (space, key) KeyCheck let through, in the request's scope
# the id rule is checked by check_episode_id (one rule for every entry point); the schema states it
_ID_SCHEMA = {"pattern": ID_PATTERN}
_NO_KEY = "x-api-key: expected the space's API key in the X-API-Key header, got none"
_WRONG_KEY = "x-api-key: the key does not open this space"
# errors of the store that are not a malformed request: what their message says -> status
_STATUS_OF = (("payload: expected at most", 413), ("already in space", 409),
              ("expected unique ids within the batch", 409))
_UNION_LABELS = frozenset({"int", "str", "float", "bool", "list", "dict", "none"})
EpisodeId = Annotated[str, Field(min_length=1, max_length=128, json_schema_extra=_ID_SCHEMA)]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def valid_key_hashes(state: dict[str, Any], now: float) -> list[str]:
    """The hashes that open a space at time ``now``: the current key's and unexpired earlier ones."""
    current = [state["key_hash"]] if "key_hash" in state else []
    return current + [p["hash"] for p in state.get("previous_keys", []) if p["expires"] > now]


def issue_key(path: str | os.PathLike[str], space: str, dim: int | None = None,
              overlap: float = DEFAULT_OVERLAP) -> str:
    """Create the space if needed and give it a new API key.

    Earlier keys keep working for ``overlap`` seconds (0 revokes them all at once), so a crash
    after the new key is committed but before it reaches its owner leaves the old one valid.
    """
    overlap = arguments.real(overlap, "overlap", low=0.0)
    key = "engram_" + secrets.token_urlsafe(32)

    def rotate(state: dict[str, Any]) -> dict[str, Any]:
        # runs inside the write transaction: a concurrent rotation sees this one's key, not the
        # key list from before it, so no rotation drops a key another has shown
        now = time.time()
        previous = [p for p in state.get("previous_keys", []) if p["expires"] > now] if overlap else []
        if overlap and "key_hash" in state:
            previous.append({"hash": state["key_hash"], "expires": now + overlap})
        return {"key_hash": hash_key(key), "previous_keys": previous[-_MAX_PREVIOUS_KEYS:] or None}

    backend = open_backend(path, dim=dim)
    try:
        backend.ensure_space(check_space_name(space))
        backend.update_state_with(space, rotate)
    finally:
        backend.close()
    return key


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is refused with 413 before anything parses it.

    A declared Content-Length over the limit is refused before a byte is read; a body without
    one (chunked) is counted as it arrives and cut off as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and not declared.strip().isdigit():
            await _reply(send, 400, f"content-length: expected a number of bytes, got {declared[:40]!r}")
            return
        if declared is not None and int(declared) > self.limit:
            await _reply(send, 413, f"body: expected at most {self.limit} bytes, got {int(declared)}")
            return
        received = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not started:
                    refused = True
                    await _reply(send, 413, f"body: expected at most {self.limit} bytes, got more")
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is already sent; what the app says after the disconnect is moot
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise


class KeyCheck:
    """ASGI middleware: a ``/v1/spaces/{space}/...`` request runs only with that space's key.

    ``allowed(space, key)`` decides from the space's state alone; an absent space and a wrong
    key get the same 403, so the answer tells nothing about which spaces exist.
    """

    def __init__(self, app: ASGIApp, allowed: Callable[[str, str], bool]):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        root = scope.get("root_path", "")
        route = _SPACE_ROUTE.match(path[len(root):] if root and path.startswith(root) else path)
        if route is not None:
            key = _header(scope, b"x-api-key")
            if key is None:
                await _reply(send, 401, _NO_KEY)
                return
            space = route.group(1)
            try:
                check_space_name(space)
            except ValueError as error:
                await _reply(send, 422, str(error))
                return
            # allowed() reads a cached key state (one SQLite read when another connection has
            # committed since): cheaper inline than a thread hand-off
            if not self.allowed(space, key):
                await _reply(send, 403, _WRONG_KEY)
                return
            scope[_ADMITTED] = (space, key)  # the route's own check reads it: one check a request
        await self.app(scope, receive, send)


class Timing:
    """ASGI middleware: each request's latency and status into Prometheus, by route (a plain ASGI
    wrapper: no per-request task or body streaming as in Starlette's ``BaseHTTPMiddleware``)."""

    def __init__(self, app: ASGIApp, observe: Callable[[str, int, float], None]):
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = scope.get("route")
            self.observe(getattr(route, "path", "unmatched"), status, time.perf_counter() - started)


class RecallBatcher:
    """Concurrent recalls of one space answered together: requests of the same kind (cue, text,
    mask, k, filters) that arrive while a batch runs are answered by the next ``recall_batch``.
    No timer: a lone recall runs at once; under load, batches form by themselves.

    Over a store whose backend reads locally (``StorageBackend.local``) a batch runs on the event
    loop itself: a worker thread would only contend with the loop for the interpreter lock (each
    hand-off two lock switches, and the loop waits out the thread's switch interval whenever it
    releases the lock for I/O). Over a networked backend a batch waits on round trips, so it
    runs in the thread pool and the loop serves other requests meanwhile."""

    def __init__(self, store: MemoryStore, limit: int = 64):
        self.store = store
        self.limit = limit
        self.inline = store.backend.local
        self.waiting: dict[tuple[Any, ...], list[tuple[dict[str, Any], asyncio.Future]]] = {}
        self.draining: asyncio.Task | None = None

    async def recall(self, kind: tuple[Any, ...], request: dict[str, Any]) -> RecallResult:
        future = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(kind, []).append((request, future))
        if self.draining is None:
            self.draining = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                kind, queued = next(iter(self.waiting.items()))
                batch, self.waiting[kind] = queued[: self.limit], queued[self.limit :]
                if not self.waiting[kind]:
                    del self.waiting[kind]
                requests = [request for request, _ in batch]
                try:
                    answers: list[Any] = await self._run(self._together, requests)
                except Exception:  # a bad request among them: each answered (or refused) alone
                    answers = [await self._run(self._alone, request) for request in requests]
                for (_, future), answer in zip(batch, answers, strict=True):
                    if future.done():  # the client went away
                        continue
                    if isinstance(answer, Exception):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
                if self.inline:  # the answers go out, and what came meanwhile is read, first
                    await asyncio.sleep(0)
        finally:
            self.draining = None

    async def _run(self, work: Callable[[Any], Any], argument: Any) -> Any:
        return work(argument) if self.inline else await run_in_threadpool(work, argument)

    def _together(self, requests: list[dict[str, Any]]) -> list[RecallResult]:
        first = requests[0]
        if first["cue"] is None:
            return self.store.recall_batch([r["text"] for r in requests], k=first["k"], **first["filters"])
        return self.store.recall_batch(
            np.stack([r["cue"] for r in requests]), k=first["k"],
            known=None if first["known"] is None else np.stack([r["known"] for r in requests]),
            texts=None if first["text"] is None else [r["text"] for r in requests], **first["filters"])

    def _alone(self, request: dict[str, Any]) -> RecallResult | Exception:
        try:
            if request["cue"] is None:
                return self.store.recall(request["text"], k=request["k"], **request["filters"])
            return self.store.recall(request["cue"], k=request["k"], known=request["known"],
                                     text=request["text"], **request["filters"])
        except Exception as error:  # handed to that request's own future
            return error


# An integer beyond 64 bits, which orjson would read as a float, is a run of 19 or more digits
# after what may come before a JSON number (":,[" blanks, a sign); a fraction's digits follow ".".
# Found by mapping those bytes to "|" and digits to "0", then one substring search.
_NUMBER_BYTES = bytes.maketrans(b"123456789:,[ -\n\r\t", b"000000000" + b"|" * 8)
_LONG_INTEGER = b"|" + b"0" * 19


class _OrjsonRequest(Request):
    """A request whose JSON body orjson parses (about 10× the stdlib on 768 floats: time the
    event loop holds the interpreter for), reading numbers as the stdlib does; the stdlib itself
    for a body that may hold an integer beyond 64 bits (orjson makes it a float) and for what
    orjson refuses (NaN, lone surrogates), so such bodies meet the same checks as before."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = _read_json(await self.body())
        return self._json


def _read_json(body: bytes) -> Any:
    """The JSON value of a request body (see ``_OrjsonRequest``)."""
    if _LONG_INTEGER not in b"|" + body.translate(_NUMBER_BYTES):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # what orjson refuses, the stdlib reads or refuses as it always did
    return json.loads(body)


class _OrjsonRoute(APIRoute):
    """A route that reads its body through ``_OrjsonRequest``."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return route


def _json(content: Any) -> Response:
    """A JSON response serialised by orjson (about 4× faster than the stdlib on 768 floats); the
    stdlib, as Starlette calls it, for what orjson refuses (a payload's integer beyond 64 bits)."""
    try:
        body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return Response(body, media_type="application/json")


class Error(BaseModel):
    """The body of every error answer."""

    detail: str = Field(description="what was wrong, starting with the field it concerns")


_WHY = {
    400: "Malformed request framing (Content-Length).",
    401: "No X-API-Key header.",
    403: "The key does not open this space (or there is no such space: the two are not told apart).",
    404: "No episode with this id in the space.",
    409: "An id that is already in the space.",
    413: "The body, or a payload, is over the size limit.",
    422: "A field is missing, of the wrong type or out of range (the message names it).",
}


def _errors(*codes: int, by_reference: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error answers; ``by_reference`` for routes whose own answers are not
    JSON (FastAPI would otherwise file the error body under the route's media type)."""
    if by_reference:
        body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        return {code: {"description": _WHY[code], "content": body} for code in codes}
    return {code: {"model": Error, "description": _WHY[code]} for code in codes}


class _Strict(BaseModel):
    # strict: no coercion, so `false` is not a number and "1" is not an embedding value
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def _has_direction(values: list[float]) -> list[float]:
    if not any(abs(x) >= _SMALLEST for x in values):
        raise ValueError(f"expected at least one number of magnitude ≥ {_SMALLEST:g} (a vector of zeros "
                         "has no direction to store or search for)")
    return values


def _knows_something(values: list[bool]) -> list[bool]:
    if not any(values):
        raise ValueError("expected at least one known dimension (true), else there is no evidence")
    return values


def _integral(value: Any) -> Any:
    # JSON Schema counts 88.0 as an integer; strict pydantic would not (bools stay refused)
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]
Real = Annotated[float, Field(ge=-_FLOAT32_MAX, le=_FLOAT32_MAX)]  # the store's range for times, weights


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("expected text that has a UTF-8 form (no lone surrogates)") from error
    return value


def _not_blank(value: str) -> str:
    if not _VISIBLE.search(value):
        raise ValueError("expected some text besides whitespace")
    return value


# Text of an episode or cue: 1 to MAX_TEXT_CHARS characters, one of them not whitespace. The
# whitespace is listed (Python's and ECMAScript's together) rather than written \s, whose
# meaning differs between the two, so that the schema and this check refuse the same texts.
_VISIBLE_PATTERN = (r"[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f"
                    r"\u3000\ufeff]")
_VISIBLE = re.compile(_VISIBLE_PATTERN)
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS,
                            json_schema_extra={"pattern": _VISIBLE_PATTERN}),
                 AfterValidator(_utf8), AfterValidator(_not_blank)]
Name = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_utf8)]  # who, a session name
# The bounds before the validator, so that the schema states them as minimum / maximum (after it,
# pydantic writes them as "ge" / "le", which JSON Schema ignores: the fuzzer sent 10^30 as valid).
SessionNumber = Annotated[int, Field(ge=-(2**63), le=2**63 - 1), BeforeValidator(_integral)]
Session = SessionNumber | Name
Tag = Annotated[str, AfterValidator(_utf8)]
Kind = Literal["episode", "semantic"]


def _one_or_many(kind: Any) -> Any:
    """A filter value: one value, or a list of them (any of them; for tags, all of them)."""
    return kind | Annotated[list[kind], Field(min_length=1, max_length=MAX_BATCH)]


class WhereIn(_Strict):
    """Filters applied inside the search (an unknown field is refused by name)."""

    who: _one_or_many(Name) | None = None
    session: _one_or_many(Session) | None = None
    tags: _one_or_many(Tag) | None = None
    kind: _one_or_many(Kind) | None = None


def _either(first: str, second: str) -> dict[str, Any]:
    return {"anyOf": [{"required": [first]}, {"required": [second]}]}


def _request_models(dim: int) -> SimpleNamespace:
    """The request bodies for a store of ``dim``-dimensional embeddings.

    A vector is ``dim`` numbers of magnitude ≤ 0.99e18/√dim, at least one of them ≥ 2e-12.
    An episode has an embedding, a text (embedded by the space's embedder) or both; a cue too.
    """
    bound = float(f"{0.99e18 / np.sqrt(dim):.3g}")
    number = Annotated[float, Field(ge=-bound, le=bound)]
    direction = {"contains": {"anyOf": [{"minimum": _SMALLEST}, {"maximum": -_SMALLEST}]}}
    vector = Annotated[list[number], Field(min_length=dim, max_length=dim, json_schema_extra=direction),
                       AfterValidator(_has_direction)]
    mask = Annotated[list[bool], Field(min_length=dim, max_length=dim,
                                       json_schema_extra={"contains": {"const": True}}),
                     AfterValidator(_knows_something)]

    class EpisodeIn(_Strict):
        model_config = ConfigDict(json_schema_extra=_either("embedding", "text"))

        # the two either-or fields take no null (JSON Schema's `required` counts a null as given)
        embedding: vector = None  # type: ignore[assignment]
        text: Text = None  # type: ignore[assignment]
        who: Name | None = None
        session: Session | None = None
        payload: dict[str, Any] = Field(default_factory=dict)
        id: EpisodeId | None = None
        timestamp: Real | None = None
        reward: Real = 0.0
        salience: Real = 0.0
        tags: list[Tag] = Field(default_factory=list)
        unfinished: bool = False

    class BatchIn(_Strict):
        episodes: list[EpisodeIn] = Field(
            min_length=1, max_length=MAX_BATCH,
            description="every episode has an embedding or none has; the same for text")

    class Filters(_Strict):
        where: WhereIn | None = None
        since: Real | None = Field(default=None, description="earliest timestamp recalled")
        until: Real | None = Field(default=None, description="latest timestamp recalled")

    class RecallIn(Filters):
        model_config = ConfigDict(json_schema_extra=_either("cue", "text"))

        cue: vector = None  # type: ignore[assignment]
        text: Text = Field(default=None, description="the cue's words (alone: embedded too)")
        k: Integer = Field(default=5, ge=1, le=100)
        known: mask | None = Field(default=None, description="only with cue")

    class RecallBatchIn(Filters):
        model_config = ConfigDict(json_schema_extra=_either("cues", "texts"))

        cues: list[vector] = Field(default=None, min_length=1, max_length=MAX_BATCH)
        texts: list[Text] = Field(default=None, min_length=1, max_length=MAX_BATCH,
                                  description="one per cue when cues are given too")
        k: Integer = Field(default=5, ge=1, le=100)
        known: list[mask] | None = Field(default=None, description="only with cues, one per cue")

    class SleepIn(_Strict):
        replay_budget: Integer = Field(default=512, ge=1)
        walks: Integer = Field(default=64, ge=0, le=10_000)
        seed: Integer = Field(default=0, ge=0, le=2**32 - 1)

    return SimpleNamespace(EpisodeIn=EpisodeIn, BatchIn=BatchIn, RecallIn=RecallIn,
                           RecallBatchIn=RecallBatchIn, SleepIn=SleepIn)


class Added(BaseModel):
    id: str


class AddedMany(BaseModel):
    ids: list[str]


class Deleted(BaseModel):
    deleted: list[str]


class EpisodeOut(BaseModel):
    id: str
    payload: dict[str, Any]
    text: str = Field(description="empty for an episode stored without text")
    who: str | None
    session: int | str | None
    timestamp: float
    kind: str
    reward: float
    salience: float
    tags: list[str]
    unfinished: bool
    recalls: int
    embedding: list[float] | None = Field(default=None, description="only with ?embedding=true")


class RecalledOut(BaseModel):
    id: str
    payload: dict[str, Any]
    text: str
    who: str | None
    session: int | str | None
    tags: list[str]
    kind: str
    score: float
    strength: float
    masked_cosine: float
    timestamp: float


class RecallOut(BaseModel):
    status: Literal["recalled", "insufficient_evidence"]
    decided_by: str
    confidence: float
    calibrated: bool
    episodes: list[RecalledOut] = Field(
        description="the ranked candidates, best first, also when the status is a refusal")
    trace: dict[str, Any]


class RecallBatchOut(BaseModel):
    results: list[RecallOut]


class StatsOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    space: str
    dim: int
    episodes: int
    semantic: int
    links: int
    gate_calibrated: bool
    strength_mean: float | None
    strength_min: float | None
    sleeps: int


def _answer(result: RecallResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "decided_by": result.decided_by,
        "confidence": result.confidence,
        "calibrated": result.calibrated,
        "episodes": [
            {"id": r.episode.id, "payload": r.episode.payload, "text": r.episode.text, "who": r.episode.who,
             "session": r.episode.session, "tags": list(r.episode.tags), "kind": r.episode.kind,
             "score": r.score, "strength": r.strength, "masked_cosine": r.masked_cosine,
             "timestamp": r.episode.timestamp}
            for r in result.episodes
        ],
        "trace": result.trace,
    }


def _field(location: tuple[Any, ...]) -> str:
    """("body", "episodes", 0, "embedding") -> "episodes[0].embedding" (without the labels pydantic
    gives the members of a union, such as "list[str]" or "int": they are types, not fields)."""
    name = ""
    for part in location[1:] if location and location[0] in ("body", "query", "path", "header") else location:
        if isinstance(part, str) and (not part.isidentifier() or part in _UNION_LABELS):
            continue
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or "body"


def _validation_detail(error: RequestValidationError) -> str:
    parts = []
    for e in error.errors()[:3]:
        if e["type"] == "json_invalid":
            parts.append(f"body: expected JSON, got invalid JSON ({e.get('ctx', {}).get('error', '')})")
            continue
        came = repr(e.get("input"))
        came = came if len(came) <= 80 else came[:77] + "..."
        parts.append(f"{_field(tuple(e['loc']))}: {e['msg']}, got {came}")
    return "; ".join(parts)


def _needs_embedder(store: MemoryStore, field: str) -> None:
    if store.embedder is None:
        raise ValueError(f"{field}: space {store.space!r} has no embedder, so a text needs an embedding "
                         "beside it (start the server with `engram store serve --embedder NAME_OR_PATH`)")


def _filters(body: Any) -> dict[str, Any]:
    """The ``where`` / ``since`` / ``until`` arguments of a recall body."""
    where = None if body.where is None else body.where.model_dump(exclude_none=True)
    return {"where": where, "since": body.since, "until": body.until}


def _only_query(*names: str) -> Any:
    """A dependency that refuses query parameters other than ``names``: the schema allows no
    others, and an ignored one (``?embeddings=true``) would be a silently wrong answer."""

    async def check(request: Request) -> None:  # async: no thread hand-off for a set difference
        unknown = sorted(set(request.query_params) - set(names))
        if unknown:
            takes = ", ".join(names) or "no query parameters"
            raise HTTPException(422, f"{unknown[0]}: not a query parameter of this route (it takes {takes})")

    return [Depends(check)]


def _same_shape(episodes: list[Any], field: str) -> None:
    """Every episode of a batch gives ``field`` or none does (the store takes one column or none)."""
    given = [getattr(e, field) is not None for e in episodes]
    if any(given) and not all(given):
        i = given.index(not given[0])
        raise ValueError(f"episodes[{i}].{field}: expected every episode of a batch to give {field} or "
                         f"none, got it in {sum(given)} of {len(given)}")


def create_app(path: str | os.PathLike[str], max_body_bytes: int = MAX_BODY_BYTES,
               embedder: Embedder | None = None) -> FastAPI:
    """The FastAPI application serving the store at ``path``: a store directory, or the
    ``postgresql://`` URL of a database that several servers may serve together.

    ``embedder`` embeds the text of episodes and cues in every space it serves (a space made
    with another embedder refuses it); without one, only spaces made with the offline
    ``HashingEmbedder`` take text alone, the others need embeddings.
    """
    max_body_bytes = arguments.integer(max_body_bytes, "max_body_bytes", low=1)
    if embedder is not None:
        arguments.instance(embedder, "embedder", Embedder)
    root = open_backend(path)
    dim = root.dim
    if embedder is not None and embedder.dim != dim:
        root.close()
        raise ValueError(f"embedder: {embedder.name} makes {embedder.dim}-dimensional vectors, the store "
                         f"at {path} holds {dim}-dimensional ones")
    bodies = _request_models(dim)
    stores: dict[str, MemoryStore] = {}
    opening = threading.Lock()
    registry = CollectorRegistry()
    requests = Counter("engram_requests_total", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("engram_request_seconds", "HTTP request latency", ["endpoint"], registry=registry,
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
    episodes_added = Counter("engram_episodes_added_total", "Episodes stored", registry=registry)
    recalls = Counter("engram_recalls_total", "Recall answers", ["status", "decided_by"], registry=registry)
    placeholder = hash_key(secrets.token_urlsafe(32))  # compared against for absent spaces

    states: dict[str, dict[str, Any] | None] = {}  # each space's key state; None: no such space
    digests: dict[str, str] = {}

    def allowed(space: str, key: str) -> bool:
        if root.changed() or len(states) > 4096:  # a commit elsewhere (a key rotation, say)
            states.clear()
        if space not in states:
            try:
                states[space] = root.get_state(space)
            except ValueError:  # no such space: the same work and answer as a wrong key
                states[space] = None
        state = states[space]
        hashes = [] if state is None else valid_key_hashes(state, time.time())
        digest = digests.get(key)
        if digest is None:
            if len(digests) > 4096:
                digests.clear()
            digest = digests[key] = hash_key(key)
        matches = [hmac.compare_digest(h, digest) for h in hashes or [placeholder]]
        return bool(hashes) and any(matches)

    app = FastAPI(
        title="Engram memory engine", version="1",
        description="A persistent episodic memory that completes, refuses, forgets and consolidates.",
        responses=_errors(400, 413),
    )
    def observe(endpoint: str, status: int, seconds: float) -> None:
        latency.labels(endpoint).observe(seconds)
        requests.labels(endpoint, str(status)).inc()

    app.add_middleware(KeyCheck, allowed=allowed)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(Timing, observe=observe)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(error)}, status_code=422)

    @app.exception_handler(ValueError)
    async def value_error(request: Request, error: ValueError) -> JSONResponse:
        text = str(error)
        status = next((code for words, code in _STATUS_OF if words in text), 422)
        return JSONResponse({"detail": text}, status_code=status)

    @app.exception_handler(TypeError)
    async def type_error(request: Request, error: TypeError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    batchers: dict[str, RecallBatcher] = {}

    def open_space(space: str) -> MemoryStore:
        with opening:
            store = stores.get(space)
            if store is None:
                store = stores[space] = MemoryStore(path, space=space, embedder=embedder)
                batchers[space] = RecallBatcher(store)
        return store

    async def space_store(request: Request, space: str,
                          key: str | None = Security(APIKeyHeader(name="X-API-Key", auto_error=False))
                          ) -> MemoryStore:
        # KeyCheck admits the key before the body is read and marks the request; checked here
        # when it did not (the app mounted without it), so that no route runs without the key
        if key is None or (request.scope.get(_ADMITTED) != (space, key) and not allowed(space, key)):
            raise HTTPException(401, _NO_KEY) if key is None else HTTPException(403, _WRONG_KEY)
        store = stores.get(space)
        return store if store is not None else await run_in_threadpool(open_space, space)

    async def episode_id(eid: Annotated[str, Path(min_length=1, max_length=128,
                                                  json_schema_extra=_ID_SCHEMA)]) -> str:
        return check_episode_id(eid)

    authorised = Depends(space_store)
    addressed = Depends(episode_id)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition."},
                        **_errors(400, 413, by_reference=True)})
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    spaces = APIRouter(prefix="/v1/spaces/{space}", responses=_errors(401, 403, 422),
                       route_class=_OrjsonRoute)

    @spaces.post("/episodes", status_code=201, response_model=Added, responses=_errors(409),
                 dependencies=_only_query())
    def add(body: bodies.EpisodeIn, store: MemoryStore = authorised) -> dict[str, str]:
        if body.embedding is None:
            if body.text is None:
                raise ValueError("embedding: expected an embedding, a text or both, got neither")
            _needs_embedder(store, "text")
        eid = store.add(None if body.embedding is None else np.asarray(body.embedding), body.payload,
                        text=body.text, who=body.who, session=body.session, id=body.id,
                        timestamp=body.timestamp, reward=body.reward, salience=body.salience,
                        tags=body.tags, unfinished=body.unfinished)
        episodes_added.inc()
        return {"id": eid}

    @spaces.post("/episodes/batch", status_code=201, response_model=AddedMany, responses=_errors(409),
                 dependencies=_only_query())
    def add_batch(body: bodies.BatchIn, store: MemoryStore = authorised) -> dict[str, list[str]]:
        e = body.episodes
        _same_shape(e, "embedding")
        _same_shape(e, "text")
        if e[0].embedding is None:
            if e[0].text is None:
                raise ValueError("episodes[0].embedding: expected an embedding, a text or both, got neither")
            _needs_embedder(store, "episodes[0].text")
        now = time.time()
        ids = store.add_batch(
            None if e[0].embedding is None else np.asarray([x.embedding for x in e]), [x.payload for x in e],
            texts=None if e[0].text is None else [x.text for x in e], who=[x.who for x in e],
            sessions=[x.session for x in e],
            ids=[x.id if x.id is not None else os.urandom(16).hex() for x in e],
            timestamps=[x.timestamp if x.timestamp is not None else now for x in e],
            rewards=[x.reward for x in e], saliences=[x.salience for x in e], tags=[x.tags for x in e],
            unfinished=[x.unfinished for x in e],
        )
        episodes_added.inc(len(ids))
        return {"ids": ids}

    @spaces.get("/episodes/{eid}", response_model=EpisodeOut, responses=_errors(404),
                 dependencies=_only_query("embedding"))
    def get(eid: str = addressed, embedding: bool = False, store: MemoryStore = authorised) -> dict[str, Any]:
        episode = store.get(eid)
        if episode is None:
            raise HTTPException(404, f"id: no episode {eid!r} in space {store.space!r}")
        out = {"id": episode.id, "payload": episode.payload, "text": episode.text, "who": episode.who,
               "session": episode.session, "timestamp": episode.timestamp,
               "kind": episode.kind, "reward": episode.reward, "salience": episode.salience,
               "tags": list(episode.tags), "unfinished": episode.unfinished, "recalls": episode.recalls}
        if embedding:
            out["embedding"] = episode.embedding.tolist()
        return out

    @spaces.delete("/episodes/{eid}", response_model=Deleted, responses=_errors(404),
                 dependencies=_only_query())
    def delete(eid: str = addressed, store: MemoryStore = authorised) -> dict[str, list[str]]:
        removed = store.delete([eid])
        if not removed:
            raise HTTPException(404, f"id: no episode {eid!r} in space {store.space!r}")
        return {"deleted": removed}

    @spaces.post("/recall", response_model=RecallOut, dependencies=_only_query())
    async def recall(body: bodies.RecallIn, store: MemoryStore = authorised) -> Response:
        if body.cue is None:
            if body.text is None:
                raise ValueError("cue: expected a cue vector, a text or both, got neither")
            if body.known is not None:
                raise ValueError("known: masks the dimensions of a cue vector, but no cue was given")
            _needs_embedder(store, "text")
        filters = _filters(body)
        request = {"cue": None if body.cue is None else np.asarray(body.cue),
                   "known": None if body.known is None else np.asarray(body.known, dtype=bool),
                   "text": body.text, "k": body.k, "filters": filters}
        kind = (body.cue is None, body.text is None, body.known is None, body.k,
                json.dumps(filters, sort_keys=True, default=str))
        result = await batchers[store.space].recall(kind, request)
        recalls.labels(result.status, result.decided_by).inc()
        return _json(_answer(result))

    @spaces.post("/recall/batch", response_model=RecallBatchOut, dependencies=_only_query())
    async def recall_batch(body: bodies.RecallBatchIn, store: MemoryStore = authorised) -> Response:
        if body.cues is None:
            if body.texts is None:
                raise ValueError("cues: expected cue vectors, texts or both, got neither")
            if body.known is not None:
                raise ValueError("known: masks the dimensions of cue vectors, but no cues were given")
            _needs_embedder(store, "texts")
            results = await run_in_threadpool(store.recall_batch, body.texts, k=body.k, **_filters(body))
        else:
            if body.texts is not None and len(body.texts) != len(body.cues):
                raise ValueError(f"texts: expected one per cue ({len(body.cues)}), got {len(body.texts)}")
            known = None if body.known is None else np.asarray(body.known, dtype=bool)
            results = await run_in_threadpool(store.recall_batch, np.asarray(body.cues), k=body.k,
                                              known=known, texts=body.texts, **_filters(body))
        for r in results:
            recalls.labels(r.status, r.decided_by).inc()
        return _json({"results": [_answer(r) for r in results]})

    @spaces.post("/sleep", response_model=SleepReport, dependencies=_only_query())
    def sleep(body: bodies.SleepIn, store: MemoryStore = authorised) -> SleepReport:
        return store.sleep(replay_budget=body.replay_budget, walks=body.walks, seed=body.seed)

    @spaces.get("/stats", response_model=StatsOut, dependencies=_only_query())
    def stats(store: MemoryStore = authorised) -> dict[str, Any]:
        return store.stats()

    app.include_router(spaces)
    return app
