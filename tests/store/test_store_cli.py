"""The ``engram store`` command line with text: add and recall by text, filters, embedders by
name or folder, ``check`` and ``repair``, ``serve --embedder``; bad input is one line, exit 2."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engram.cli import main
from engram.store import HashingEmbedder, MemoryStore
from engram.store.server import issue_key

DIM = 32


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def chat(tmp_path, capsys):
    """A store whose space ``chat`` was made with ``--embedder hashing`` and holds four turns."""
    path = str(tmp_path / "s")
    turns = [("Caroline", "1", "I went to a support group yesterday", "lgbtq"),
             ("Melanie", "1", "I painted a lake at sunrise", "art"),
             ("Caroline", "2", "I am researching adoption agencies", "family"),
             ("Melanie", "2", "We went camping in the mountains", "family")]
    for i, (who, session, text, tag) in enumerate(turns):
        embedder = ["--embedder", "hashing", "--dim", str(DIM)] if i == 0 else []  # then recorded
        status, out, err = run(capsys, "store", "add", "--path", path, "--space", "chat", *embedder,
                               "--text", text, "--who", who, "--session", session, "--tags", tag, "x")
        assert status == 0, err
        assert json.loads(out)["added"] == 1
    return path


def test_add_and_recall_by_text_with_filters(chat, capsys):
    common = ["--path", chat, "--space", "chat"]
    status, out, _ = run(capsys, "store", "recall", *common, "--text", "what is Caroline researching?",
                         "--k", "2")
    answer = json.loads(out)
    assert (status == 0) == (answer["status"] == "recalled")
    assert answer["holds"] is None  # the hashing embedder's prior gate has one part
    top = answer["episodes"][0]
    assert (top["text"], top["who"], top["session"]) == ("I am researching adoption agencies", "Caroline", 2)
    assert top["tags"] == ["family", "x"] and top["timestamp"] > 1e9
    _, out, _ = run(capsys, "store", "recall", *common, "--text", "I went to a support group",
                    "--where", "who=Melanie")
    assert [e["who"] for e in json.loads(out)["episodes"]] == ["Melanie", "Melanie"]
    assert json.loads(out)["episodes"][0]["text"] == "We went camping in the mountains"
    _, out, _ = run(capsys, "store", "recall", *common, "--text", "went", "--where", "session=1",
                    "--where", "tags=lgbtq")
    assert [e["text"] for e in json.loads(out)["episodes"]] == ["I went to a support group yesterday"]
    _, out, _ = run(capsys, "store", "recall", *common, "--text", "went", "--until", "1000")
    assert json.loads(out)["episodes"] == []  # every turn was stored now, long after 1000


def test_add_text_from_json_lines(tmp_path, capsys):
    path = str(tmp_path / "s")
    lines = [json.dumps({"text": f"turn {i} about the garden", "who": "Ada", "session": i // 2,
                         "id": f"t{i}", "timestamp": 1000.0 + i}) for i in range(4)]
    (tmp_path / "turns.jsonl").write_text("\n".join(lines))
    status, out, err = run(capsys, "store", "add", "--path", path, "--embedder", "hashing", "--dim", str(DIM),
                           "--file", str(tmp_path / "turns.jsonl"))
    assert status == 0 and json.loads(out)["ids"] == ["t0", "t1", "t2", "t3"], err
    with MemoryStore(path) as store:
        episode = store.get("t3")
        assert (episode.text, episode.who, episode.session, episode.timestamp) == (
            "turn 3 about the garden", "Ada", 1, 1003.0)


def test_bad_input_is_one_clear_line_and_exit_2(chat, tmp_path, capsys):
    common = ["--path", chat, "--space", "chat"]
    vectors = str(tmp_path / "v")
    made = run(capsys, "store", "add", "--path", vectors, "--dim", "8", "--embedding", json.dumps([1.0] * 8))
    assert made[0] == 0
    no_embedder = "--embedder: space 'default' has no embedder"
    (tmp_path / "mixed.jsonl").write_text('{"text": "a"}\n{"embedding": [1, 0, 0, 0, 0, 0, 0, 0]}\n')
    for argv, start in [
        (["store", "add", *common, "--text", "  "], "--text: expected some text"),
        (["store", "add", *common, "--text", "x" * 40_000], "texts: entry 0 has 40000 characters"),
        (["store", "add", "--path", vectors, "--text", "hello"], no_embedder),
        (["store", "add", "--path", vectors, "--file", str(tmp_path / "mixed.jsonl")],
         "record 2: expected every record to have 'embedding' or none"),
        (["store", "recall", *common], "recall: expected --text or --cue"),
        (["store", "recall", *common, "--text", ""], "--text: expected some text"),
        (["store", "recall", *common, "--text", "hi", "--where", "who"], "--where: expected FIELD=VALUE"),
        (["store", "recall", *common, "--text", "hi", "--where", "speaker=Ada"],
         "where: unknown field 'speaker'"),
        (["store", "recall", *common, "--text", "hi", "--known", "[true]"], "--known: masks the dimensions"),
        (["store", "recall", *common, "--cue", '"hello"'], "--cue: expected a JSON list of numbers"),
        (["store", "recall", "--path", vectors, "--text", "hi"], no_embedder),
        (["store", "recall", *common, "--text", "hi", "--embedder", str(tmp_path / "no-model")],
         "--embedder: no model folder at"),
        (["store", "recall", *common, "--text", "hi", "--embedder", "hashing", "--dim", "8"],
         "dim: store"),
    ]:
        status, out, err = run(capsys, *argv)
        assert status == 2 and out == "", (argv, out, err)
        line = err.strip()
        assert "\n" not in line and line.startswith("engram store: error: ") and start in line, (argv, err)
    with MemoryStore(chat, space="chat") as store:
        assert len(store) == 4


def test_check_and_repair_a_damaged_space(tmp_path, capsys):
    path = tmp_path / "s"
    with MemoryStore(path, space="s", dim=8) as store:
        store.add_batch(np.eye(8, dtype=np.float32)[:6] + 0.1, ids=[f"e{i}" for i in range(6)])
    (vectors,) = (path / "vectors").glob("s.*.f32")
    os.truncate(vectors, vectors.stat().st_size - 10)  # e5's vector is cut short
    common = ["--path", str(path), "--space", "s"]
    with pytest.warns(RuntimeWarning, match="e5"):  # opening names the damaged row too
        status, out, _ = run(capsys, "store", "check", *common)
    assert status == 1 and json.loads(out)["problems"] == ["e5: slot 5 is beyond the vector file (5 rows)"]
    with pytest.warns(RuntimeWarning, match="e5"):
        status, out, _ = run(capsys, "store", "repair", *common)
    assert status == 0 and json.loads(out) == {"space": "s", "removed": ["e5"], "problems": []}
    status, out, _ = run(capsys, "store", "check", *common)
    assert status == 0 and json.loads(out)["problems"] == []


def test_repair_reloads_the_index_of_the_open_store(tmp_path):
    path = tmp_path / "s"
    with MemoryStore(path, space="s", dim=8) as store:
        store.add_batch(np.eye(8, dtype=np.float32)[:6] + 0.1, ids=[f"e{i}" for i in range(6)])
    vectors = next((path / "vectors").glob("s.*.f32"))
    data = bytearray(vectors.read_bytes())
    data[2 * 8 * 4 + 1] ^= 0x40  # one bit of e2's vector: it fails its CRC
    vectors.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="e2"), MemoryStore(path, space="s") as store:
        assert store.check() == ["e2: vector at slot 2 fails its CRC"]
        assert store.repair() == ["e2"]
        assert store.check() == [] and len(store) == 5 and "e2" not in store
        store.add(np.eye(8)[2] + 0.1, id="again")  # the repaired space takes writes and finds them
        assert store.recall(np.eye(8)[2] + 0.1, k=1).episodes[0].episode.id == "again"


def test_serve_takes_an_embedder(tmp_path, monkeypatch, capsys):
    import uvicorn

    path = tmp_path / "s"
    key = issue_key(path, "chat", dim=DIM)
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(app=app, **options))
    assert main(["store", "serve", "--path", str(path), "--embedder", "hashing", "--port", "8123"]) == 0
    assert served["port"] == 8123
    with TestClient(served["app"]) as client:
        h = {"X-API-Key": key}
        added = client.post("/v1/spaces/chat/episodes", headers=h,
                            json={"text": "the keys are under the mat"})
        assert added.status_code == 201, added.text
        found = client.post("/v1/spaces/chat/recall", headers=h, json={"text": "where are the keys"})
        assert found.json()["episodes"][0]["text"] == "the keys are under the mat"
    with MemoryStore(path, space="chat") as store:
        assert store.embedder is not None and store.embedder.name == HashingEmbedder(DIM).name
    assert main(["store", "serve", "--path", str(path), "--embedder", str(tmp_path / "none")]) == 2
    assert "--embedder: no model folder at" in capsys.readouterr().err
    assert main(["store", "serve", "--path", str(path), "--workers", "0"]) == 2
    assert "--workers: expected a positive number of processes, got 0" in capsys.readouterr().err


def test_locomo_turns_by_model_folder(tmp_path, data_dir, capsys):
    model = data_dir / "models" / "all-MiniLM-L6-v2"
    if not model.is_dir():
        pytest.skip(f"{model} is absent")
    conversation = json.loads((data_dir / "locomo" / "conv-26.json").read_text())
    turns = conversation["session_1"][:12]
    (tmp_path / "turns.jsonl").write_text("\n".join(
        json.dumps({"text": t["text"], "who": t["speaker"], "session": 1, "id": t["dia_id"]}) for t in turns))
    common = ["--path", str(tmp_path / "s"), "--space", "conv"]
    status, out, err = run(capsys, "store", "add", *common, "--embedder", str(model),
                           "--file", str(tmp_path / "turns.jsonl"))
    assert status == 0 and json.loads(out)["added"] == 12, err
    question = next(q for q in conversation["qa"] if q["evidence"] == ["D1:3"])
    _, out, _ = run(capsys, "store", "recall", *common, "--embedder", str(model), "--text",
                    question["question"], "-k", "3")
    assert "D1:3" in [e["id"] for e in json.loads(out)["episodes"]]
    status, _, err = run(capsys, "store", "recall", *common, "--text", question["question"])
    assert status == 2 and "made with sentence-transformers/all-MiniLM-L6-v2" in err
    status, _, err = run(capsys, "store", "recall", *common, "--embedder", "hashing", "--text", "hi")
    assert status == 2 and "embedder: space 'conv' was made with sentence-transformers" in err


def test_a_store_that_cannot_be_used_is_one_line_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "s"
    with MemoryStore(path, space="s", dim=8) as store:
        store.add_batch(np.eye(8, dtype=np.float32)[:6] + 0.1, ids=[f"e{i}" for i in range(6)])
    (vectors,) = (path / "vectors").glob("s.*.f32")
    os.truncate(vectors, vectors.stat().st_size - 10)
    with pytest.warns(RuntimeWarning, match="e5"):
        status, _, err = run(capsys, "store", "export", "--path", str(path), "--space", "s",
                             "--out", str(tmp_path / "out.jsonl"))
    assert status == 1 and err.count("\n") == 1 and "e5" in err and "repair" in err


def test_serving_and_sleep_live_under_store_only():
    from engram.cli import build_parser

    parser = build_parser()
    served = parser.parse_args(
        ["store", "mcp", "memories", "--space", "agent", "--transport", "streamable-http"]
    )
    assert (served.path, served.space, served.transport) == ("memories", "agent", "streamable-http")
    assert parser.parse_args(["store", "serve", "--port", "9"]).port == 9
    for gone in (["sleep"], ["serve"]):  # the old top-level duplicates are no longer commands
        with pytest.raises(SystemExit):
            parser.parse_args(gone)


def test_the_workers_listener_gives_connections_no_delay():
    """uvicorn binds --workers' socket with protocol 0, so asyncio left Nagle on for every
    connection (~40 ms per keep-alive request); the listener serve hands its workers says TCP."""
    import asyncio
    import socket

    import uvicorn

    from engram.store.cli import tcp_listener

    def nodelay_of_accepted(listener: socket.socket) -> int:
        seen: list[int] = []

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP,
                                                                          socket.TCP_NODELAY))
                transport.close()

        async def run() -> None:
            server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
            port = listener.getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            while not seen:
                await asyncio.sleep(0.01)
            writer.close()
            server.close()

        asyncio.run(asyncio.wait_for(run(), 30))
        return seen[0]

    config = uvicorn.Config("engram.store.cli:serving_app", factory=True, host="127.0.0.1", port=0)
    assert nodelay_of_accepted(config.bind_socket()) == 0  # uvicorn's own: the defect
    assert nodelay_of_accepted(tcp_listener(config)) != 0
