"""A client for the HTTP API (``engram store serve``): the verbs of ``MemoryStore`` over the network.

``EngramClient`` is synchronous, ``AsyncEngramClient`` the same verbs as coroutines; both speak
to one space with its API key. Answers come back as frozen dataclasses that mirror the
server's JSON (``RecallAnswer`` keeps the ranked candidates and the status of a refusal);
``get`` and ``delete`` answer like ``MemoryStore`` (None, the ids that existed).

Errors carry the server's ``detail`` and status and subclass the exception the in-process
store raises for the same mistake: 409, 413 and 422 are ``ValueError`` (422 also
``TypeError``), 401 and 403 ``PermissionError``, and an unreachable server ``ConnectionError``.

A call is retried (with exponential backoff) after a connection error only when repeating it
cannot change the answer: any call whose connection was never made, and a read (``get``,
``recall``, ``stats``, ``health``) whose connection dropped. A write whose connection dropped
after it was sent may have landed, so it raises instead of being sent twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from engram.store import arguments
from engram.store.backend import check_space_name
from engram.store.consolidation import SleepReport
from engram.store.memory import check_episode_id

# the connection was never made: nothing reached the server, so any call may be sent again
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# the connection failed after the request may have been sent
_DROPPED = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
_BACKOFF_CAP = 5.0  # seconds: the longest pause between two attempts


class EngramError(Exception):
    """An error answer of the server: ``str(error)`` is its ``detail``, ``status`` its HTTP status."""

    def __init__(self, detail: str, status: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, detail={self.detail!r})"


class AuthenticationError(EngramError, PermissionError):
    """401: the request carried no API key."""


class ForbiddenError(EngramError, PermissionError):
    """403: the key does not open this space (or there is no such space; the server does not say)."""


class NotFoundError(EngramError, LookupError):
    """404 for something other than an absent episode: a wrong base URL or a route the server lacks."""


class ConflictError(EngramError, ValueError):
    """409: an id that is already in the space, or given twice in one batch."""


class PayloadTooLargeError(EngramError, ValueError):
    """413: the body, or a payload, is over the server's size limit."""


class InvalidRequestError(EngramError, ValueError, TypeError):
    """400 or 422: a field is missing, of the wrong type or out of range; ``detail`` names it.

    Both a ``ValueError`` and a ``TypeError``: the server answers 422 for either, so code
    written against the in-process store catches it the same way.
    """


class ServerError(EngramError):
    """5xx, an unexpected status, or an answer that is not the JSON the API promises."""


class EngramConnectionError(EngramError, ConnectionError):
    """The server could not be reached (after the retries allowed), or the connection dropped."""


_ERROR_OF: dict[int, type[EngramError]] = {400: InvalidRequestError, 401: AuthenticationError,
                                           403: ForbiddenError, 404: NotFoundError, 409: ConflictError,
                                           413: PayloadTooLargeError, 422: InvalidRequestError}


@dataclass(frozen=True)
class Candidate:
    """One ranked episode of a recall answer (``RecalledOut`` of the API)."""

    id: str
    payload: dict[str, Any]
    kind: str
    score: float
    strength: float
    masked_cosine: float
    timestamp: float
    text: str = ""
    who: str | None = None
    session: int | str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecallAnswer:
    """The answer to one cue (``RecallOut``): status, the deciding stage, confidence, candidates.

    ``episodes`` holds the ranked candidates, best first, on a refusal too
    (``status == "insufficient_evidence"``), so a caller can still weigh them.
    """

    status: str
    decided_by: str
    confidence: float
    calibrated: bool
    episodes: tuple[Candidate, ...]
    trace: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status == "recalled"


@dataclass(frozen=True)
class EpisodeRecord:
    """One stored episode as ``get`` returns it (``EpisodeOut``); ``embedding`` only when asked for."""

    id: str
    payload: dict[str, Any]
    timestamp: float
    kind: str
    reward: float
    salience: float
    tags: tuple[str, ...]
    unfinished: bool
    recalls: int
    embedding: np.ndarray | None = None
    text: str = ""
    who: str | None = None
    session: int | str | None = None


