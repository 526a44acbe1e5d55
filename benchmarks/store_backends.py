"""SQLite beside PostgreSQL + pgvector: ingest rate and recall latency on the same data, same
machine, one run.

Ingest: ``add_batch`` of ``--batch`` episodes per transaction (durable), embeddings given; on
PostgreSQL before its HNSW index exists (the default below ``hnsw_above``), with the index
present from the first episode (every row inserted into the graph), and the one bulk build the
threshold triggers. Recall: ``MemoryStore.recall`` (the full pipeline over the in-process index,
identical on both backends; PostgreSQL adds the change check each recall makes), and the
backend's ``nearest`` (PostgreSQL: HNSW, and an exact scan in the database) beside a numpy
scan of the same matrix, with HNSW's recall@10 against exact.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/store_backends.py [--n 10000] [--dim 768]
        [--url postgresql://...]   (default: a throwaway server started through pgserver)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg

from engram.codes import noisy_partial_cues
from engram.data.episodes import clustered_episodes
from engram.store import MemoryStore
from engram.store.backends.postgres import PostgresBackend


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    """A PostgreSQL URL: the one given, or a throwaway pgserver instance."""
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        folder = Path(tempfile.mkdtemp(prefix="engram-bench-pg-"))
        instance = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield instance.get_uri()
    finally:
        instance.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def database(url: str) -> Iterator[str]:
    """A new database on the server, dropped afterwards."""
    name = f"engram_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def ingest(store: MemoryStore, vectors: np.ndarray, batch: int) -> float:
    """Episodes per second of durable ``add_batch`` calls."""
    start = time.perf_counter()
    for first in range(0, len(vectors), batch):
        store.add_batch(vectors[first : first + batch])
    return len(vectors) / (time.perf_counter() - start)


def latencies(call: Callable[[np.ndarray], object], cues: np.ndarray, warmup: int) -> dict[str, float]:
    for cue in cues[:warmup]:
        call(cue)
    times = []
    for cue in cues[warmup:]:
        start = time.perf_counter()
        call(cue)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="episodes")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--hnsw-ingest", type=int, default=2000,
                        help="episodes ingested with the HNSW index present from the start")
    parser.add_argument("--url", help="a PostgreSQL server to use instead of a throwaway one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    vectors, _ = clustered_episodes(args.n, args.dim, clusters=100, spread=0.6, rank=16, rng=rng)
    picked = rng.integers(0, args.n, args.queries + args.warmup)
    cues, _ = noisy_partial_cues(vectors[picked], (1.0, 1.0), 0.5, rng)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    rows: list[tuple[str, str, float]] = []

    def numpy_top10(cue: np.ndarray) -> np.ndarray:
        scores = unit @ (cue / np.linalg.norm(cue))
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    with tempfile.TemporaryDirectory() as folder, server(args.url) as url, database(url) as plain, \
            database(url) as graph:
        sqlite = MemoryStore(Path(folder) / "s", dim=args.dim)
        rows.append(("ingest, episodes/s", "SQLite", ingest(sqlite, vectors, args.batch)))
        postgres = MemoryStore(plain, backend=PostgresBackend(plain, dim=args.dim, hnsw_above=args.n))
        rows.append(("ingest, episodes/s", "PostgreSQL, before the HNSW index", ingest(postgres, vectors,
                                                                                     args.batch)))
        with MemoryStore(graph, backend=PostgresBackend(graph, dim=args.dim, hnsw_above=0)) as indexed:
            some = vectors[: args.hnsw_ingest]
            rows.append(("ingest, episodes/s", f"PostgreSQL, HNSW present ({len(some)} episodes)",
                         ingest(indexed, some, args.batch)))
        start = time.perf_counter()
        postgres.backend._build_hnsw()
        rows.append((f"HNSW bulk build of {args.n} episodes, s", "PostgreSQL", time.perf_counter() - start))

        for name, store in (("SQLite", sqlite), ("PostgreSQL", postgres)):
            figures = latencies(lambda cue, store=store: store.recall(cue, k=10), cues, args.warmup)
            rows += [(f"MemoryStore.recall {p}", name, v) for p, v in figures.items()]
        figures = latencies(numpy_top10, cues, args.warmup)
        rows += [(f"numpy exact top-10 scan {p}", "same matrix, in memory", v) for p, v in figures.items()]
        figures = latencies(lambda cue: postgres.backend.nearest("default", cue, 10), cues, args.warmup)
        rows += [(f"nearest top-10 {p}", "PostgreSQL, HNSW (ef_search 100)", v) for p, v in figures.items()]
        found = [len({postgres.backend.nearest("default", c, 10)[j][0] for j in range(10)}
                     & {postgres._index.ids[i] for i in numpy_top10(c)}) / 10 for c in cues[args.warmup:]]
        rows.append(("HNSW recall@10 against exact", "PostgreSQL", float(np.mean(found))))
        with psycopg.connect(plain, autocommit=True) as db:
            db.execute("DROP INDEX engram_episodes_hnsw")
        postgres.backend._hnsw = True  # keep it from rebuilding: this row measures the exact scan
        figures = latencies(lambda cue: postgres.backend.nearest("default", cue, 10), cues, args.warmup)
        rows += [(f"nearest top-10 {p}", "PostgreSQL, exact scan in the database", v)
                 for p, v in figures.items()]
        sqlite.close()
        postgres.close()

    print(f"{args.n} episodes × {args.dim} dims, {args.queries} queries, seed {args.seed}\n")
    print("| measure | backend | value |\n|---|---|---|")
    for measure, backend, value in rows:
        print(f"| {measure} | {backend} | {value:,.3f} |" if value < 100 else f"| {measure} | {backend} | "
              f"{value:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps([{"measure": m, "backend": b, "value": v} for m, b, v in rows],
                                              indent=1))


if __name__ == "__main__":
    main()
