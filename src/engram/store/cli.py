"""Command line: ``engram store add|recall|delete|sleep|stats|export|check|repair|key|serve|mcp``.
Episodes and cues are text (``--text``, embedded by
``--embedder``) or JSON vectors; outputs are JSON, so the commands compose with other tools."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engram.extras import require

if TYPE_CHECKING:
    from engram.store.embed import Embedder


def _embedder(spec: str | None, dim: int | None) -> Embedder | None:
    """The embedder ``--embedder`` names: ``hashing`` (offline, weaker; the store's dimension,
    else ``--dim``, else 512) or a sentence-transformers model, by hub name or folder."""
    from engram.store import HashingEmbedder, SentenceTransformerEmbedder

    if spec is None:
        return None
    if spec == "hashing":
        try:
            return HashingEmbedder(512 if dim is None else dim)
        except ValueError as error:
            raise ValueError(f"--embedder: hashing cannot make {dim}-dimensional vectors ({error})") from None
    if (os.sep in spec or spec.startswith(".")) and not Path(spec).is_dir():
        raise ValueError(f"--embedder: no model folder at {spec}")
    try:
        return SentenceTransformerEmbedder(spec)
    except ImportError as error:
        raise ValueError(f"--embedder: {error}") from error
    except Exception as error:  # the library reports a model it cannot find in its own ways
        raise ValueError(f"--embedder: cannot load the sentence-transformers model {spec!r} "
                         f"({type(error).__name__}: {error})") from error


def _open(args: argparse.Namespace, create: bool = False):
    """The space ``--space`` of the store at ``--path`` (with ``--embedder`` where the command has
    one); only ``create`` commands may make either (a typo in a path must not answer from a new,
    empty store)."""
    from engram.store import MemoryStore
    from engram.store.backends import open_backend, store_exists

    dim = getattr(args, "dim", None)
    if not create:
        _require_store(args.path)
    backend = open_backend(args.path, dim=dim) if store_exists(args.path) else None
    try:
        if backend is not None and not create and args.space not in backend.spaces():
            known = ", ".join(backend.spaces()) or "none"
            raise ValueError(
                f"--space: no memory space named {args.space!r} in {args.path} (spaces: {known})")
        embedder = _embedder(getattr(args, "embedder", None), dim if backend is None else backend.dim)
        return MemoryStore(args.path, space=args.space, dim=dim, backend=backend, embedder=embedder)
    except BaseException:
        if backend is not None:
            backend.close()
        raise


def _require_store(path: str) -> None:
    from engram.store.backends import is_url, store_exists

    if not store_exists(path):
        if is_url(path):
            from engram.store.backends.postgres import redact

            path = redact(path)
        raise FileNotFoundError(f"--path: no Engram store at {path} (create one with `engram store add` "
                                "or `engram store key`)")


def _require_embedder(store: Any, option: str) -> None:
    """Text alone needs the space's embedder; say which one to give when it has none."""
    if store.embedder is None:
        made = store.backend.get_state(store.space).get("embedder")
        hint = f"; the space was made with {made['name']}" if made else ""
        raise ValueError(f"--embedder: space {store.space!r} has no embedder, so {option} needs one: give "
                         f"--embedder hashing (offline, weaker) or a sentence-transformers model{hint}")


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _json_arg(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name}: expected JSON, got {text[:60]!r} ({error})") from error


def _session(value: str) -> int | str:
    """A session given on the command line: an integer when it is written as one."""
    return int(value) if re.fullmatch(r"[+-]?\d+", value) else value


