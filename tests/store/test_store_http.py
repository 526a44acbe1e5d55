"""The HTTP API through FastAPI's TestClient, and the CLI: keys, validation, isolation, metrics,
episodes and cues given as text."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engram.cli import main
from engram.store import GateModel, HashingEmbedder, MemoryStore
from engram.store.pipeline import FEATURES
from engram.store.server import create_app, issue_key

DIM = 8


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "s"
    keys = {space: issue_key(path, space, dim=DIM) for space in ("alice", "bob")}
    with TestClient(create_app(path)) as client:
        yield client, keys


def vec(seed: int) -> list[float]:
    return np.random.default_rng(seed).standard_normal(DIM).round(4).tolist()


def test_add_get_recall_delete_round_trip(served):
    client, keys = served
    h = {"X-API-Key": keys["alice"]}
    r = client.post("/v1/spaces/alice/episodes/batch", headers=h,
                    json={"episodes": [{"embedding": vec(i), "payload": {"i": i}} for i in range(20)]})
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    one = client.post("/v1/spaces/alice/episodes", headers=h,
                      json={"embedding": vec(99), "payload": {"text": "x"}, "id": "mine", "tags": ["t"]})
    assert one.status_code == 201 and one.json() == {"id": "mine"}
    got = client.get("/v1/spaces/alice/episodes/mine?embedding=true", headers=h).json()
    assert got["payload"] == {"text": "x"} and got["tags"] == ["t"]
    assert np.allclose(got["embedding"], vec(99), atol=1e-6)
    recall = client.post("/v1/spaces/alice/recall", headers=h, json={"cue": vec(3), "k": 2}).json()
    assert recall["decided_by"] in {"search", "completion", "gate"}
    if recall["status"] == "recalled":
        assert recall["episodes"][0]["id"] == ids[3]
    batch = client.post("/v1/spaces/alice/recall/batch", headers=h,
                        json={"cues": [vec(1), vec(2)], "known": [[True] * 4 + [False] * 4] * 2})
    assert batch.status_code == 200 and len(batch.json()["results"]) == 2
    assert client.delete("/v1/spaces/alice/episodes/mine", headers=h).json() == {"deleted": ["mine"]}
    assert client.get("/v1/spaces/alice/episodes/mine", headers=h).status_code == 404
    assert client.get("/v1/spaces/alice/stats", headers=h).json()["episodes"] == 20
    assert client.post("/v1/spaces/alice/sleep", headers=h, json={"walks": 4}).status_code == 200
    metrics = client.get("/metrics").text
    assert "engram_requests_total" in metrics and "engram_episodes_added_total 21.0" in metrics
    assert "/v1/spaces/{space}/recall/batch" in client.get("/openapi.json").json()["paths"]


def test_keys_are_per_space_and_stored_hashed(served, tmp_path):
    client, keys = served
    add = {"embedding": vec(0)}
    assert client.post("/v1/spaces/alice/episodes", json=add).status_code == 401
    wrong = client.post("/v1/spaces/alice/episodes", json=add, headers={"X-API-Key": "wrong"})
    assert wrong.status_code == 403
    bob_on_alice = client.post("/v1/spaces/alice/episodes", json=add, headers={"X-API-Key": keys["bob"]})
    assert bob_on_alice.status_code == 403
    assert client.get("/v1/spaces/alice/stats", headers={"X-API-Key": keys["bob"]}).status_code == 403
    # an absent space answers as a forbidden one: names cannot be probed
    assert client.get("/v1/spaces/nobody/stats", headers={"X-API-Key": keys["bob"]}).status_code == 403
    raw = b"".join(p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert keys["alice"].encode() not in raw


def test_bad_requests_are_clear_4xx_and_lose_nothing(served):
    client, keys = served
    h = {"X-API-Key": keys["alice"]}
    url = "/v1/spaces/alice/episodes"
    client.post(url, headers=h, json={"embedding": vec(0), "id": "keep"})
    wrong_dim = client.post(url, headers=h, json={"embedding": [1.0, 2.0]})
    assert wrong_dim.status_code == 422 and "embedding: List should have at least 8 items" in wrong_dim.text
    nan = client.post(url, headers={**h, "Content-Type": "application/json"},
                      content='{"embedding": [NaN, 1, 1, 1, 1, 1, 1, 1]}')
    assert nan.status_code == 422
    huge = client.post(url, headers=h, json={"embedding": [1e300] + [1.0] * 7})
    assert huge.status_code == 422 and huge.json()["detail"].startswith("embedding[0]: Input should be less")
    flat = client.post(url, headers=h, json={"embedding": [0.0] * 8})
    assert flat.status_code == 422 and flat.json()["detail"].startswith("embedding: Value error, expected at")
    malformed = client.post(url, headers={**h, "Content-Type": "application/json"}, content="{not json")
    assert malformed.status_code == 422 and "json" in malformed.text.lower()
    big = client.post(url, headers=h, json={"embedding": vec(1), "payload": {"b": "x" * 300_000}})
    assert big.status_code == 413 and "payload" in big.text
    extra = client.post(url, headers=h, json={"embedding": vec(1), "surprise": 1})
    assert extra.status_code == 422 and "surprise" in extra.text
    duplicate = client.post(url, headers=h, json={"embedding": vec(1), "id": "keep"})
    assert duplicate.status_code == 409 and "already in space" in duplicate.text
    empty_batch = client.post(url + "/batch", headers=h, json={"episodes": []})
    assert empty_batch.status_code == 422
    bad_k = client.post("/v1/spaces/alice/recall", headers=h, json={"cue": vec(0), "k": 0})
    assert bad_k.status_code == 422
    huge_k = client.post("/v1/spaces/alice/recall", headers=h, json={"cue": vec(0), "k": 10**30})
    assert huge_k.status_code == 422 and huge_k.json()["detail"].startswith("k: ")
    no_known = client.post("/v1/spaces/alice/recall", headers=h, json={"cue": vec(0), "known": [False] * 8})
    assert no_known.status_code == 422 and "known" in no_known.text
    assert client.get("/v1/spaces/alice/stats", headers=h).json()["episodes"] == 1


def test_numbers_of_a_body_are_read_exactly(served):
    """orjson reads the bodies, but would turn an integer beyond 64 bits into a float: such a
    body is read by the stdlib, so the payload comes back digit for digit."""
    client, keys = served
    h = {"X-API-Key": keys["alice"]}
    payload = {"big": 10**30 + 1, "negative": -(2**70), "i64": 2**63 - 1, "x": 0.1, "tiny": 5e-324}
    r = client.post("/v1/spaces/alice/episodes", headers=h, json={"embedding": vec(3), "payload": payload})
    assert r.status_code == 201
    got = client.get(f"/v1/spaces/alice/episodes/{r.json()['id']}", headers=h).json()["payload"]
    assert got == payload and type(got["big"]) is int


def test_a_query_parameter_a_route_does_not_take_is_refused_not_ignored(served):
    client, keys = served
    h = {"X-API-Key": keys["alice"]}
    client.post("/v1/spaces/alice/episodes", headers=h, json={"embedding": vec(0), "id": "e"})
    typo = client.get("/v1/spaces/alice/episodes/e?embeddings=true", headers=h)
    assert typo.status_code == 422 and typo.json()["detail"].startswith("embeddings: not a query parameter")
    assert client.get("/v1/spaces/alice/episodes/e?embedding=true", headers=h).json()["embedding"] is not None
    assert client.get("/v1/spaces/alice/stats?verbose=1", headers=h).status_code == 422
    assert client.post("/v1/spaces/alice/recall?k=3", headers=h, json={"cue": vec(0)}).status_code == 422


def test_a_batch_keeps_the_ids_and_timestamps_given_for_some_of_its_episodes(served):
    client, keys = served
    h = {"X-API-Key": keys["alice"]}
    r = client.post("/v1/spaces/alice/episodes/batch", headers=h, json={"episodes": [
        {"embedding": vec(0), "id": "named", "timestamp": 1000.0}, {"embedding": vec(1)}]})
    assert r.status_code == 201 and r.json()["ids"][0] == "named"
    assert client.get("/v1/spaces/alice/episodes/named", headers=h).json()["timestamp"] == 1000.0
    other = client.get(f"/v1/spaces/alice/episodes/{r.json()['ids'][1]}", headers=h).json()
    assert other["timestamp"] > 1e9


# ------------------------------------------------------------------ text

TEXT_DIM = 32
TURNS = [("Caroline", 1, "I went to a support group for transgender people yesterday", ["lgbtq"]),
         ("Melanie", 1, "I painted a lake at sunrise last week", ["art"]),
         ("Caroline", 2, "I am researching adoption agencies for my future family", ["family"]),
         ("Melanie", 2, "We went camping in the mountains with the kids", ["family"])]


@pytest.fixture
def texted(tmp_path):
    """A server with the offline embedder over a fresh space ``chat``."""
    path = tmp_path / "t"
    key = issue_key(path, "chat", dim=TEXT_DIM)
    with TestClient(create_app(path, embedder=HashingEmbedder(TEXT_DIM))) as client:
        yield client, {"X-API-Key": key}, path


def test_text_episodes_and_text_recall_round_trip(texted):
    client, h, _ = texted
    one = client.post("/v1/spaces/chat/episodes", headers=h, json={
        "text": TURNS[0][2], "who": TURNS[0][0], "session": TURNS[0][1], "tags": TURNS[0][3],
        "timestamp": 1000.0, "id": "t0"})
    assert one.status_code == 201 and one.json() == {"id": "t0"}
    batch = client.post("/v1/spaces/chat/episodes/batch", headers=h, json={"episodes": [
        {"text": text, "who": who, "session": session, "tags": tags, "timestamp": 1000.0 + i, "id": f"t{i}"}
        for i, (who, session, text, tags) in enumerate(TURNS) if i > 0]})
    assert batch.status_code == 201 and batch.json()["ids"] == ["t1", "t2", "t3"]
    got = client.get("/v1/spaces/chat/episodes/t2", headers=h).json()
    assert (got["text"], got["who"], got["session"], got["tags"]) == (TURNS[2][2], "Caroline", 2, ["family"])
    question = "what is Caroline researching about adoption agencies?"
    answer = client.post("/v1/spaces/chat/recall", headers=h, json={"text": question, "k": 2}).json()
    top = answer["episodes"][0]
    assert top["id"] == "t2" and top["text"] == TURNS[2][2] and top["who"] == "Caroline"
    assert top["session"] == 2 and top["timestamp"] == 1002.0 and top["tags"] == ["family"]
    assert answer["status"] in {"recalled", "insufficient_evidence"} and 0.0 <= answer["confidence"] <= 1.0
    # filters act inside the search: the best match among Melanie's turns, then a time window
    went = {"text": "I went to a support group", "k": 4}
    assert client.post("/v1/spaces/chat/recall", headers=h, json=went).json()["episodes"][0]["id"] == "t0"
    melanie = client.post("/v1/spaces/chat/recall", headers=h,
                          json={**went, "where": {"who": "Melanie"}}).json()
    assert {e["who"] for e in melanie["episodes"]} == {"Melanie"} and melanie["episodes"][0]["id"] == "t3"
    family = {"text": "family", "k": 4}
    tagged = client.post("/v1/spaces/chat/recall", headers=h,
                         json={**family, "where": {"tags": "family", "session": [2]}}).json()
    assert {e["id"] for e in tagged["episodes"]} == {"t2", "t3"}
    window = client.post("/v1/spaces/chat/recall", headers=h,
                         json={**family, "since": 1001.0, "until": 1002.0})
    assert {e["id"] for e in window.json()["episodes"]} == {"t1", "t2"}
    batch_recall = client.post("/v1/spaces/chat/recall/batch", headers=h, json={
        "texts": ["painted a lake at sunrise", "camping in the mountains"], "k": 1})
    assert [r["episodes"][0]["id"] for r in batch_recall.json()["results"]] == ["t1", "t3"]
    # a vector cue with the words beside it, as a client with its own embedder would send
    cue = HashingEmbedder(TEXT_DIM).embed(["painted a lake"])[0].tolist()
    mixed = client.post("/v1/spaces/chat/recall", headers=h, json={"cue": cue, "text": "painted a lake"})
    assert mixed.json()["episodes"][0]["id"] == "t1"


def test_a_refusal_still_returns_its_ranked_candidates(texted):
    client, h, path = texted
    client.post("/v1/spaces/chat/episodes/batch", headers=h, json={"episodes": [
        {"text": text, "who": who, "id": f"t{i}"} for i, (who, _, text, _) in enumerate(TURNS)]})
    with MemoryStore(path, space="chat", embedder=HashingEmbedder(TEXT_DIM)) as store:
        store.set_gate(GateModel((0.0,) * len(FEATURES), -20.0, calibrated=True))  # refuses everything
    with TestClient(create_app(path, embedder=HashingEmbedder(TEXT_DIM))) as fresh:
        answer = fresh.post("/v1/spaces/chat/recall", headers=h,
                            json={"text": "camping with the kids", "k": 3})
    body = answer.json()
    assert body["status"] == "insufficient_evidence" and body["decided_by"] == "gate"
    assert body["confidence"] < 1e-6
    assert len(body["episodes"]) == 3 and body["episodes"][0]["id"] == "t3"
    assert body["episodes"][0]["text"] == TURNS[3][2]


def test_bad_text_requests_are_422_naming_the_field_and_store_nothing(texted):
    client, h, _ = texted
    url = "/v1/spaces/chat"
    for route, body, field in [
        ("/episodes", {"text": ""}, "text"),
        ("/episodes", {"text": " \t\n"}, "text"),
        ("/episodes", {"text": "x" * 40_000}, "text"),
        ("/episodes", {"who": "Ada"}, "embedding"),
        ("/episodes", {"text": "hi", "who": ""}, "who"),
        ("/episodes", {"text": "hi", "session": 2**70}, "session"),
        ("/episodes", {"text": "hi", "session": True}, "session"),
        ("/episodes", {"text": "hi\ud800"}, "text"),
        ("/episodes/batch", {"episodes": [{"text": "a"}, {"text": ""}]}, "episodes[1].text"),
        ("/episodes/batch", {"episodes": [{"text": "a"}, {"embedding": [1.0] * TEXT_DIM}]},
         "episodes[1].embedding"),
        ("/recall", {"text": ""}, "text"),
        ("/recall", {"text": "x" * 40_000}, "text"),
        ("/recall", {"text": "hi", "where": {"speaker": "Ada"}}, "where.speaker"),
        ("/recall", {"text": "hi", "where": {"who": 3}}, "where.who"),
        ("/recall", {"text": "hi", "where": {"session": [1.5]}}, "where.session"),
        ("/recall", {"text": "hi", "where": {"kind": "dream"}}, "where.kind"),
        ("/recall", {"text": "hi", "where": {"who": []}}, "where.who"),
        ("/recall", {"text": "hi", "since": "yesterday"}, "since"),
        ("/recall", {"text": "hi", "known": [True] * TEXT_DIM}, "known"),
        ("/recall", {"k": 3}, "cue"),
        ("/recall/batch", {"texts": ["a", ""]}, "texts[1]"),
        ("/recall/batch", {"texts": ["a"], "cues": [[1.0] * TEXT_DIM] * 2}, "texts"),
    ]:
        # json.dumps escapes the lone surrogate as \ud800, as a client's JSON would carry it
        r = client.post(url + route, headers={**h, "Content-Type": "application/json"},
                        content=json.dumps(body))
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"].startswith(f"{field}: "), (body, r.text)
    assert client.get(url + "/stats", headers=h).json()["episodes"] == 0


def test_text_needs_an_embedder_and_the_server_refuses_a_mismatched_one(tmp_path):
    path = tmp_path / "v"
    key = issue_key(path, "plain", dim=TEXT_DIM)
    h = {"X-API-Key": key}
    url = "/v1/spaces/plain"
    refused = "text: space 'plain' has no embedder"
    with TestClient(create_app(path)) as client:  # no embedder: text only beside an embedding
        alone = client.post(f"{url}/episodes", headers=h, json={"text": "hello there"})
        assert alone.status_code == 422 and alone.json()["detail"].startswith(refused)
        vector = [1.0] + [0.0] * (TEXT_DIM - 1)
        beside = client.post(f"{url}/episodes", headers=h, json={"embedding": vector, "text": "hello"})
        assert beside.status_code == 201
        assert client.get(f"{url}/episodes/{beside.json()['id']}", headers=h).json()["text"] == "hello"
        cue = client.post(f"{url}/recall", headers=h, json={"text": "hello"})
        assert cue.status_code == 422 and cue.json()["detail"].startswith(refused)
    with pytest.raises(ValueError, match=r"^embedder: hashing-ngrams-v1-16 .* makes 16-dimensional vectors, "
                                         r"the store at .* holds 32-dimensional ones"):
        create_app(path, embedder=HashingEmbedder(16))
    with pytest.raises(TypeError, match=r"^embedder: expected a Embedder"):
        create_app(path, embedder="hashing")


def test_a_space_made_with_the_offline_embedder_takes_text_without_one(tmp_path):
    path = tmp_path / "h"
    key = issue_key(path, "chat", dim=TEXT_DIM)
    with MemoryStore(path, space="chat", embedder=HashingEmbedder(TEXT_DIM)) as store:
        store.add(text="the blue bicycle is in the garage", id="bike")
    with TestClient(create_app(path)) as client:
        r = client.post("/v1/spaces/chat/recall", headers={"X-API-Key": key},
                        json={"text": "where is the bicycle"})
    assert r.status_code == 200 and r.json()["episodes"][0]["id"] == "bike"


def test_cli_add_recall_delete_sleep_stats_export(tmp_path, capsys):
    path = str(tmp_path / "s")
    lines = [json.dumps({"embedding": vec(i), "payload": {"i": i}, "id": f"e{i}"}) for i in range(12)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines))
    common = ["--path", path, "--space", "cli", "--dim", str(DIM)]
    assert main(["store", "add", *common, "--file", str(tmp_path / "in.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == 12
    status = main(["store", "recall", *common, "--cue", json.dumps(vec(4)), "-k", "1"])
    answer = json.loads(capsys.readouterr().out)
    assert (status == 0) == (answer["status"] == "recalled")
    assert main(["store", "delete", *common, "e0", "--compact"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == ["e0"]
    assert main(["store", "sleep", *common, "--walks", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["recent"] == 11
    assert main(["store", "stats", *common]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 11
    assert main(["store", "export", *common, "--out", str(tmp_path / "out.jsonl")]) == 0
    capsys.readouterr()
    exported = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert {x["id"] for x in exported if "id" in x} >= {f"e{i}" for i in range(1, 12)}
    assert main(["store", "add", *common, "--embedding", "[1, 2]"]) == 2
    assert "embeddings: expected shape (n, 8)" in capsys.readouterr().err
    assert main(["store", "recall", *common, "--cue", "not json"]) == 2
    with MemoryStore(path, space="cli") as store:
        assert len(store) == 11 and store.check() == []


@pytest.mark.parametrize("local", [True, False], ids=["on-the-loop", "in-the-thread-pool"])
def test_concurrent_recalls_are_answered_in_batches_with_the_stores_own_answers(tmp_path, monkeypatch, local):
    """Recalls that arrive while one runs are answered together by one recall_batch; each gets
    the answer the store gives it alone, and a bad cue among them gets its own error only. A
    local backend's batches run on the event loop's thread, a networked one's in the pool."""
    import asyncio
    import threading

    import httpx

    from engram.store import server
    from engram.store.backends.sqlite import SQLiteBackend

    path = tmp_path / "s"
    key = issue_key(path, "alice", dim=DIM)
    vectors = np.random.default_rng(0).standard_normal((300, DIM)).astype(np.float32)
    with MemoryStore(path, space="alice") as store:
        store.add_batch(vectors, ids=[f"e{i}" for i in range(300)])
    cues = [vec(1000 + i) for i in range(24)]
    known = [[True] * 4 + [False] * 4] * 3 + [[False] * 4 + [True] * 4]
    masked = [vec(2000 + i) for i in range(3)] + [[1.0] * 4 + [0.0] * 4]  # the last: nothing known
    with MemoryStore(path, space="alice") as store:
        alone = [[r.episode.id for r in store.recall(np.asarray(c), k=3).episodes] for c in cues]
        alone += [[r.episode.id for r in store.recall(np.asarray(c), k=3, known=np.asarray(m)).episodes]
                  for c, m in zip(masked[:3], known[:3], strict=True)]
    sizes: list[int] = []
    threads: set[int] = set()
    gate = threading.Event()
    together = server.RecallBatcher._together

    def recorded(self, requests):
        sizes.append(len(requests))
        threads.add(threading.get_ident())
        if not local:
            gate.wait(5)  # hold the first batch until every request has queued behind it
        return together(self, requests)

    monkeypatch.setattr(server.RecallBatcher, "_together", recorded)
    monkeypatch.setattr(SQLiteBackend, "local", local)
    app = create_app(path)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            h = {"X-API-Key": key}
            bodies = [{"cue": c, "k": 3} for c in cues] + [
                {"cue": c, "known": m, "k": 3} for c, m in zip(masked, known, strict=True)]
            sent = [asyncio.ensure_future(client.post("/v1/spaces/alice/recall", headers=h, json=b))
                    for b in bodies]
            while len(sizes) < 1:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            gate.set()
            return await asyncio.gather(*sent)

    answers = asyncio.run(run())
    assert [[e["id"] for e in r.json()["episodes"]] for r in answers[:-1]] == alone
    assert answers[-1].status_code == 422, answers[-1].text
    assert answers[-1].json()["detail"].startswith("cue: expected the known dimensions")  # its own error
    assert max(sizes) > 1 and sum(sizes) == len(answers)  # every request went through a batch
    assert (threads == {threading.get_ident()}) is local  # the loop's own thread, or the pool's