def _record(kind: type, data: Any, where: str) -> Any:
    """A dataclass ``kind`` from a JSON object: required fields must be there, unknown ones are left."""
    if not isinstance(data, dict):
        raise ServerError(f"{where}: expected a JSON object, got {type(data).__name__}")
    values = {}
    for f in dataclasses.fields(kind):
        if f.name in data:
            values[f.name] = data[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ServerError(f"{where}: the server's answer lacks the field {f.name!r}")
    if isinstance(values.get("tags"), list):
        values["tags"] = tuple(values["tags"])
    return kind(**values)


def _answer(data: Any, where: str = "response") -> RecallAnswer:
    answer = _record(RecallAnswer, data, where)
    candidates = tuple(_record(Candidate, c, f"{where}.episodes[{i}]") for i, c in enumerate(answer.episodes))
    return dataclasses.replace(answer, episodes=candidates)


def _episode(data: Any) -> EpisodeRecord:
    record = _record(EpisodeRecord, data, "response")
    if record.embedding is None:
        return record
    return dataclasses.replace(record, embedding=np.asarray(record.embedding, dtype=np.float32))


def _sleep_report(data: Any) -> SleepReport:
    if not isinstance(data, dict):
        raise ServerError(f"response: expected a JSON object, got {type(data).__name__}")
    return SleepReport(**{f.name: data[f.name] for f in dataclasses.fields(SleepReport) if f.name in data})


def _vectors(values: Any, name: str, ndim: int) -> list[Any]:
    """Numbers as JSON lists; JSON has no NaN or infinity, so those are refused here, by name."""
    if isinstance(values, (str, bytes, dict)) or values is None:
        raise TypeError(f"{name}: expected an array of numbers, got {type(values).__name__}")
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected real numbers, got an array of dtype {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected a {'vector' if ndim == 1 else 'matrix'} ({ndim}-d array), "
                         f"got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values (expected finite numbers)")
    return array.astype(np.float64).tolist()


def _mask(known: Any, cues: int | None) -> list[Any]:
    """A known-dimensions mask as JSON booleans; for ``cues`` cues, one mask (d,) serves them all."""
    mask = np.asarray(known)
    if mask.dtype != bool and (mask.dtype.kind not in "iu" or not np.isin(mask, (0, 1)).all()):
        raise ValueError(f"known: expected a boolean (or 0/1) mask of the cue's known dimensions, "
                         f"got an array of dtype {mask.dtype}")
    if cues is not None and mask.ndim == 1:
        mask = np.broadcast_to(mask, (cues, *mask.shape))
    if mask.ndim != (1 if cues is None else 2):
        raise ValueError(f"known: expected a mask of shape (d,){'' if cues is None else ' or (B, d)'}, "
                         f"got shape {mask.shape}")
    return mask.astype(bool).tolist()


def _given(**fields: Any) -> dict[str, Any]:
    """The fields the caller gave: what was left out gets the server's default."""
    return {name: value for name, value in fields.items() if value is not None}


def _column(values: Any, name: str, n: int) -> list[Any]:
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Sequence | np.ndarray):
        raise TypeError(f"{name}: expected a list of {n} entries (one per episode), got "
                        f"{type(values).__name__} {values!r}")
    if len(values) != n:
        raise ValueError(f"{name}: expected {n} entries (one per episode), got {len(values)}")
    return list(values)


def _filters(where: Mapping[str, Any] | None, since: float | None, until: float | None) -> dict[str, Any]:
    return _given(where=None if where is None else dict(where), since=since, until=until)


@dataclass(frozen=True)
class _Call:
    """One request, and ``parse``: what turns its response into the verb's answer (or error)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any]
    body: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    idempotent: bool = False


def _json(response: httpx.Response) -> Any:
    """The JSON of a success answer, or the error it stands for."""
    if response.status_code >= 400:
        raise _error(response)
    try:
        return response.json()
    except ValueError as error:
        raise ServerError(f"response: expected JSON, got {response.text[:80]!r}",
                          response.status_code) from error


def _member(response: httpx.Response, name: str) -> Any:
    """One field of a success answer's JSON object."""
    data = _json(response)
    if not isinstance(data, dict) or name not in data:
        raise ServerError(f"response: the server's answer lacks the field {name!r}", response.status_code)
    return data[name]


def _error(response: httpx.Response) -> EngramError:
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = response.text[:200] or response.reason_phrase
    if not isinstance(detail, str):
        detail = str(detail)
    kind = _ERROR_OF.get(response.status_code, ServerError)
    return kind(detail, response.status_code)


