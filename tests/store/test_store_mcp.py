"""The MCP server through the mcp package's own client: in process, and over stdio as a client
starts it. Tools, round trips, refusals with their candidates, and named errors for bad input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from engram.store import GateModel, HashingEmbedder, MemoryStore, RecallConfig
from engram.store.mcp import create_server, load_embedder, main, serve
from engram.store.pipeline import FEATURES

TURNS = [
    {"text": "I adopted a puppy called Rex last week", "who": "Ada", "session": 1, "tags": ["pets"]},
    {"text": "Rex chewed my running shoes this morning", "who": "Ada", "session": 2, "tags": ["pets"]},
    {"text": "I am flying to Lisbon for a conference in May", "who": "Bob", "session": 2, "tags": ["travel"]},
    {"text": "The trams in Lisbon are yellow and very old", "who": "Bob", "session": 3, "tags": ["travel"]},
]


def text_store(path: Path, config: RecallConfig | None = None) -> MemoryStore:
    return MemoryStore(path, space="chat", embedder=HashingEmbedder(64), config=config)


def talk(store: MemoryStore, scenario: Callable[[Client], Awaitable[Any]]) -> Any:
    """Run ``scenario`` with an mcp client connected to a server over ``store``."""
    async def run() -> Any:
        async with Client(create_server(store)) as client:
            return await scenario(client)
    return anyio.run(run)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured answer; a tool error fails the test with its message."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def error(client: Client, tool: str, **arguments: Any) -> str:
    """The message of a tool error (the call must fail)."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) succeeded: {result.structured_content}"
    return result.content[0].text


def test_the_server_lists_the_five_tools_with_their_arguments(tmp_path):
    async def scenario(client: Client) -> dict[str, Any]:
        return {tool.name: tool for tool in (await client.list_tools()).tools}

    with text_store(tmp_path / "s") as store:
        tools = talk(store, scenario)
    assert set(tools) == {"remember", "recall", "forget", "sleep", "stats"}
    assert all(tool.description for tool in tools.values())
    assert {"query", "vector", "k", "where", "since", "until"} <= set(
        tools["recall"].input_schema["properties"])
    assert {"text", "vector", "who", "session", "tags", "timestamp"} <= set(
        tools["remember"].input_schema["properties"])
    assert tools["forget"].input_schema["required"] == ["ids"]
    assert tools["recall"].annotations.read_only_hint and tools["forget"].annotations.destructive_hint
    assert "refused" in tools["recall"].output_schema["properties"]


def test_what_is_remembered_is_recalled_with_its_fields_and_filters(tmp_path):
    async def scenario(client: Client) -> tuple[list[str], dict[str, Any], dict[str, Any], dict[str, Any]]:
        ids = [(await call(client, "remember", **turn))["id"] for turn in TURNS]
        answer = await call(client, "recall", query="What is the name of Ada's puppy?", k=3)
        bobs = await call(client, "recall", query="Rex the puppy", k=4, where={"who": "Bob"})
        stats = await call(client, "stats")
        return ids, answer, bobs, stats

    with text_store(tmp_path / "s") as store:
        ids, answer, bobs, stats = talk(store, scenario)
        assert store.get(ids[0]).text == TURNS[0]["text"]
    assert answer["status"] == "recalled" and answer["refused"] is False
    top = answer["candidates"][0]
    assert top["id"] == ids[0] and top["rank"] == 1
    assert {k: top[k] for k in ("text", "who", "session", "tags")} == TURNS[0]
    assert len(answer["candidates"]) == 3 and 0.0 <= answer["confidence"] <= 1.0
    assert {c["who"] for c in bobs["candidates"]} == {"Bob"} and len(bobs["candidates"]) == 2
    assert stats["episodes"] == 4 and stats["space"] == "chat"