def test_several_server_processes_share_one_store(tmp_path):
    """``engram store serve --workers 2``: two processes on one port and one store; what any
    connection writes, every other connection (whichever process it reaches) reads back."""
    import socket
    import subprocess
    import sys
    import threading
    import time

    import httpx
    import psutil

    path = tmp_path / "s"
    key = issue_key(path, "chat", dim=DIM)
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "engram.cli", "store", "serve", "--path", str(path), "--port", str(port),
         "--workers", "2"], stdout=log, stderr=subprocess.STDOUT)
    base, h = f"http://127.0.0.1:{port}", {"X-API-Key": key}

    def workers() -> list[psutil.Process]:  # uvicorn's worker processes (not multiprocessing's tracker)
        children = psutil.Process(server.pid).children()
        return [p for p in children if "resource_tracker" not in " ".join(p.cmdline())]

    try:
        deadline = time.monotonic() + 300  # each process imports torch: slow on a loaded machine
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200 and len(workers()) == 2:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the two server processes did not answer within 300 s"
            time.sleep(0.2)
        failures: list[str] = []

        def writer(t: int) -> None:
            for i in range(5):
                with httpx.Client(base_url=base, headers=h) as client:  # a new connection each time
                    r = client.post("/v1/spaces/chat/episodes", json={"embedding": vec(100 * t + i),
                                                                      "id": f"t{t}-{i}"})
                    if r.status_code != 201:
                        failures.append(r.text)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        for t in range(6):
            with httpx.Client(base_url=base, headers=h) as client:
                assert client.get("/v1/spaces/chat/stats").json()["episodes"] == 30
                found = client.post("/v1/spaces/chat/recall", json={"cue": vec(100 * t + 4), "k": 1})
                assert found.json()["episodes"][0]["id"] == f"t{t}-4"
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    with MemoryStore(path, space="chat") as store:
        ids = sorted(e.id for e in store.iter_episodes())
    assert ids == sorted(f"t{t}-{i}" for t in range(6) for i in range(5))
