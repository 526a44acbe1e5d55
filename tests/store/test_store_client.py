"""The HTTP client against the real app (uvicorn on a loopback port, or in process over ASGI):
round trips, every error status mapped to its exception, and retries only where they are safe."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import socket
import threading

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from engram.store import MemoryStore
from engram.store.backend import MAX_PAYLOAD_BYTES
from engram.store.client import (
    AsyncEngramClient,
    AuthenticationError,
    Candidate,
    ConflictError,
    EngramClient,
    EngramConnectionError,
    EpisodeRecord,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RecallAnswer,
    ServerError,
)
from engram.store.consolidation import SleepReport
from engram.store.server import create_app, issue_key

DIM = 8
_spaces = itertools.count()


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One uvicorn server in a thread for the module: (base_url, store directory)."""
    path = tmp_path_factory.mktemp("served") / "store"
    issue_key(path, "setup", dim=DIM)
    app = create_app(path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not running.started:
        thread.join(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", path
    running.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def space(server):
    """A fresh space of the served store and its key: (base_url, space, key)."""
    base_url, path = server
    name = f"s{next(_spaces)}"
    return base_url, name, issue_key(path, name, dim=DIM)


def test_sync_round_trip_add_get_recall_delete_sleep_stats(space):
    base_url, name, key = space
    with EngramClient(base_url, key, name) as memory:
        assert memory.health() is True
        ids = memory.add_batch(np.stack([vec(i) for i in range(20)]), [{"i": i} for i in range(20)],
                               tags=[["batch"]] * 20)
        assert len(ids) == 20
        mine = memory.add(vec(99), {"note": "x"}, id="mine", tags=["t"], reward=1.5)
        assert mine == "mine"
        got = memory.get("mine", embedding=True)
        assert isinstance(got, EpisodeRecord)
        assert (got.payload, got.tags, got.reward, got.kind) == ({"note": "x"}, ("t",), 1.5, "episode")
        assert np.allclose(got.embedding, vec(99), atol=1e-6)
        assert memory.get("mine").embedding is None
        answer = memory.recall(vec(3), k=3)
        assert isinstance(answer, RecallAnswer) and answer.status in {"recalled", "insufficient_evidence"}
        assert all(isinstance(c, Candidate) for c in answer.episodes) and len(answer.episodes) == 3
        assert answer.episodes[0].id == ids[3] and answer.episodes[0].payload == {"i": 3}
        assert answer.accepted == (answer.status == "recalled")
        partial = memory.recall_batch(np.stack([vec(1), vec(2)]), k=2, known=[1, 1, 1, 1, 1, 1, 0, 0])
        assert [a.episodes[0].id for a in partial] == [ids[1], ids[2]]
        assert memory.delete(["mine", "never-stored"]) == ["mine"]
        assert memory.get("mine") is None
        assert memory.stats()["episodes"] == 20
        report = memory.sleep(walks=4, seed=1)
        assert isinstance(report, SleepReport) and report.number == 1 and report.replayed > 0
        assert memory.stats()["sleeps"] == 1


def test_an_id_with_url_characters_round_trips(space):
    base_url, name, key = space
    with EngramClient(base_url, key, name) as memory:
        eid = "a b?c#d%e&f=g"
        assert memory.add(vec(1), id=eid) == eid
        assert memory.get(eid).id == eid
        assert memory.delete(eid) == [eid]


def test_a_refusal_keeps_its_candidates(tmp_path, rng):
    dim = 32
    centres = rng.standard_normal((10, dim))
    vectors = (centres[rng.integers(0, 10, 300)] + 0.6 * rng.standard_normal((300, dim))).astype(np.float32)
    key = issue_key(tmp_path / "s", "chat", dim=dim)
    with MemoryStore(tmp_path / "s", space="chat") as store:
        store.add_batch(vectors)
        store.calibrate(samples=128, seed=1)
    app = create_app(tmp_path / "s")

    async def scenario() -> RecallAnswer:
        async with AsyncEngramClient("http://engram.test", key, "chat",
                                     transport=httpx.ASGITransport(app=app)) as memory:
            return await memory.recall(rng.standard_normal(dim) * 3, k=3)

    novel = asyncio.run(scenario())
    assert novel.status == "insufficient_evidence" and novel.decided_by == "gate" and not novel.accepted
    assert len(novel.episodes) == 3 and all(isinstance(c, Candidate) for c in novel.episodes)
    assert novel.trace["search"], "the refusal still shows what the search found"


def test_the_client_sends_only_the_fields_the_caller_gives():
    sent: list[tuple[str, str, dict]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((request.method, request.url.path, json.loads(request.content or b"null")))
        return httpx.Response(201, json={"id": "x", "ids": ["x"]})

    with EngramClient("http://engram.test", "k", "chat", transport=httpx.MockTransport(answer)) as memory:
        memory.add(text="I adopted a dog called Rex", who="Ada", session=3, timestamp=5.0)
        memory.add("one more text")
        memory.add([1, 0, 0, 0])
        memory.add_batch(texts=["a", "b"], who="Ada", sessions=[1, 2], tags=[("x",), ()])
    assert sent == [
        ("POST", "/v1/spaces/chat/episodes",
         {"text": "I adopted a dog called Rex", "who": "Ada", "session": 3, "timestamp": 5.0}),
        ("POST", "/v1/spaces/chat/episodes", {"text": "one more text"}),
        ("POST", "/v1/spaces/chat/episodes", {"embedding": [1.0, 0.0, 0.0, 0.0]}),
        ("POST", "/v1/spaces/chat/episodes/batch",
         {"episodes": [{"text": "a", "who": "Ada", "session": 1, "tags": ["x"]},
                       {"text": "b", "who": "Ada", "session": 2, "tags": []}]}),
    ]


def test_recall_filters_and_text_cues_go_by_their_field_names():
    sent: list[dict] = []
    empty = {"status": "insufficient_evidence", "decided_by": "search", "confidence": 0.0,
             "calibrated": False, "episodes": [], "trace": {}}

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"results": [empty]} if request.url.path.endswith("batch") else empty)

    with EngramClient("http://engram.test", "k", "chat", transport=httpx.MockTransport(answer)) as memory:
        memory.recall("what is Ada's dog called?", k=3, where={"who": "Ada"}, since=1.0, until=9.0)
        memory.recall([0.5, 0.5], text="dog", known=[True, False])
        memory.recall_batch(["dog?"], k=2)
    assert sent == [
        {"text": "what is Ada's dog called?", "k": 3, "where": {"who": "Ada"}, "since": 1.0, "until": 9.0},
        {"cue": [0.5, 0.5], "known": [True, False], "text": "dog", "k": 5},
        {"texts": ["dog?"], "k": 2},
    ]


def test_arguments_that_cannot_be_sent_are_refused_by_name_before_sending():
    calls: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(500))
    with pytest.raises(ValueError, match=r"^space: "):
        EngramClient("http://engram.test", "k", "a/b")
    with pytest.raises(ValueError, match=r"^base_url: "):
        EngramClient("engram.test", "k")
    with pytest.raises(ValueError, match=r"^api_key: "):
        EngramClient("http://engram.test", "")
    with pytest.raises(ValueError, match=r"^retries: "):
        EngramClient("http://engram.test", "k", retries=-1)
    with EngramClient("http://engram.test", "k", transport=transport) as memory:
        with pytest.raises(ValueError, match=r"^embedding: contains NaN"):
            memory.add([1.0, float("nan")])
        with pytest.raises(TypeError, match=r"^embedding: expected real numbers"):
            memory.add(np.array(["1", "2"]), text="words")
        with pytest.raises(ValueError, match=r"^known: expected a boolean"):
            memory.recall([1.0, 0.0], known=[2, 0])
        with pytest.raises(ValueError, match=r"^rewards: expected 2 entries"):
            memory.add_batch(np.eye(2), rewards=[1.0])
        with pytest.raises(TypeError, match=r"^embedding: expected an embedding or text="):
            memory.add()
        for no_episode in (".", "..", "a/b", ""):
            with pytest.raises(ValueError, match=r"^id: expected 1-128 characters"):
                memory.get(no_episode)
            with pytest.raises(ValueError, match=r"^id: expected 1-128 characters"):
                memory.delete([no_episode])
    assert calls == []