def test_a_refusal_is_flagged_and_carries_its_candidates(tmp_path):
    async def scenario(client: Client) -> dict[str, Any]:
        for turn in TURNS:
            await call(client, "remember", **turn)
        return await call(client, "recall", query="What breed is Ada's puppy?", k=3)

    with text_store(tmp_path / "s", RecallConfig(threshold=1.0)) as store:
        refusal = talk(store, scenario)
    assert refusal["status"] == "insufficient_evidence" and refusal["refused"] is True
    assert refusal["decided_by"] == "gate" and refusal["note"].startswith("insufficient evidence")
    assert len(refusal["candidates"]) == 3 and refusal["candidates"][0]["text"]


def test_an_empty_memory_refuses_with_no_candidates_and_says_why(tmp_path):
    async def scenario(client: Client) -> dict[str, Any]:
        return await call(client, "recall", query="anything at all")

    with text_store(tmp_path / "s") as store:
        empty = talk(store, scenario)
    assert empty["refused"] is True and empty["candidates"] == []
    assert "holds no episodes" in empty["note"]


def test_bad_arguments_are_tool_errors_that_name_the_argument(tmp_path):
    async def scenario(client: Client) -> list[str]:
        await call(client, "remember", **TURNS[0])
        return [
            await error(client, "recall", query="dog", k=0),
            await error(client, "recall", vector=[1.0, 2.0]),
            await error(client, "recall"),
            await error(client, "recall", query="dog", where={"speaker": "Ada"}),
            await error(client, "recall", query="dog", k="many"),
            await error(client, "remember", text="   "),
            await error(client, "remember"),
            await error(client, "remember", text="x", id="a/b"),
            await error(client, "remember", vector=[0.0] * 64),
            await error(client, "sleep", walks=-1),
            await error(client, "forget", ids="not-a-list"),
        ]

    with text_store(tmp_path / "s") as store:
        messages = talk(store, scenario)
        assert len(store) == 1, "nothing refused was stored"
    expected = ["k: expected a positive integer, got 0", "vector: expected shape (64,), got (2,)",
                "query: expected the query text or vector=", "where: unknown field 'speaker'", "k\n",
                "text: entry 0 is empty", "text: expected the episode's text or vector=", "id: ",
                "vector: expected a norm", "walks: expected an integer ≥ 0", "ids\n"]
    for message, wanted in zip(messages, expected, strict=True):
        assert wanted in message, (wanted, message)


def test_text_without_an_embedder_asks_for_one_and_vectors_still_work(tmp_path):
    async def scenario(client: Client) -> tuple[str, str, dict[str, Any]]:
        no_text = await error(client, "remember", text="I adopted a puppy")
        no_query = await error(client, "recall", query="puppy?")
        eid = (await call(client, "remember", vector=[1.0, 0.0, 0.0, 0.0], text="a note", tags=["v"]))["id"]
        found = await call(client, "recall", vector=[1.0, 0.0, 0.0, 0.0], query="note", k=1)
        assert found["candidates"][0]["id"] == eid
        return no_text, no_query, found["candidates"][0]

    with MemoryStore(tmp_path / "s", space="vectors", dim=4) as store:
        no_text, no_query, top = talk(store, scenario)
    assert no_text.endswith("text: this server has no embedder (start it with --embedder hashing or a "
                            "sentence-transformers model), so give vector= instead")
    assert "query: this server has no embedder" in no_query
    assert top["text"] == "a note" and top["tags"] == ["v"]


def test_forget_deletes_for_good_and_sleep_consolidates(tmp_path):
    async def scenario(client: Client) -> tuple[dict[str, Any], ...]:
        ids = [(await call(client, "remember", **turn))["id"] for turn in TURNS]
        forgotten = await call(client, "forget", ids=[ids[0], "never-stored"], compact=True)
        after = await call(client, "recall", query="Ada adopted a puppy called Rex", k=4)
        slept = await call(client, "sleep", walks=4, seed=1)
        return forgotten, after, slept, await call(client, "stats")

    with text_store(tmp_path / "s") as store:
        forgotten, after, slept, stats = talk(store, scenario)
        assert store.check() == []
    assert forgotten["deleted"] and forgotten["missing"] == ["never-stored"] and forgotten["compacted"]
    assert forgotten["deleted"][0] not in {c["id"] for c in after["candidates"]}
    assert len(after["candidates"]) == 3
    assert slept["number"] == 1 and slept["replayed"] == 3
    assert stats["episodes"] == 3 and stats["sleeps"] == 1


