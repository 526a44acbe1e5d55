"""The HTTP API through FastAPI's TestClient, and the CLI: keys, validation, isolation, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engram.cli import main
from engram.store import MemoryStore
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
    no_known = client.post("/v1/spaces/alice/recall", headers=h, json={"cue": vec(0), "known": [False] * 8})
    assert no_known.status_code == 422 and "known" in no_known.text
    assert client.get("/v1/spaces/alice/stats", headers=h).json()["episodes"] == 1


def test_a_batch_keeps_the_ids_and_timestamps_given_for_some_of_its_episodes(served):
    client, keys = served
    h = {"X-API-Key": keys["alice"]}
    r = client.post("/v1/spaces/alice/episodes/batch", headers=h, json={"episodes": [
        {"embedding": vec(0), "id": "named", "timestamp": 1000.0}, {"embedding": vec(1)}]})
    assert r.status_code == 201 and r.json()["ids"][0] == "named"
    assert client.get("/v1/spaces/alice/episodes/named", headers=h).json()["timestamp"] == 1000.0
    other = client.get(f"/v1/spaces/alice/episodes/{r.json()['ids'][1]}", headers=h).json()
    assert other["timestamp"] > 1e9


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
    assert main(["sleep", *common, "--walks", "4"]) == 0
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