def test_every_error_status_maps_to_its_exception_with_the_servers_detail(space, server):
    base_url, name, key = space
    with EngramClient(base_url, key, name) as memory:
        memory.add(vec(1), id="taken")
        with pytest.raises(ConflictError, match="already in space") as conflict:
            memory.add(vec(2), id="taken")
        assert conflict.value.status == 409 and isinstance(conflict.value, ValueError)
        with pytest.raises(ConflictError, match="unique ids within the batch"):
            memory.add_batch(np.stack([vec(3), vec(4)]), ids=["twice", "twice"])
        with pytest.raises(PayloadTooLargeError, match=r"^payload: expected at most") as large:
            memory.add(vec(5), {"blob": "x" * (MAX_PAYLOAD_BYTES + 1)})
        assert large.value.status == 413
        with pytest.raises(InvalidRequestError, match=r"^k: ") as invalid:
            memory.recall(vec(1), k=0)
        assert invalid.value.status == 422
        assert isinstance(invalid.value, ValueError) and isinstance(invalid.value, TypeError)
        with pytest.raises(InvalidRequestError, match=r"^embedding: "):
            memory.add(np.ones(DIM + 1))
        with pytest.raises(InvalidRequestError, match=r"^replay_budget: "):
            memory.sleep(replay_budget=0)
        assert memory.stats()["episodes"] == 1  # nothing refused was stored
    with EngramClient(base_url, "engram_wrong", name) as wrong:
        with pytest.raises(ForbiddenError, match="does not open this space") as forbidden:
            wrong.stats()
        assert forbidden.value.status == 403 and isinstance(forbidden.value, PermissionError)
    with EngramClient(base_url, key, "no-such-space") as absent, pytest.raises(ForbiddenError):
        absent.get("taken")
    with EngramClient(base_url, key, name) as stripped:
        del stripped._http.headers["X-API-Key"]  # as a proxy that drops the header would
        with pytest.raises(AuthenticationError, match=r"^x-api-key: expected") as missing:
            stripped.stats()
        assert missing.value.status == 401
    with EngramClient(base_url + "/not-the-api", key, name) as misplaced:
        for verb in (misplaced.stats, lambda: misplaced.get("taken"), lambda: misplaced.delete("taken")):
            with pytest.raises(NotFoundError, match="Not Found") as lost:
                verb()
            assert lost.value.status == 404 and isinstance(lost.value, LookupError)