def _missing_or_json(response: httpx.Response) -> Any:
    """A 404 for the episode addressed (its detail names the ``id``) means absent: None."""
    if response.status_code == 404:
        error = _error(response)
        if error.detail.startswith("id:"):
            return None
        raise error
    return _json(response)


class _Verbs:
    """The verbs of both clients, each a request built once; ``_run`` sends it (sync or async)."""

    def __init__(self, base_url: str, api_key: str, space: str = "default", *, timeout: float = 30.0,
                 retries: int = 2, backoff: float = 0.1):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: expected an http:// or https:// URL, got {base_url!r}")
        if not isinstance(api_key, str) or not api_key:
            raise ValueError("api_key: expected the space's API key (a non-empty string), got "
                             f"{type(api_key).__name__}")
        self.base_url = base_url
        self.space = check_space_name(space)
        self.timeout = arguments.real(timeout, "timeout", low=0.0, low_open=True)
        self.retries = arguments.integer(retries, "retries", low=0)
        self.backoff = arguments.real(backoff, "backoff", low=0.0)
        self._headers = {"X-API-Key": api_key}
        self._prefix = f"/v1/spaces/{self.space}"

    def _pause(self, attempt: int) -> float:
        return min(_BACKOFF_CAP, self.backoff * 2**attempt)

    def _may_retry(self, call: _Call, error: httpx.TransportError, attempt: int) -> bool:
        return attempt < self.retries and (isinstance(error, _NOT_SENT)
                                           or (call.idempotent and isinstance(error, _DROPPED)))

    def _unreachable(self, call: _Call, error: httpx.TransportError, attempts: int) -> EngramConnectionError:
        return EngramConnectionError(f"connection: {call.method} {call.path} at {self.base_url} failed after "
                                     f"{attempts} attempt(s): {type(error).__name__}: {error}")

    def _run(self, call: _Call) -> Any:
        raise NotImplementedError

    def _episode_path(self, id: str) -> str:
        # an id outside the one id rule names no episode, and "." or ".." would address another route
        if not isinstance(id, str):
            raise TypeError(f"id: expected a string, got {type(id).__name__} {id!r}")
        return f"{self._prefix}/episodes/{quote(check_episode_id(id), safe='')}"

    # ------------------------------------------------------------------ the verbs

    def add(self, embedding: Any = None, payload: dict[str, Any] | None = None, *, text: str | None = None,
            who: str | None = None, session: int | str | None = None, id: str | None = None,
            timestamp: float | None = None, reward: float | None = None, salience: float | None = None,
            tags: Sequence[str] | None = None, unfinished: bool | None = None) -> str:
        """Store one episode (a vector, a text for the server's embedder, or both); returns its id."""
        if isinstance(embedding, str) and text is None:
            embedding, text = None, embedding
        if embedding is None and text is None:
            raise TypeError("embedding: expected an embedding or text=, got neither")
        body = _given(embedding=None if embedding is None else _vectors(embedding, "embedding", 1),
                      payload=payload, text=text, who=who, session=session, id=id, timestamp=timestamp,
                      reward=reward, salience=salience, tags=None if tags is None else list(tags),
                      unfinished=unfinished)
        return self._run(_Call("POST", f"{self._prefix}/episodes", lambda r: _member(r, "id"), body))

    def add_batch(self, embeddings: Any = None, payloads: Sequence[dict[str, Any] | None] | None = None, *,
                  texts: Sequence[str] | None = None, who: str | Sequence[str | None] | None = None,
                  sessions: Sequence[int | str | None] | None = None, ids: Sequence[str] | None = None,
                  timestamps: Sequence[float] | None = None, rewards: Sequence[float] | None = None,
                  saliences: Sequence[float] | None = None, tags: Sequence[Sequence[str]] | None = None,
                  unfinished: Sequence[bool] | None = None) -> list[str]:
        """Store many episodes in one transaction (all or none); returns their ids."""
        if embeddings is None and texts is None:
            raise TypeError("embeddings: expected embeddings or texts=, got neither")
        vectors = None if embeddings is None else _vectors(embeddings, "embeddings", 2)
        if vectors is not None:
            n = len(vectors)
        elif isinstance(texts, Sequence) and not isinstance(texts, str):
            n = len(texts)
        else:
            raise TypeError(f"texts: expected a list of strings, got {type(texts).__name__}")
        who = [who] * n if who is None or isinstance(who, str) else who
        columns = {"embedding": vectors, "payload": payloads, "text": texts, "who": who, "session": sessions,
                   "id": ids, "timestamp": timestamps, "reward": rewards, "salience": saliences,
                   "tags": tags, "unfinished": unfinished}
        names = {"embedding": "embeddings", "payload": "payloads", "text": "texts", "session": "sessions",
                 "id": "ids", "timestamp": "timestamps", "reward": "rewards", "salience": "saliences"}
        given = {key: _column(values, names.get(key, key), n) for key, values in columns.items()
                 if values is not None}
        episodes = [_given(**{key: values[i] for key, values in given.items()}) for i in range(n)]
        for episode in episodes:
            if "tags" in episode:
                episode["tags"] = list(episode["tags"])
        return self._run(_Call("POST", f"{self._prefix}/episodes/batch", lambda r: _member(r, "ids"),
                               {"episodes": episodes}))

    def get(self, id: str, embedding: bool = False) -> EpisodeRecord | None:
        """The episode with this id (with its vector if ``embedding``), or None."""
        embedding = arguments.flag(embedding, "embedding")

        def parse(response: httpx.Response) -> EpisodeRecord | None:
            data = _missing_or_json(response)
            return None if data is None else _episode(data)

        return self._run(_Call("GET", self._episode_path(id), parse,
                               params={"embedding": "true"} if embedding else None, idempotent=True))

    def delete(self, ids: str | Sequence[str]) -> list[str]:
        """Delete episodes; returns the ids that existed (as ``MemoryStore.delete``)."""
        if not isinstance(ids, str | Sequence) or isinstance(ids, bytes):
            raise TypeError(f"ids: expected a string or a list of strings, got {type(ids).__name__} {ids!r}")
        ids = [ids] if isinstance(ids, str) else list(ids)
        calls = [_Call("DELETE", self._episode_path(i), lambda r: [] if _missing_or_json(r) is None
                       else _member(r, "deleted")) for i in ids]
        return self._run_all(calls, lambda answers: [i for deleted in answers for i in deleted])

    def _run_all(self, calls: list[_Call], combine: Callable[[list[Any]], Any]) -> Any:
        raise NotImplementedError

    def recall(self, cue: Any, k: int = 5, known: Any = None, *, text: str | None = None,
               where: Mapping[str, Any] | None = None, since: float | None = None,
               until: float | None = None) -> RecallAnswer:
        """Ranked candidates for a cue (a text, or a vector with an optional ``known`` mask and
        words ``text``), and whether memory holds enough evidence to answer."""
        if isinstance(cue, str):
            if text is not None or known is not None:
                raise ValueError("text: a text cue is its own text (and has no known mask); give text= "
                                 "and known= only with a vector cue")
            body: dict[str, Any] = {"text": cue}
        else:
            body = _given(cue=_vectors(cue, "cue", 1), known=None if known is None else _mask(known, None),
                          text=text)
        body = {**body, "k": k, **_filters(where, since, until)}
        return self._run(_Call("POST", f"{self._prefix}/recall", lambda r: _answer(_json(r)), body,
                               idempotent=True))

    def recall_batch(self, cues: Any, k: int = 5, known: Any = None, *,
                     texts: Sequence[str | None] | None = None, where: Mapping[str, Any] | None = None,
                     since: float | None = None, until: float | None = None) -> list[RecallAnswer]:
        """``recall`` for a batch: texts, or vectors (B, d) with masks and optional ``texts``."""
        if isinstance(cues, (list, tuple)) and cues and all(isinstance(c, str) for c in cues):
            if texts is not None or known is not None:
                raise ValueError("texts: give texts= and known= only with vector cues (text cues are "
                                 "their own text)")
            body: dict[str, Any] = {"texts": list(cues)}
        else:
            vectors = _vectors(cues, "cues", 2)
            body = _given(cues=vectors, known=None if known is None else _mask(known, len(vectors)),
                          texts=None if texts is None else list(texts))
        body = {**body, "k": k, **_filters(where, since, until)}

        def parse(response: httpx.Response) -> list[RecallAnswer]:
            results = _member(response, "results")
            if not isinstance(results, list):
                raise ServerError(f"results: expected a list, got {type(results).__name__}")
            return [_answer(r, f"results[{i}]") for i, r in enumerate(results)]

        return self._run(_Call("POST", f"{self._prefix}/recall/batch", parse, body, idempotent=True))

    def sleep(self, **options: Any) -> SleepReport:
        """Consolidate the space (``replay_budget``, ``walks``, ``seed``); returns a ``SleepReport``."""
        return self._run(_Call("POST", f"{self._prefix}/sleep", lambda r: _sleep_report(_json(r)), options))

    def stats(self) -> dict[str, Any]:
        """The space's counts and strengths (as ``MemoryStore.stats``)."""
        return self._run(_Call("GET", f"{self._prefix}/stats", _json, idempotent=True))

    def health(self) -> bool:
        """Whether the server answers its health check (an unreachable one raises)."""
        return self._run(_Call("GET", "/healthz", lambda r: _member(r, "status") == "ok", idempotent=True))