def _records(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The episodes ``add`` was given: JSON Lines, or one from --text / --embedding."""
    if args.file:
        source = Path(args.file)
        if not source.is_file():
            raise FileNotFoundError(f"--file: no such file {source}")
        return [_json_arg(line, f"--file line {i + 1}") for i, line in
                enumerate(source.read_text().splitlines()) if line.strip()]
    if args.embedding is None and args.text is None:
        raise ValueError("add: expected --file (JSON Lines), --text or --embedding (a JSON list)")
    if args.text is not None and not args.text.strip():
        raise ValueError("--text: expected some text, got an empty string")
    record: dict[str, Any] = {"payload": _json_arg(args.payload, "--payload") if args.payload else {}}
    if args.embedding is not None:
        record["embedding"] = _json_arg(args.embedding, "--embedding")
    optional = {"text": args.text, "who": args.who, "tags": args.tags,
                "session": None if args.session is None else _session(args.session)}
    record.update({name: value for name, value in optional.items() if value is not None})
    return [record]


def _add(args: argparse.Namespace) -> int:
    records = _records(args)
    if not records:
        raise ValueError(f"--file: {args.file} holds no episodes")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not ("embedding" in record or "text" in record):
            raise ValueError(f"record {i + 1}: expected an object with an 'embedding' list or a 'text'")
    for field in ("embedding", "text"):
        given = [field in r for r in records]
        if any(given) and not all(given):
            raise ValueError(f"record {given.index(not given[0]) + 1}: expected every record to have "
                             f"{field!r} or none (the first {'has' if given[0] else 'has not'})")
    now = time.time()
    with _open(args, create=True) as store:
        if "embedding" not in records[0]:
            _require_embedder(store, "text without an embedding")
        ids = store.add_batch(
            [r["embedding"] for r in records] if "embedding" in records[0] else None,
            [r.get("payload") for r in records],
            texts=[r["text"] for r in records] if "text" in records[0] else None,
            who=[r.get("who") for r in records], sessions=[r.get("session") for r in records],
            ids=[r["id"] for r in records] if all("id" in r for r in records) else None,
            timestamps=[r.get("timestamp", now) for r in records],
            rewards=[r.get("reward", 0.0) for r in records],
            saliences=[r.get("salience", 0.0) for r in records],
            tags=[r.get("tags", []) for r in records],
            unfinished=[r.get("unfinished", False) for r in records],
        )
    _print({"added": len(ids), "ids": ids})
    return 0


def _where(items: list[str] | None) -> dict[str, list[Any]] | None:
    """``--where who=Caroline --where session=3`` as a filter (a field given twice: either value)."""
    where: dict[str, list[Any]] = {}
    for item in items or []:
        field, equals, value = item.partition("=")
        if not equals or not field or not value:
            raise ValueError(f"--where: expected FIELD=VALUE (such as who=Caroline), got {item!r}")
        where.setdefault(field, []).append(_session(value) if field == "session" else value)
    return where or None


def _recall(args: argparse.Namespace) -> int:
    if args.cue is None and args.text is None:
        raise ValueError("recall: expected --text or --cue (a JSON list)")
    if args.text is not None and not args.text.strip():
        raise ValueError("--text: expected some text, got an empty string")
    if args.known is not None and args.cue is None:
        raise ValueError("--known: masks the dimensions of a --cue, but no --cue was given")
    filters = {"where": _where(args.where), "since": args.since, "until": args.until}
    with _open(args) as store:
        if args.cue is None:
            _require_embedder(store, "--text without --cue")
            result = store.recall(args.text, k=args.k, **filters)
        else:
            cue = _json_arg(args.cue, "--cue")
            if not isinstance(cue, list):
                raise ValueError(f"--cue: expected a JSON list of numbers, got {args.cue[:60]!r}")
            known = None if args.known is None else _json_arg(args.known, "--known")
            result = store.recall(cue, k=args.k, known=known, text=args.text, **filters)
    _print({
        "status": result.status, "decided_by": result.decided_by, "confidence": result.confidence,
        "holds": result.trace.get("holds"), "calibrated": result.calibrated,
        "episodes": [{"id": r.episode.id, "text": r.episode.text, "who": r.episode.who,
                      "session": r.episode.session, "timestamp": r.episode.timestamp,
                      "tags": list(r.episode.tags), "payload": r.episode.payload, "score": r.score,
                      "strength": r.strength} for r in result.episodes],
    })
    return 0 if result.accepted else 1


def _delete(args: argparse.Namespace) -> int:
    with _open(args) as store:
        removed = store.delete(args.ids)
        compacted = store.compact() if args.compact else None
    _print({"deleted": removed, "compacted": compacted})
    return 0


def _sleep(args: argparse.Namespace) -> int:
    with _open(args) as store:
        report = store.sleep(replay_budget=args.replay_budget, walks=args.walks, seed=args.seed)
    _print(report.__dict__)
    return 0


def _stats(args: argparse.Namespace) -> int:
    with _open(args) as store:
        _print(store.stats())
    return 0


def _export(args: argparse.Namespace) -> int:
    with _open(args) as store:
        n = store.export(args.out, embeddings=not args.no_embeddings)
    _print({"exported": n, "to": args.out})
    return 0


def _check(args: argparse.Namespace) -> int:
    with _open(args) as store:
        problems = store.check()
    _print({"space": args.space, "problems": problems})
    return 1 if problems else 0


def _repair(args: argparse.Namespace) -> int:
    with _open(args) as store:
        removed = store.repair()
        problems = store.check()
    _print({"space": args.space, "removed": removed, "problems": problems})
    return 1 if problems else 0


def _key(args: argparse.Namespace) -> int:
    require("fastapi", "store")
    from engram.store.server import issue_key

    # flushed at once: a key committed but left in a buffer when the process dies is never seen
    print(issue_key(args.path, args.space, args.dim, overlap=args.overlap), flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    uvicorn = require("uvicorn", "store")
    from uvicorn.supervisors import Multiprocess
    require("fastapi", "store")
    from engram.store.server import create_app

    _require_store(args.path)
    if args.workers < 1:
        raise ValueError(f"--workers: expected a positive number of processes, got {args.workers}")
    embedder = _embedder(args.embedder, _dim_of(args.path))  # a bad --embedder fails before serving
    if args.workers == 1:
        uvicorn.run(create_app(args.path, embedder=embedder), host=args.host, port=args.port,
                    log_level="warning")
        return 0
    # Several processes on one listening socket, each its own app over the same store: SQLite
    # (WAL) or PostgreSQL keep them consistent, each reloads what another wrote before it reads.
    os.environ[_SERVE_PATH], os.environ[_SERVE_EMBEDDER] = args.path, args.embedder or ""
    # A spawned worker imports this module (torch included) before it can answer the supervisor's
    # health ping; uvicorn's 5 s default kills and respawns it for ever on a loaded machine.
    config = uvicorn.Config("engram.store.cli:serving_app", factory=True, host=args.host, port=args.port,
                            log_level="warning", workers=args.workers,
                            timeout_worker_healthcheck=WORKER_HEALTHCHECK_S)
    Multiprocess(config, sockets=[tcp_listener(config)]).run()
    return 0


def tcp_listener(config: Any) -> socket.socket:
    """The socket a uvicorn ``config`` binds, told that it is TCP. uvicorn binds it with protocol
    0, and asyncio gives accepted connections TCP_NODELAY only when the listener says TCP: else
    every keep-alive request after the first waits ~40 ms for the client's delayed ACK (uvicorn
    issue #3149, the path of ``--workers``)."""
    listener = config.bind_socket()
    tcp = socket.socket(listener.family, listener.type, socket.IPPROTO_TCP, fileno=listener.detach())
    tcp.set_inheritable(True)
    return tcp


_SERVE_PATH, _SERVE_EMBEDDER = "ENGRAM_SERVE_PATH", "ENGRAM_SERVE_EMBEDDER"
WORKER_HEALTHCHECK_S = 120  # seconds a worker may take to answer: starting, or hung


def serving_app() -> Any:
    """The app one of ``engram store serve --workers N``'s processes serves (its store and
    embedder passed through the environment, as uvicorn starts each worker afresh)."""
    from engram.store.server import create_app

    path = os.environ[_SERVE_PATH]
    return create_app(path, embedder=_embedder(os.environ.get(_SERVE_EMBEDDER) or None, _dim_of(path)))


def _dim_of(path: str) -> int:
    """The embedding dimension of the store at ``path``."""
    from engram.store.backends import open_backend

    backend = open_backend(path)
    try:
        return backend.dim
    finally:
        backend.close()


def _mcp(args: argparse.Namespace) -> int:
    from engram.store import mcp

    return mcp.run(args)


def mcp_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``engram store mcp`` and ``engram-mcp`` (one definition for both)."""
    parser.add_argument("path", help="the store directory (created if absent)")
    parser.add_argument("--space", default="default", help="the memory space (default: %(default)s)")
    parser.add_argument("--embedder", default=None,
                        help="'hashing', 'hashing:DIM' or a sentence-transformers model name or folder "
                             "(default: vectors only, or the space's recorded hashing embedder)")
    parser.add_argument("--dim", type=int, default=None, help="dimension of a new store without an embedder")
    parser.add_argument("--transport", choices=("stdio", "streamable-http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1", help="streamable-http: address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="streamable-http: port")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", default="engram-store",
                        help="store directory or postgresql:// URL (default: engram-store)")
    parser.add_argument("--space", default="default", help="memory space (default: default)")
    parser.add_argument("--dim", type=int, default=None,
                        help="embedding dimension of a new store (the embedder's, else 768)")


def _embedder_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embedder", metavar="NAME_OR_PATH",
                        help="what embeds text: 'hashing' (offline, weaker) or a sentence-transformers "
                             "model name or folder; a space keeps the one it was made with")


def _sleep_options(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--replay-budget", type=int, default=512)
    parser.add_argument("--walks", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=_sleep)


def register(subparsers: argparse._SubParsersAction) -> None:
    store = subparsers.add_parser("store", help="the persistent memory engine (add, recall, ...)")
    actions = store.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    add = actions.add_parser("add", help="add episodes from JSON Lines, or one --text or --embedding")
    _common(add)
    _embedder_option(add)
    add.add_argument("--file", help="JSON Lines: {text and/or embedding, who?, session?, timestamp?, "
                                    "payload?, id?, reward?, salience?, tags?}")
    add.add_argument("--text", help="one episode's text (embedded by the space's embedder)")
    add.add_argument("--embedding", help="one embedding as a JSON list")
    add.add_argument("--who", help="who said or did it (speaker, user, agent)")
    add.add_argument("--session", help="its session (an integer, or a name)")
    add.add_argument("--tags", nargs="+", metavar="TAG")
    add.add_argument("--payload", help="its payload as a JSON object")
    add.set_defaults(func=_add)

    recall = actions.add_parser("recall", help="recall episodes for a text or vector cue (exit 1: "
                                "insufficient evidence; the candidates are printed either way)")
    _common(recall)
    _embedder_option(recall)
    recall.add_argument("--text", help="the cue as text (with --cue: the cue's words)")
    recall.add_argument("--cue", help="the cue as a JSON list")
    recall.add_argument("--known", help="JSON list of booleans marking the cue's known dimensions")
    recall.add_argument("--where", action="append", metavar="FIELD=VALUE",
                        help="filter on who, session, tags or kind (repeat; a field twice: either value)")
    recall.add_argument("--since", type=float, help="earliest timestamp (Unix seconds)")
    recall.add_argument("--until", type=float, help="latest timestamp (Unix seconds)")
    recall.add_argument("-k", "--k", type=int, default=5)
    recall.set_defaults(func=_recall)

    delete = actions.add_parser("delete", help="delete episodes by id")
    _common(delete)
    delete.add_argument("ids", nargs="+")
    delete.add_argument("--compact", action="store_true", help="then remove every trace from disk")
    delete.set_defaults(func=_delete)

    _sleep_options(actions.add_parser("sleep", help="consolidate a memory space"))
    stats = actions.add_parser("stats", help="counts, strength and calibration of a space")
    _common(stats)
    stats.set_defaults(func=_stats)

    export = actions.add_parser("export", help="write a space as JSON Lines")
    _common(export)
    export.add_argument("--out", required=True)
    export.add_argument("--no-embeddings", action="store_true")
    export.set_defaults(func=_export)

    check = actions.add_parser("check", help="integrity problems of a space (exit 1 when there are any)")
    _common(check)
    check.set_defaults(func=_check)

    repair = actions.add_parser("repair", help="drop the episodes whose vector is missing or damaged")
    _common(repair)
    repair.set_defaults(func=_repair)

    key = actions.add_parser("key", help="create a space if needed and print a new API key for it")
    _common(key)
    key.add_argument("--overlap", type=float, default=3600.0,
                     help="seconds the earlier keys keep working (default 3600; 0 revokes them now)")
    key.set_defaults(func=_key)

    serve = actions.add_parser("serve", help="serve a store over HTTP (FastAPI + uvicorn)")
    serve.add_argument("--path", default="engram-store", help="store directory or postgresql:// URL")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing the port and the store (default 1)")
    _embedder_option(serve)
    serve.set_defaults(func=_serve)

    served = actions.add_parser("mcp", help="serve one memory space over MCP (stdio or streamable HTTP; "
                                "needs the `mcp` extra)")
    mcp_options(served)
    served.set_defaults(func=_mcp)