def test_server_failures_and_answers_that_are_not_the_api_raise_server_error():
    answers = iter([httpx.Response(500, text="Internal Server Error"), httpx.Response(200, text="<html>"),
                    httpx.Response(200, json={"status": "recalled"})])
    transport = httpx.MockTransport(lambda request: next(answers))
    with EngramClient("http://engram.test", "k", transport=transport) as memory:
        with pytest.raises(ServerError, match="Internal Server Error") as failed:
            memory.stats()
        assert failed.value.status == 500
        with pytest.raises(ServerError, match=r"^response: expected JSON"):
            memory.stats()
        with pytest.raises(ServerError, match="lacks the field 'decided_by'"):
            memory.recall([1.0, 0.0])


def test_the_client_mirrors_the_servers_schema(tmp_path):
    """Every route the client calls is in the OpenAPI schema, and every field the schema
    promises in an answer is a field of the dataclass that carries it."""
    issue_key(tmp_path / "s", "x", dim=DIM)
    with TestClient(create_app(tmp_path / "s")) as http:
        openapi = http.get("/openapi.json").json()
    paths = openapi["paths"]
    space = "/v1/spaces/{space}"
    for method, route in [("post", f"{space}/episodes"), ("post", f"{space}/episodes/batch"),
                          ("get", f"{space}/episodes/{{eid}}"), ("delete", f"{space}/episodes/{{eid}}"),
                          ("post", f"{space}/recall"), ("post", f"{space}/recall/batch"),
                          ("post", f"{space}/sleep"), ("get", f"{space}/stats"), ("get", "/healthz")]:
        assert method in paths.get(route, {}), (method, route)
    schemas = openapi["components"]["schemas"]
    for name, kind in [("RecallOut", RecallAnswer), ("RecalledOut", Candidate), ("EpisodeOut", EpisodeRecord),
                       ("SleepReport", SleepReport)]:
        ours = {f.name for f in dataclasses.fields(kind)}
        assert set(schemas[name]["properties"]) <= ours, name


