"""The HTTP server under attack: size limits before parsing, keys before loading, no enumeration,
one id rule for every route, key rotation that survives a kill, and a schema that tells the truth.

Size and key checks are driven through raw ASGI calls, so the tests see exactly how much of a
body the server pulled before it answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from engram.store import server
from engram.store.server import create_app, issue_key

DIM = 8
LIMIT = 32 * 1024 * 1024  # the server's default request size limit
MIB = b"x" * (1 << 20)


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "s"
    keys = {space: issue_key(path, space, dim=DIM) for space in ("alice", "bob")}
    return path, keys


def vec(seed: int) -> list[float]:
    return np.random.default_rng(seed).standard_normal(DIM).round(4).tolist()


def call(app, path: str, chunks, headers: dict[str, str], method: str = "POST", root_path: str = ""):
    """Send a request whose body is the iterable ``chunks``; returns (status, body, bytes pulled)."""
    pulled = 0
    source = iter(chunks)
    ahead = next(source, None)

    async def receive():
        nonlocal pulled, ahead
        chunk, ahead = ahead or b"", next(source, None)
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": ahead is not None}

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": root_path,
             "scheme": "http", "server": ("test", 80), "client": ("test", 1),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body) if body else None, pulled


def episode_body(size: int) -> bytes:
    text = json.dumps({"embedding": vec(0), "payload": {"pad": "x" * size}})
    return text.encode()


# ------------------------------------------------------------------ size before parsing and auth

def test_a_declared_oversized_body_is_refused_before_a_byte_is_read(store_path):
    path, keys = store_path
    app = create_app(path)
    body = episode_body(1000)
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": keys["alice"]}):
        status, answer, pulled = call(app, "/v1/spaces/alice/episodes", [body],
                                      {**headers, "content-length": str(LIMIT + 1),
                                       "content-type": "application/json"})
        assert (status, pulled) == (413, 0)
        assert answer == {"detail": f"body: expected at most {LIMIT} bytes, got {LIMIT + 1}"}


def test_a_streamed_body_is_cut_off_at_the_limit(store_path):
    path, keys = store_path
    status, answer, pulled = call(create_app(path), "/v1/spaces/alice/episodes", [MIB] * 40,
                                  {"X-API-Key": keys["alice"], "content-type": "application/json"})
    assert status == 413 and answer["detail"] == f"body: expected at most {LIMIT} bytes, got more"
    assert LIMIT < pulled <= LIMIT + len(MIB)


def test_the_limit_is_a_parameter(store_path):
    path, keys = store_path
    app = create_app(path, max_body_bytes=1000)
    status, _, pulled = call(app, "/v1/spaces/alice/episodes", [episode_body(2000)],
                             {"X-API-Key": keys["alice"], "content-type": "application/json"})
    assert (status, pulled) == (413, len(episode_body(2000)))


def test_a_request_without_a_valid_key_is_answered_before_its_body_is_read(store_path):
    path, keys = store_path
    app = create_app(path)
    body = episode_body(100_000)
    for headers, expected in (({}, 401), ({"X-API-Key": "wrong"}, 403), ({"X-API-Key": keys["bob"]}, 403)):
        status, _, pulled = call(app, "/v1/spaces/alice/episodes", [body[:1000], body[1000:]],
                                 {**headers, "content-type": "application/json"})
        assert (status, pulled) == (expected, 0)
    status, _, pulled = call(app, "/v1/spaces/alice/episodes", [body[:1000], body[1000:]],
                             {"X-API-Key": keys["alice"], "content-type": "application/json"})
    assert (status, pulled) == (201, len(body))


def test_a_malformed_content_length_is_a_400(store_path):
    path, keys = store_path
    status, answer, pulled = call(create_app(path), "/v1/spaces/alice/episodes", [b"{}"],
                                  {"X-API-Key": keys["alice"], "content-length": "12abc"})
    assert (status, pulled) == (400, 0) and answer["detail"].startswith("content-length: expected")


# ------------------------------------------------------------------ keys before loading, no enumeration

def test_a_wrong_key_never_opens_the_space(store_path, monkeypatch):
    path, keys = store_path
    opened: list[str] = []
    real = server.MemoryStore

    def spy(*args, **kwargs):
        opened.append(kwargs["space"])
        return real(*args, **kwargs)

    monkeypatch.setattr(server, "MemoryStore", spy)
    with TestClient(create_app(path)) as client:
        for key in ("wrong", keys["bob"]):
            assert client.get("/v1/spaces/alice/stats", headers={"X-API-Key": key}).status_code == 403
        assert client.get("/v1/spaces/alice/stats").status_code == 401
        assert opened == []
        assert client.get("/v1/spaces/alice/stats", headers={"X-API-Key": keys["alice"]}).status_code == 200
        assert opened == ["alice"]


def test_the_key_is_required_however_the_app_is_mounted(store_path):
    path, keys = store_path
    parent = FastAPI()
    parent.mount("/api", create_app(path))
    with TestClient(parent) as client:
        url = "/api/v1/spaces/alice/stats"
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"X-API-Key": "x"}).status_code == 403
        assert client.get(url, headers={"X-API-Key": keys["alice"]}).status_code == 200
    # behind a proxy's root path the body is still never read without the key
    status, _, pulled = call(create_app(path), "/api/v1/spaces/alice/episodes", [episode_body(10)], {},
                             root_path="/api")
    assert (status, pulled) == (401, 0)


def test_absent_and_forbidden_spaces_get_the_same_answer(store_path):
    path, keys = store_path
    with TestClient(create_app(path)) as client:
        h = {"X-API-Key": keys["bob"]}
        for route in ("/stats", "/episodes/e1"):
            forbidden = client.get(f"/v1/spaces/alice{route}", headers=h)
            absent = client.get(f"/v1/spaces/nobody{route}", headers=h)
            assert forbidden.status_code == absent.status_code == 403
            assert forbidden.content == absent.content
            assert dict(forbidden.headers) == dict(absent.headers)
        post = client.post("/v1/spaces/nobody/episodes", headers=h, json={"embedding": vec(0)})
        assert post.status_code == 403 and post.content == forbidden.content


# ------------------------------------------------------------------ one id rule

UNADDRESSABLE = ["a/b", ".", "..", "a\\b", "/", "tab\there", "new\nline", "nul\x00", "x" * 129, ""]
ODD_BUT_FINE = ["a b", "ü-ñ", "a?b", "a#b", "%41", "a.b", "...", ".hidden", "a:b@c", "x" * 128]


def test_ids_post_accepts_are_exactly_those_get_and_delete_reach(store_path):
    path, keys = store_path
    h = {"X-API-Key": keys["alice"]}
    app = create_app(path)
    url = "/v1/spaces/alice/episodes"
    with TestClient(app) as client:
        for eid in UNADDRESSABLE:
            one = client.post(url, headers=h, json={"embedding": vec(1), "id": eid})
            batch = client.post(url + "/batch", headers=h,
                                json={"episodes": [{"embedding": vec(1), "id": eid}]})
            assert one.status_code == batch.status_code == 422, (eid, one.text)
            assert one.json()["detail"].split(": ")[0].endswith("id"), one.text
        for i, eid in enumerate(ODD_BUT_FINE):
            assert client.post(url, headers=h, json={"embedding": vec(i), "id": eid}).status_code == 201
    # GET and DELETE as a server sees them: the path percent-decoded once (TestClient decodes
    # twice, which would turn "%41" into "A")
    for eid in ODD_BUT_FINE:
        status, got, _ = call(app, f"{url}/{eid}", [], h, method="GET")
        assert status == 200 and got["id"] == eid, (eid, got)
        assert call(app, f"{url}/{eid}", [], h, method="DELETE")[:2] == (200, {"deleted": [eid]})
    for eid in ("..", ".", "a\\b"):
        status, got, _ = call(app, f"{url}/{eid}", [], h, method="GET")
        assert status == 422 and got["detail"].startswith("id: expected 1-128 characters"), (eid, got)
    assert call(app, "/v1/spaces/alice/stats", [], h, method="GET")[1]["episodes"] == 0


# ------------------------------------------------------------------ key rotation

def allowed(path: Path, key: str, space: str = "alice") -> bool:
    with TestClient(create_app(path)) as client:
        status = client.get(f"/v1/spaces/{space}/stats", headers={"X-API-Key": key}).status_code
    assert status in (200, 403)
    return status == 200


class Clock:
    """Stands in for the server module's ``time``: wall time moves only when told to."""

    def __init__(self) -> None:
        self.now = time.time()
        self.perf_counter = time.perf_counter

    def time(self) -> float:
        return self.now