def test_load_embedder_reads_the_command_line_names():
    assert load_embedder(None) is None
    assert load_embedder("hashing").dim == HashingEmbedder().dim
    assert load_embedder("hashing:32").dim == 32
    for bad in ("hashing:wide", "  "):
        with pytest.raises(ValueError, match=r"^embedder: expected"):
            load_embedder(bad)


def test_the_command_line_refuses_a_bad_embedder_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / "s"), "--embedder", "hashing:wide"])
    assert exited.value.code == 2
    assert "embedder: expected hashing:DIM with an integer DIM, got 'hashing:wide'" in capsys.readouterr().err


def test_serve_refuses_an_unknown_transport_before_opening_anything(tmp_path):
    with pytest.raises(ValueError, match=r"^transport: expected 'stdio' or 'streamable-http', got 'sse'"):
        serve(tmp_path / "s", transport="sse")
    assert not (tmp_path / "s").exists()


def test_engram_mcp_is_a_console_script_of_main():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python ≥ 3.11")
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["engram-mcp"] == "engram.store.mcp:main"
    assert "mcp" in project["project"]["optional-dependencies"]


def _server_command(path: Path, *options: str) -> tuple[list[str], dict[str, str]]:
    """``engram-mcp`` as a fresh process runs it (this checkout's source first on the path)."""
    source = str(Path(__file__).parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return ["-m", "engram.store.mcp", str(path), "--space", "chat", "--embedder", "hashing:64", *options], env


async def _remember_then_recall(client: Client) -> tuple[set[str], dict[str, Any]]:
    names = {tool.name for tool in (await client.list_tools()).tools}
    eid = (await call(client, "remember", **TURNS[0]))["id"]
    answer = await call(client, "recall", query="Ada's puppy", k=1)
    assert answer["candidates"][0]["id"] == eid
    return names, answer


def _check_served(path: Path, names: set[str], answer: dict[str, Any]) -> None:
    assert names == {"remember", "recall", "forget", "sleep", "stats"}
    assert answer["candidates"][0]["text"] == TURNS[0]["text"]
    with MemoryStore(path, space="chat", embedder=HashingEmbedder(64)) as store:
        assert len(store) == 1, "what the server acknowledged is in the store"


def test_a_client_drives_the_server_over_stdio(tmp_path):
    args, env = _server_command(tmp_path / "s")

    async def run() -> tuple[set[str], dict[str, Any]]:
        async with Client(StdioServerParameters(command=sys.executable, args=args, env=env)) as client:
            return await _remember_then_recall(client)

    _check_served(tmp_path / "s", *anyio.run(run))


def test_a_client_drives_the_server_over_streamable_http(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    args, env = _server_command(tmp_path / "s", "--transport", "streamable-http", "--port", str(port))
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "the server did not listen within 120 s"
            time.sleep(0.1)

        async def run() -> tuple[set[str], dict[str, Any]]:
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                return await _remember_then_recall(client)

        served = anyio.run(run)
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    _check_served(tmp_path / "s", *served)


def test_a_two_part_gate_says_the_memory_holds_an_answer_and_how_sure_the_first_is(tmp_path):
    async def scenario(client: Client) -> dict[str, Any]:
        for turn in TURNS:
            await call(client, "remember", **turn)
        return await call(client, "recall", query="What breed is Ada's puppy?", k=3)

    width = len(FEATURES)
    with text_store(tmp_path / "s") as store:
        # holds: P ≈ 0.95 whatever the cue; the first candidate right: P ≈ 0.27
        store.set_gate(GateModel((0.0,) * width, -1.0, True, 10, FEATURES, 0.5, (0.0,) * width, 3.0))
        answer = talk(store, scenario)
    assert answer["status"] == "recalled"
    assert "holds an answer (probability 0.95)" in answer["note"]
    assert f"with probability {answer['confidence']:.2f}" in answer["note"]
    assert answer["confidence"] == pytest.approx(0.9526 * 0.2689, abs=1e-3)
