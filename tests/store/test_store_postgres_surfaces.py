"""The command line and the HTTP server on a PostgreSQL store: ``--path postgresql://…`` and
``create_app(url)`` serve the same database every process sees; a URL with no store in it is
refused by the commands that only read, and the message hides the password."""

from __future__ import annotations

import json

import numpy as np
from fastapi.testclient import TestClient

from engram.cli import main
from engram.store import MemoryStore
from engram.store.backends import store_exists
from engram.store.server import create_app, issue_key

DIM = 8


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_the_cli_adds_and_recalls_text_in_a_postgres_store(postgres_url, capsys):
    common = ["--path", postgres_url, "--space", "chat"]
    for i, text in enumerate(["I painted a lake at sunrise", "We went camping in the mountains"]):
        embedder = ["--embedder", "hashing", "--dim", "64"] if i == 0 else []
        status, out, err = run(capsys, "store", "add", *common, *embedder, "--text", text)
        assert status == 0, err
        assert json.loads(out)["added"] == 1
    status, out, _ = run(capsys, "store", "recall", *common, "--text", "camping in the mountains", "--k", "1")
    assert json.loads(out)["episodes"][0]["text"] == "We went camping in the mountains"
    with MemoryStore(postgres_url, space="chat") as store:  # the same rows any process opens
        assert len(store) == 2


def test_a_database_without_a_store_is_refused_by_reading_commands(postgres_url, capsys):
    assert not store_exists(postgres_url)
    status, _, err = run(capsys, "store", "stats", "--path", postgres_url)
    assert status == 2 and "no Engram store at" in err
    assert not store_exists(postgres_url), "a read-only command created the store"


def test_an_unreachable_server_is_one_line_without_the_password(capsys):
    status, _, err = run(capsys, "store", "stats", "--path", "postgresql://engram:hunter2@127.0.0.1:1/none")
    assert status == 1 and "cannot connect to PostgreSQL" in err
    assert "hunter2" not in err and len(err.strip().splitlines()) == 1


def test_the_http_server_serves_a_postgres_store(postgres_url):
    key = issue_key(postgres_url, "alice", dim=DIM)
    h = {"X-API-Key": key}
    vectors = np.random.default_rng(0).standard_normal((5, DIM)).round(4).tolist()
    with TestClient(create_app(postgres_url)) as client:
        episodes = [{"embedding": v, "payload": {"i": i}} for i, v in enumerate(vectors)]
        r = client.post("/v1/spaces/alice/episodes/batch", headers=h, json={"episodes": episodes})
        assert r.status_code == 201, r.text
        r = client.post("/v1/spaces/alice/recall", headers=h, json={"cue": vectors[3], "k": 1})
        assert r.status_code == 200, r.text
        assert r.json()["episodes"][0]["payload"] == {"i": 3}
        assert client.post("/v1/spaces/alice/recall", headers={"X-API-Key": "engram_wrong"},
                           json={"cue": vectors[3]}).status_code == 403
    with MemoryStore(postgres_url, space="alice") as store:  # written through, not kept in the server
        assert len(store) == 5


def test_serve_refuses_a_database_without_a_store(postgres_url, capsys):
    status, _, err = run(capsys, "store", "serve", "--path", postgres_url)
    assert status == 2 and "no Engram store at" in err