def test_rotation_keeps_the_previous_key_for_the_overlap_only(store_path, monkeypatch):
    path, keys = store_path
    clock = Clock()
    monkeypatch.setattr(server, "time", clock)
    old = keys["alice"]
    new = issue_key(path, "alice", overlap=100)
    clock.now += 99
    assert allowed(path, new) and allowed(path, old)
    clock.now += 2
    assert allowed(path, new) and not allowed(path, old)
    newer = issue_key(path, "alice", overlap=3600)
    newest = issue_key(path, "alice", overlap=0)  # overlap 0 revokes every earlier key at once
    assert allowed(path, newest) and not allowed(path, newer) and not allowed(path, new)
    assert allowed(path, keys["bob"], "bob")  # other spaces' keys are untouched
    with pytest.raises(ValueError, match=r"^overlap: expected a finite number in \[0, "):
        issue_key(path, "alice", overlap=-1)


def test_concurrent_rotations_keep_every_key_they_showed_valid(store_path, monkeypatch):
    path, keys = store_path
    hash_quickly = server.hash_key

    def hash_slowly(key: str) -> str:
        time.sleep(0.05)  # widens any window between reading the key list and writing it back
        return hash_quickly(key)

    monkeypatch.setattr(server, "hash_key", hash_slowly)
    start = threading.Barrier(4)
    shown: list[str] = []

    def rotate() -> None:
        start.wait()
        shown.append(issue_key(path, "alice"))

    threads = [threading.Thread(target=rotate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.setattr(server, "hash_key", hash_quickly)
    assert len(set(shown)) == 4
    for key in [keys["alice"], *shown]:
        assert allowed(path, key), "every key a rotation showed, and the one before, still opens the space"


ROTATE = textwrap.dedent(
    """
    import builtins, os, signal, sys
    from engram.cli import main
    from engram.store.backends.sqlite import SQLiteBackend

    point = sys.argv[1]
    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
    update = SQLiteBackend.update_state_with
    def patched(self, space, change):
        if point == "before-commit":
            kill()
        update(self, space, change)
        if point == "after-commit":
            kill()
    SQLiteBackend.update_state_with = patched
    show = builtins.print
    def shown(*args, **kwargs):
        show(*args, **kwargs)
        if point == "after-show":
            kill()
    builtins.print = shown
    main(["store", "key", "--path", sys.argv[2], "--space", "alice"])
    """
)


@pytest.mark.parametrize("point", ["before-commit", "after-commit", "after-show"])
def test_a_kill_at_each_point_of_rotation_leaves_a_valid_key(store_path, point):
    path, keys = store_path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", ROTATE, point, str(path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == -9, done.stderr
    assert allowed(path, keys["alice"]), "the key in use must survive a rotation that died"
    if point == "after-show":
        shown = done.stdout.strip()
        assert shown.startswith("engram_") and allowed(path, shown)


# ------------------------------------------------------------------ the schema tells the truth

def test_the_schema_documents_every_status_and_body(store_path):
    path, _ = store_path
    with TestClient(create_app(path)) as client:
        spec = client.get("/openapi.json").json()
    error = {"$ref": "#/components/schemas/Error"}
    for route, methods in spec["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            expected = {"400", "413"}
            if route.startswith("/v1/spaces/"):
                expected |= {"401", "403", "422"}
            if "{eid}" in route:
                expected |= {"404"}
            assert expected <= set(responses), (method, route, sorted(responses))
            for status in expected:
                assert responses[status]["content"]["application/json"]["schema"] == error
    assert set(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert spec["components"]["schemas"]["Error"]["required"] == ["detail"]


def test_the_bodies_match_the_schema_and_types_are_strict(store_path):
    path, keys = store_path
    h = {"X-API-Key": keys["alice"]}
    with TestClient(create_app(path)) as client:
        assert client.get("/metrics").headers["content-type"].startswith("text/plain")
        for url, body, field in [
            ("/v1/spaces/alice/sleep", {"seed": False}, "seed"),
            ("/v1/spaces/alice/sleep", {"walks": 1.5}, "walks"),
            ("/v1/spaces/alice/recall", {"cue": vec(0), "k": True}, "k"),
            ("/v1/spaces/alice/episodes", {"embedding": ["1"] * DIM}, "embedding[0]"),
            ("/v1/spaces/alice/episodes", {"embedding": vec(0), "reward": "1"}, "reward"),
            ("/v1/spaces/alice/episodes", {"embedding": vec(0), "unfinished": 1}, "unfinished"),
            ("/v1/spaces/alice/episodes/batch", {"episodes": [{"embedding": [True] * DIM}]},
             "episodes[0].embedding[0]"),
        ]:
            r = client.post(url, headers=h, json=body)
            assert r.status_code == 422, (body, r.text)
            assert set(r.json()) == {"detail"} and r.json()["detail"].startswith(f"{field}: "), r.text
        missing = client.post("/v1/spaces/alice/recall", headers=h, json={})
        assert missing.status_code == 422
        assert missing.json()["detail"].startswith("cue: expected a cue vector, a text or both")
        assert client.post("/v1/spaces/alice/recall", headers=h, json={"cue": [1] * DIM}).status_code == 200