class EngramClient(_Verbs):
    """The HTTP API of one space, synchronously.

    Args:
        base_url: where the server listens, e.g. ``"http://127.0.0.1:8000"``.
        api_key: the space's key (``engram keys``).
        space: the memory space.
        timeout: seconds for each attempt of a request.
        retries: further attempts after a connection error, where repeating is safe (see the module).
        backoff: seconds before the first retry, doubled for each further one (at most 5 s).
        transport: an ``httpx.BaseTransport`` to use instead of the network (tests, proxies).

    Example:
        >>> with EngramClient("http://127.0.0.1:8000", key, space="chat") as memory:  # doctest: +SKIP
        ...     memory.add([0.1, 0.2, 0.3, 0.4], {"note": "hello"})
        ...     memory.recall([0.1, 0.2, 0.0, 0.0], k=3, known=[1, 1, 0, 0]).status
    """

    def __init__(self, base_url: str, api_key: str, space: str = "default", *, timeout: float = 30.0,
                 retries: int = 2, backoff: float = 0.1, transport: httpx.BaseTransport | None = None):
        super().__init__(base_url, api_key, space, timeout=timeout, retries=retries, backoff=backoff)
        self._http = httpx.Client(base_url=base_url, headers=self._headers, timeout=self.timeout,
                                  transport=transport)

    def _run(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.body, params=call.params)
            except httpx.TransportError as error:
                if not self._may_retry(call, error, attempt):
                    raise self._unreachable(call, error, attempt + 1) from error
                time.sleep(self._pause(attempt))
                attempt += 1
                continue
            return call.parse(response)

    def _run_all(self, calls: list[_Call], combine: Callable[[list[Any]], Any]) -> Any:
        return combine([self._run(call) for call in calls])

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EngramClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EngramClient({self.base_url!r}, space={self.space!r})"