class DroppingProxy:
    """A TCP proxy to ``upstream`` that reads the first ``drops`` requests and hangs up unanswered."""

    def __init__(self, upstream: str, drops: int):
        self.upstream = httpx.URL(upstream)
        self.drops = drops
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            if self.connections <= self.drops:
                conn.recv(65536)
                conn.close()
                continue
            up = socket.create_connection((self.upstream.host, self.upstream.port))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


def test_a_read_is_retried_after_a_dropped_connection(space):
    base_url, name, key = space
    with EngramClient(base_url, key, name) as direct:
        direct.add(vec(1), id="kept")
    proxy = DroppingProxy(base_url, drops=2)
    try:
        with EngramClient(proxy.url, key, name, retries=2, backoff=0.0) as memory:
            assert memory.get("kept").id == "kept"
        assert proxy.connections == 3
    finally:
        proxy.close()


def test_a_write_is_not_sent_twice_after_a_dropped_connection(space):
    base_url, name, key = space
    proxy = DroppingProxy(base_url, drops=1)
    try:
        with EngramClient(proxy.url, key, name, retries=3, backoff=0.0) as memory:
            with pytest.raises(EngramConnectionError, match="after 1 attempt") as dropped:
                memory.add(vec(1), id="maybe")
            assert isinstance(dropped.value, ConnectionError)
            assert memory.get("maybe") is None  # the next call gets through: nothing was stored
        assert proxy.connections == 2
    finally:
        proxy.close()


def test_a_refused_connection_is_retried_then_reported():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]  # closed on leaving: nothing listens there
    with EngramClient(f"http://127.0.0.1:{port}", "k", retries=2, backoff=0.0) as memory, \
            pytest.raises(EngramConnectionError, match="after 3 attempt"):
        memory.add([1.0, 0.0])
    with EngramClient(f"http://127.0.0.1:{port}", "k", retries=0) as memory, \
            pytest.raises(EngramConnectionError, match="after 1 attempt"):
        memory.health()


def test_async_client_round_trip_in_process(tmp_path):
    path = tmp_path / "s"
    key = issue_key(path, "chat", dim=DIM)
    app = create_app(path)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with AsyncEngramClient("http://engram.test", key, "chat", transport=transport) as memory:
            assert await memory.health() is True
            ids = await memory.add_batch(np.stack([vec(i) for i in range(12)]))
            assert await memory.add(vec(50), {"n": 1}, id="one") == "one"
            assert (await memory.get("one")).payload == {"n": 1}
            answer = await memory.recall(vec(4), k=2)
            assert answer.episodes[0].id == ids[4]
            assert [a.episodes[0].id for a in await memory.recall_batch(np.stack([vec(5), vec(6)]))] == \
                [ids[5], ids[6]]
            with pytest.raises(ConflictError):
                await memory.add(vec(51), id="one")
            assert await memory.delete(["one", "two"]) == ["one"]
            assert await memory.get("one") is None
            assert (await memory.stats())["episodes"] == 12
            assert (await memory.sleep(walks=2)).number == 1
        async with AsyncEngramClient("http://engram.test", "engram_wrong", "chat",
                                     transport=httpx.ASGITransport(app=app)) as wrong:
            with pytest.raises(ForbiddenError):
                await wrong.stats()

    asyncio.run(scenario())


