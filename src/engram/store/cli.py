"""Command line: ``engram store add|recall|delete|sleep|stats|export|key``, ``engram sleep`` and
``engram serve``. Inputs and outputs are JSON, so the commands compose with other tools."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def _open(args: argparse.Namespace, create: bool = False):
    """The space ``--space`` of the store at ``--path``; only ``create`` commands may make either
    (a typo in a path must not answer from a new, empty store)."""
    from engram.store import MemoryStore, SQLiteBackend

    dim = getattr(args, "dim", None)
    if create:
        return MemoryStore(args.path, space=args.space, dim=dim)
    _require_store(args.path)
    backend = SQLiteBackend(args.path, dim=dim)
    if args.space not in backend.spaces():
        known = ", ".join(backend.spaces()) or "none"
        backend.close()
        raise ValueError(f"--space: no memory space named {args.space!r} in {args.path} (spaces: {known})")
    return MemoryStore(args.path, space=args.space, backend=backend)


def _require_store(path: str) -> None:
    if not (Path(path) / "engram.sqlite3").is_file():
        raise FileNotFoundError(f"--path: no Engram store at {path} (create one with `engram store add` "
                                "or `engram store key`)")


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _json_arg(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name}: expected JSON, got {text[:60]!r} ({error})") from error


def _add(args: argparse.Namespace) -> int:
    if args.file:
        source = Path(args.file)
        if not source.is_file():
            raise FileNotFoundError(f"--file: no such file {source}")
        records = [_json_arg(line, f"--file line {i + 1}") for i, line in
                   enumerate(source.read_text().splitlines()) if line.strip()]
    elif args.embedding:
        records = [{"embedding": _json_arg(args.embedding, "--embedding"),
                    "payload": _json_arg(args.payload, "--payload") if args.payload else {}}]
    else:
        raise ValueError("add: expected --file (JSON Lines) or --embedding (a JSON list)")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "embedding" not in record:
            raise ValueError(f"record {i + 1}: expected an object with an 'embedding' list")
    with _open(args, create=True) as store:
        ids = store.add_batch(
            np.asarray([r["embedding"] for r in records], dtype=np.float32),
            [r.get("payload") for r in records],
            ids=[r["id"] for r in records] if all("id" in r for r in records) else None,
            rewards=[r.get("reward", 0.0) for r in records],
            saliences=[r.get("salience", 0.0) for r in records],
            tags=[r.get("tags", []) for r in records],
            unfinished=[bool(r.get("unfinished", False)) for r in records],
        )
    _print({"added": len(ids), "ids": ids})
    return 0


def _recall(args: argparse.Namespace) -> int:
    cue = _json_arg(args.cue, "--cue")
    known = None if args.known is None else np.asarray(_json_arg(args.known, "--known"), dtype=bool)
    with _open(args) as store:
        result = store.recall(np.asarray(cue, dtype=np.float32), k=args.k, known=known)
    _print({
        "status": result.status, "decided_by": result.decided_by, "confidence": result.confidence,
        "calibrated": result.calibrated,
        "episodes": [{"id": r.episode.id, "payload": r.episode.payload, "score": r.score,
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


def _key(args: argparse.Namespace) -> int:
    from engram.store.server import issue_key

    # flushed at once: a key committed but left in a buffer when the process dies is never seen
    print(issue_key(args.path, args.space, args.dim, overlap=args.overlap), flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from engram.store.server import create_app

    _require_store(args.path)
    uvicorn.run(create_app(args.path), host=args.host, port=args.port, log_level="warning",
                workers=1)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", default="engram-store", help="store directory (default: engram-store)")
    parser.add_argument("--space", default="default", help="memory space (default: default)")
    parser.add_argument("--dim", type=int, default=None, help="embedding dimension of a new store (768)")


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

    add = actions.add_parser("add", help="add episodes from JSON Lines or one --embedding")
    _common(add)
    add.add_argument("--file", help="JSON Lines: {embedding, payload?, id?, reward?, salience?, tags?}")
    add.add_argument("--embedding", help="one embedding as a JSON list")
    add.add_argument("--payload", help="its payload as a JSON object")
    add.set_defaults(func=_add)

    recall = actions.add_parser("recall", help="recall episodes for a cue (exit 1: insufficient evidence)")
    _common(recall)
    recall.add_argument("--cue", required=True, help="the cue as a JSON list")
    recall.add_argument("--known", help="JSON list of booleans marking the cue's known dimensions")
    recall.add_argument("-k", type=int, default=5)
    recall.set_defaults(func=_recall)

    delete = actions.add_parser("delete", help="delete episodes by id")
    _common(delete)
    delete.add_argument("ids", nargs="+")
    delete.add_argument("--compact", action="store_true", help="then remove every trace from disk")
    delete.set_defaults(func=_delete)

    _sleep_options(actions.add_parser("sleep", help="consolidate (same as `engram sleep`)"))
    stats = actions.add_parser("stats", help="counts, strength and calibration of a space")
    _common(stats)
    stats.set_defaults(func=_stats)

    export = actions.add_parser("export", help="write a space as JSON Lines")
    _common(export)
    export.add_argument("--out", required=True)
    export.add_argument("--no-embeddings", action="store_true")
    export.set_defaults(func=_export)

    key = actions.add_parser("key", help="create a space if needed and print a new API key for it")
    _common(key)
    key.add_argument("--overlap", type=float, default=3600.0,
                     help="seconds the earlier keys keep working (default 3600; 0 revokes them now)")
    key.set_defaults(func=_key)

    _sleep_options(subparsers.add_parser("sleep", help="consolidate a memory space"))

    serve = subparsers.add_parser("serve", help="serve a store over HTTP (FastAPI + uvicorn)")
    serve.add_argument("--path", default="engram-store")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_serve)