class AsyncEngramClient(_Verbs):
    """The HTTP API of one space, asynchronously: the verbs of ``EngramClient``, each awaited.

    Takes the arguments of ``EngramClient``; ``transport`` is an ``httpx.AsyncBaseTransport``
    (``httpx.ASGITransport(app)`` serves an app in process).
    """

    def __init__(self, base_url: str, api_key: str, space: str = "default", *, timeout: float = 30.0,
                 retries: int = 2, backoff: float = 0.1, transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(base_url, api_key, space, timeout=timeout, retries=retries, backoff=backoff)
        self._http = httpx.AsyncClient(base_url=base_url, headers=self._headers, timeout=self.timeout,
                                       transport=transport)

    async def _run(self, call: _Call) -> Any:  # type: ignore[override]
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.body,
                                                    params=call.params)
            except httpx.TransportError as error:
                if not self._may_retry(call, error, attempt):
                    raise self._unreachable(call, error, attempt + 1) from error
                await asyncio.sleep(self._pause(attempt))
                attempt += 1
                continue
            return call.parse(response)

    async def _run_all(self, calls: list[_Call], combine: Callable[[list[Any]], Any]) -> Any:  # type: ignore[override]
        return combine([await self._run(call) for call in calls])

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncEngramClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncEngramClient({self.base_url!r}, space={self.space!r})"


__all__ = [
    "AsyncEngramClient",
    "AuthenticationError",
    "Candidate",
    "ConflictError",
    "EngramClient",
    "EngramConnectionError",
    "EngramError",
    "EpisodeRecord",
    "ForbiddenError",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RecallAnswer",
    "ServerError",
]
