"""An MCP server over one memory space (``engram-mcp``): remember, recall, forget, sleep, stats.

An agent that speaks the Model Context Protocol gets the engine as five tools. ``recall`` keeps
the engine's refusal: when memory does not hold enough evidence it answers
``insufficient_evidence`` with ``refused: true`` and still lists the ranked candidates, so the
agent can say it does not know instead of trusting the nearest episode. Bad arguments come back
as tool errors whose message names the tool's argument, as the in-process store's errors do.

Needs the optional ``mcp`` extra (``pip install 'engram[mcp]'``). Transports: stdio (the
default, for a client that starts the server) and streamable HTTP (``--transport
streamable-http``; it has no authentication of its own, so it listens on loopback by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from engram.store.embed import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from engram.store.memory import MemoryStore, RecallResult

_INSTRUCTIONS = (
    "A long-term episodic memory. Store what is worth keeping with `remember`; before answering from "
    "memory, `recall` it. When recall says refused (insufficient evidence), memory does not know: say "
    "so rather than trusting the candidates, which are only the nearest episodes. `forget` deletes "
    "episodes for good; `sleep` consolidates (links, prototypes, calibration) and can run any time."
)


class Remembered(BaseModel):
    id: str = Field(description="the new episode's id (forget takes it)")


class Candidate(BaseModel):
    rank: int = Field(description="1 is the best")
    id: str
    text: str
    who: str | None
    session: int | str | None
    tags: list[str]
    timestamp: float = Field(description="Unix time of the episode")
    kind: str = Field(description="'episode', or 'semantic' for a prototype sleep made")
    payload: dict[str, Any]
    score: float = Field(description="rank score (higher is better)")
    strength: float = Field(description="1 when fresh, lower as the memory decays")


class Recollection(BaseModel):
    status: Literal["recalled", "insufficient_evidence"]
    refused: bool = Field(description="true when memory does not hold enough evidence to answer")
    note: str = Field(description="what the status means for using the candidates")
    decided_by: str = Field(description="the stage that settled it: search, completion, separation or gate")
    confidence: float = Field(description="the gate's probability that the first candidate answers the query")
    calibrated: bool = Field(description="whether that probability comes from a fitted gate")
    candidates: list[Candidate] = Field(description="ranked, best first; unconfirmed when refused")


class Forgotten(BaseModel):
    deleted: list[str] = Field(description="the ids that existed and are gone")
    missing: list[str] = Field(description="the ids that were not in memory")
    compacted: bool = Field(description="whether the files were rewritten without them")


def load_embedder(spec: str | None) -> Embedder | None:
    """The embedder a command line names: None, ``hashing`` / ``hashing:DIM`` (offline, no model),
    or a sentence-transformers model name or folder."""
    if spec is None:
        return None
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"embedder: expected 'hashing', 'hashing:DIM' or a sentence-transformers model "
                         f"name or folder, got {spec!r}")
    name, _, dim = spec.partition(":")
    if name == "hashing":
        if dim and not dim.isdigit():
            raise ValueError(f"embedder: expected hashing:DIM with an integer DIM, got {spec!r}")
        return HashingEmbedder(int(dim)) if dim else HashingEmbedder()
    return SentenceTransformerEmbedder(spec)


@contextmanager
def _tool_errors(renames: dict[str, str]) -> Iterator[None]:
    """The store's ValueError / TypeError as a tool error, naming the tool's argument
    (``renames``: the store's argument name -> the tool's)."""
    try:
        yield
    except (TypeError, ValueError) as error:
        name, colon, rest = str(error).partition(":")
        base = name.split("[", 1)[0]
        if colon and base in renames:
            name = renames[base] + name[len(base):]
        raise ToolError(f"{name}{colon}{rest}") from None


def _recollection(result: RecallResult) -> Recollection:
    holds = result.trace.get("holds")
    if result.accepted and holds is not None:
        note = (f"recalled: memory holds an answer (probability {holds:.2f}); the first candidate is it "
                f"with probability {result.confidence:.2f}, weigh the others too")
    elif result.accepted:
        note = (f"recalled: memory holds evidence for the first candidate (confidence "
                f"{result.confidence:.2f})")
    elif result.episodes:
        note = ("insufficient evidence: memory does not hold enough to answer; the candidates are the "
                "nearest episodes, unconfirmed")
    else:
        note = f"insufficient evidence: {result.trace.get('reason', 'nothing matched')}"
    candidates = [
        Candidate(rank=i, id=r.episode.id, text=r.episode.text, who=r.episode.who, session=r.episode.session,
                  tags=list(r.episode.tags), timestamp=r.episode.timestamp, kind=r.episode.kind,
                  payload=r.episode.payload, score=r.score, strength=r.strength)
        for i, r in enumerate(result.episodes, start=1)
    ]
    return Recollection(status=result.status, refused=not result.accepted, note=note,
                        decided_by=result.decided_by, confidence=result.confidence,
                        calibrated=result.calibrated, candidates=candidates)


def create_server(store: MemoryStore, name: str = "engram") -> MCPServer:
    """An MCP server whose tools read and write ``store`` (the caller opens and closes it)."""
    server: MCPServer = MCPServer(name, instructions=_INSTRUCTIONS)
    needs_text = ("this server has no embedder (start it with --embedder hashing or a sentence-transformers "
                  "model), so give vector= instead")

    @server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=False))
    def remember(text: str | None = None, vector: list[float] | None = None, who: str | None = None,
                 session: int | str | None = None, tags: list[str] | None = None,
                 timestamp: float | None = None, payload: dict[str, Any] | None = None,
                 id: str | None = None, reward: float = 0.0, salience: float = 0.0) -> Remembered:
        """Store one episode: its text (embedded by the server) and/or its vector, who said it, the
        session, tags, Unix timestamp (default now), a JSON payload, and how much it matters (reward,
        salience). Returns its id."""
        if text is None and vector is None:
            raise ToolError("text: expected the episode's text or vector=, got neither")
        if vector is None and store.embedder is None:
            raise ToolError(f"text: {needs_text}")
        with _tool_errors({"embedding": "vector", "embeddings": "vector", "texts": "text",
                           "sessions": "session", "payloads": "payload"}):
            eid = store.add(vector, payload, text=text, who=who, session=session, id=id,
                            timestamp=timestamp, reward=reward, salience=salience, tags=tags or ())
        return Remembered(id=eid)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def recall(query: str | None = None, vector: list[float] | None = None, k: int = 5,
               where: dict[str, Any] | None = None, since: float | None = None,
               until: float | None = None) -> Recollection:
        """Recall the episodes that answer a query (text, and/or a vector), best first, and whether memory
        holds enough evidence. `where` filters by who, session, tags or kind, e.g. {"who": "Ada",
        "tags": ["work"]} (a list means any of those values; tags: all of them); since/until bound the
        Unix timestamp. refused=true means insufficient evidence: the candidates are unconfirmed."""
        if query is None and vector is None:
            raise ToolError("query: expected the query text or vector=, got neither")
        if vector is None and store.embedder is None:
            raise ToolError(f"query: {needs_text}")
        with _tool_errors({"cue": "vector", "cues": "query", "text": "query", "texts": "query"}):
            cue = query if vector is None else vector
            result = store.recall(cue, k=k, text=None if vector is None else query, where=where,
                                  since=since, until=until)
        return _recollection(result)

    @server.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True))
    def forget(ids: list[str], compact: bool = False) -> Forgotten:
        """Delete episodes by id, with their links. compact=true also rewrites the store's files so
        that no trace of them stays on disk (slower: it copies the space)."""
        with _tool_errors({}):
            deleted = store.delete(ids)
            if compact:
                store.compact()
        gone = set(deleted)
        return Forgotten(deleted=deleted, missing=[i for i in ids if i not in gone], compacted=compact)

    @server.tool(annotations=ToolAnnotations(destructive_hint=False))
    def sleep(replay_budget: int = 512, walks: int = 64, seed: int = 0) -> dict[str, Any]:
        """Consolidate memory as sleep does: replay recent and important episodes, link related ones,
        merge clusters into semantic prototypes, propose associations, recalibrate the gate. Returns
        what it did."""
        with _tool_errors({}):
            report = store.sleep(replay_budget=replay_budget, walks=walks, seed=seed)
        return dataclasses.asdict(report)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def stats() -> dict[str, Any]:
        """How many episodes, prototypes and links the space holds, their strength, the embedder, and
        whether the gate is calibrated."""
        return store.stats()

    return server


def serve(path: str | os.PathLike[str], space: str = "default", embedder: Embedder | str | None = None,
          dim: int | None = None, transport: Literal["stdio", "streamable-http"] = "stdio",
          host: str = "127.0.0.1", port: int = 8765) -> None:
    """Open the space ``space`` of the store ``path`` and serve it over ``transport`` until the
    client goes (stdio) or the process is stopped; ``embedder`` may be a name for ``load_embedder``."""
    if transport not in ("stdio", "streamable-http"):
        raise ValueError(f"transport: expected 'stdio' or 'streamable-http', got {transport!r}")
    if embedder is None or isinstance(embedder, str):
        embedder = load_embedder(embedder)
    with MemoryStore(path, space=space, dim=dim, embedder=embedder) as store:
        server = create_server(store)
        if transport == "stdio":
            server.run("stdio")
        else:
            server.run("streamable-http", host=host, port=port)


def run(args: argparse.Namespace) -> int:
    """Serve the space the parsed options name; a bad ``--embedder`` is a ValueError naming it."""
    serve(args.path, args.space, load_embedder(args.embedder), args.dim, args.transport, args.host, args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """``engram-mcp PATH [--space S] [--embedder E] [--transport stdio|streamable-http]``."""
    from engram.store.cli import mcp_options

    parser = argparse.ArgumentParser(prog="engram-mcp", description="Serve one memory space over MCP.")
    mcp_options(parser)
    args = parser.parse_args(argv)
    try:
        embedder = load_embedder(args.embedder)
    except ValueError as error:
        parser.error(str(error))
    serve(args.path, args.space, embedder, args.dim, args.transport, args.host, args.port)


if __name__ == "__main__":
    main()