def test_async_client_retries_a_read_but_not_a_write_after_a_drop(space):
    base_url, name, key = space

    async def scenario(proxy: DroppingProxy) -> None:
        async with AsyncEngramClient(proxy.url, key, name, retries=2, backoff=0.0) as memory:
            assert (await memory.stats())["episodes"] == 0
        assert proxy.connections == 2
        proxy.drops = 3  # the next connection, a new client's, is dropped
        async with AsyncEngramClient(proxy.url, key, name, retries=2, backoff=0.0) as memory:
            with pytest.raises(EngramConnectionError, match="after 1 attempt"):
                await memory.add(vec(1))

    proxy = DroppingProxy(base_url, drops=1)
    try:
        asyncio.run(scenario(proxy))
        assert proxy.connections == 3
    finally:
        proxy.close()
    with EngramClient(base_url, key, name) as direct:
        assert direct.stats()["episodes"] == 0


def _scenario(memory, vectors: np.ndarray) -> dict:
    """One scenario of verbs, for the in-process store and the client alike; what it saw."""
    ids = memory.add_batch(vectors[:30], [{"i": i} for i in range(30)], ids=[f"e{i}" for i in range(30)],
                           timestamps=[1000.0 + i for i in range(30)], tags=[["even"] if i % 2 == 0 else []
                                                                            for i in range(30)])
    memory.add(vectors[30], {"one": True}, id="single", timestamp=2000.0, reward=0.5, salience=0.25)
    seen: dict = {"ids": ids, "errors": []}
    results = [memory.recall(vectors[i] + 0.05, k=4) for i in (0, 7, 30)]
    results.append(memory.recall(vectors[3], k=3, known=[1, 1, 1, 1, 0, 0, 0, 0]))
    results += memory.recall_batch(vectors[[4, 5]], k=2)
    seen["recalls"] = [(r.status, r.decided_by, round(r.confidence, 4),
                        [getattr(c, "episode", c).id for c in r.episodes]) for r in results]
    single = memory.get("single")
    seen["single"] = (single.payload, single.reward, single.salience, tuple(single.tags), single.timestamp)
    seen["absent"] = memory.get("absent")
    seen["deleted"] = memory.delete(["e1", "absent"])
    for bad in (lambda: memory.add(vectors[0], id="e0"), lambda: memory.recall(vectors[0], k=0),
                lambda: memory.add(np.ones(DIM + 1))):
        with pytest.raises((TypeError, ValueError)) as raised:
            bad()
        seen["errors"].append((isinstance(raised.value, ValueError), str(raised.value).split(":")[0]))
    seen["episodes"] = memory.stats()["episodes"]
    return seen


def test_the_client_answers_as_the_in_process_store_does(space, tmp_path):
    """The same scenario, in process and over HTTP: the same ids, rankings, statuses and confidences,
    the same absent/deleted answers, and errors of the same class naming the same argument."""
    vectors = np.stack([vec(i) for i in range(31)])
    base_url, name, key = space
    with MemoryStore(tmp_path / "local", space=name, dim=DIM) as local:
        expected = _scenario(local, vectors)
    with EngramClient(base_url, key, name) as remote:
        assert _scenario(remote, vectors) == expected
    assert expected["errors"] == [(True, "id"), (True, "k"), (True, "embedding")]
