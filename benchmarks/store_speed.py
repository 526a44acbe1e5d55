"""Speed of the memory engine's recall at scale, each figure beside a bare numpy scan and a faiss
HNSW index measured in the same run (as ratios), with the load average at the time.

Per size (768 dimensions, synthetic clustered episodes, full noisy cues as a text cue's embedding
would be, k = 10, one thread): recall P50/P95 of the engine — float32 exact scan, the certified
fp16 scan (exact), and the HNSW graph (approximate, shortlist rescored exactly) — every stage on
(search, Hopfield attention, gate, payload fetch), query embedding excluded; recall@10 of each
against the exact answer; the bare numpy scan (``unit @ q`` + argpartition) and faiss
``IndexHNSWFlat`` alone; graph build time and memory; batched recall (``recall_batch``) on two
threads beside the numpy GEMM scan of the same batch. ``--million`` adds 1,000,000 episodes
(about 15 GB; run it once). ``--libraries`` first compares faiss, hnswlib and usearch HNSW on
real sentence embeddings (``--real``, from ``store_ann_data.py``) and on a synthetic set.

    OMP_NUM_THREADS=1 python benchmarks/store_speed.py [--sizes 10000 100000] [--million]
        [--libraries --real FILE] [--out runs] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from engram.data.episodes import clustered_episodes
from engram.runs import RunFolder, markdown_table, seed_everything
from engram.store import MemoryStore, RecallConfig


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = (10_000, 100_000)
    dim: int = 768
    queries: int = 200
    warmup: int = 20
    k: int = 10
    m: int = 32
    ef_construction: int = 80
    ef: int = 96
    noise: float = 0.5
    batch: int = 256
    library_size: int = 20_000
    library_efs: tuple[int, ...] = (32, 64, 128, 256)
    seed: int = 0


def load() -> float:
    """The 1-minute load average (the machine is shared: every figure carries it)."""
    return round(os.getloadavg()[0], 1)


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def p50_p95(times: list[float]) -> tuple[float, float]:
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def timed(fn, items) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - start)
    return out


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(unit: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) rows of the exact top-k by inner product, in chunks of queries."""
    out = []
    for b in range(0, len(queries), 256):
        scores = queries[b : b + 256] @ unit.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        out.append(np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1))
    return np.concatenate(out)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def cues_for(episodes: np.ndarray, count: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Full cues: episodes plus Gaussian noise of ``noise`` times their per-dimension RMS."""
    picked = episodes[rng.choice(len(episodes), count, replace=False)]
    rms = np.sqrt((picked**2).mean(1, keepdims=True))
    return unit_rows(picked + noise * rms * rng.standard_normal(picked.shape).astype(np.float32))


# ---------------------------------------------------------------------------- library choice


def library_rows(name: str, unit: np.ndarray, queries: np.ndarray, cfg: Config) -> list[dict]:
    """Build time, memory and, per ef, P50 of one query and recall@10 of three HNSW libraries."""
    truth = exact_top(unit, queries, cfg.k)
    n, d = unit.shape
    rows = []
    import hnswlib
    from usearch.index import Index

    def build_faiss():
        index = faiss.IndexHNSWFlat(d, cfg.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
        index.add(unit)
        return index

    def build_hnswlib():
        index = hnswlib.Index(space="ip", dim=d)
        index.init_index(max_elements=n, ef_construction=cfg.ef_construction, M=cfg.m)
        index.add_items(unit, np.arange(n), num_threads=2)
        return index

    def build_usearch(dtype: str):
        index = Index(ndim=d, metric="ip", dtype=dtype, connectivity=cfg.m, expansion_add=cfg.ef_construction)
        index.add(np.arange(n), unit, threads=2)
        return index

    def faiss_search(index, ef):
        params = faiss.SearchParametersHNSW(efSearch=ef)
        return lambda q: index.search(q[None], cfg.k, params=params)[1][0]

    def hnswlib_search(index, ef):
        index.set_ef(ef)
        index.set_num_threads(1)
        return lambda q: index.knn_query(q[None], k=cfg.k)[0][0]

    def usearch_search(index, ef):
        index.expansion_search = ef
        return lambda q: index.search(q, cfg.k, threads=1).keys

    libraries = {
        "faiss IndexHNSWFlat": (build_faiss, faiss_search, lambda i: len(faiss.serialize_index(i))),
        "hnswlib": (build_hnswlib, hnswlib_search, lambda i: i.index_file_size()),
        "usearch f32": (lambda: build_usearch("f32"), usearch_search, lambda i: i.memory_usage),
        "usearch f16": (lambda: build_usearch("f16"), usearch_search, lambda i: i.memory_usage),
    }
    for library, (build, search, size) in libraries.items():
        with threadpool_limits(2):
            faiss.omp_set_num_threads(2)
            start = time.perf_counter()
            index = build()
            build_s = time.perf_counter() - start
            faiss.omp_set_num_threads(1)
        for ef in cfg.library_efs:
            one = search(index, ef)
            found = np.array([one(q) for q in queries])
            timed(one, queries[: cfg.warmup])
            p50, _ = p50_p95(timed(one, queries))
            rows.append(
                {
                    "data": name,
                    "library": library,
                    "ef": ef,
                    "recall@10": recall_at(found, truth),
                    "P50 ms": p50,
                    "build s (2 threads)": build_s,
                    "index MB": size(index) / 2**20,
                    "load": load(),
                }
            )
            print(rows[-1], flush=True)
        del index
    return rows


# ---------------------------------------------------------------------------- engine at one size


def engine_rows(size: int, cfg: Config, rng: np.random.Generator) -> list[dict]:
    episodes, _ = clustered_episodes(size, cfg.dim, max(10, size // 100), 0.6, 16, rng)
    cues = cues_for(episodes, cfg.queries + cfg.warmup, cfg.noise, rng)
    unit = unit_rows(episodes)
    items = range(cfg.warmup, cfg.warmup + cfg.queries)
    truth = exact_top(unit, cues, cfg.k)[cfg.warmup :]

    def bare(i: int) -> np.ndarray:
        scores = unit @ cues[i]
        top = np.argpartition(-scores, cfg.k)[: cfg.k]
        return top[np.argsort(-scores[top])]

    timed(bare, range(cfg.warmup))
    numpy_p50, numpy_p95 = p50_p95(timed(bare, items))
    rows: list[dict] = [
        {
            "size": size,
            "measure": "bare numpy scan (float32, exact)",
            "P50 ms": numpy_p50,
            "P95 ms": numpy_p95,
            "recall@10": 1.0,
            "÷ numpy": 1.0,
            "load": load(),
        }
    ]
    print(rows[-1], flush=True)
    quiet = {"ann_m": cfg.m, "ann_ef": cfg.ef}
    variants = {
        "engine, HNSW + exact rescoring": RecallConfig(ann_above=1, **quiet),
        "engine, float32 exact scan": RecallConfig(ann_above=None, half_above=None, **quiet),
        "engine, fp16 scan + exact rescoring (exact)": RecallConfig(ann_above=None, half_above=1, **quiet),
    }
    hnsw_p50 = float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        with MemoryStore(tmp, dim=cfg.dim, durable=False) as store:
            for b in range(0, size, 10_000):
                store.add_batch(
                    episodes[b : b + 10_000], payloads=[{"n": n} for n in range(b, min(b + 10_000, size))]
                )
            store.calibrate(samples=256)  # the vector space's gate, once, so every variant shares it
        for name, config in variants.items():
            with MemoryStore(tmp, dim=cfg.dim, durable=False, config=config) as store:
                before, start = rss_mb(), time.perf_counter()
                with threadpool_limits(2):
                    faiss.omp_set_num_threads(2)
                    store.recall(cues[0], k=cfg.k)  # builds the fp16 copy / the graph (2 threads)
                    faiss.omp_set_num_threads(1)
                first, grown = time.perf_counter() - start, rss_mb() - before
                if "HNSW" in name:
                    # faiss alone on the engine's own graph: the same search without the engine.
                    graph = store._index._hnsw.index
                    params = faiss.SearchParametersHNSW(efSearch=cfg.ef)
                    alone = np.array([graph.search(cues[i][None], cfg.k, params=params)[1][0] for i in items])
                    one = lambda i, g=graph, p=params: g.search(cues[i][None], cfg.k, params=p)  # noqa: E731
                    timed(one, range(cfg.warmup))
                    hnsw_p50, hnsw_p95 = p50_p95(timed(one, items))
                    rows.append(
                        {
                            "size": size,
                            "measure": f"faiss IndexHNSWFlat alone (M {cfg.m}, ef {cfg.ef})",
                            "P50 ms": hnsw_p50,
                            "P95 ms": hnsw_p95,
                            "recall@10": recall_at(alone, truth),
                            "÷ numpy": hnsw_p50 / numpy_p50,
                            "÷ faiss HNSW": 1.0,
                            "note": f"engine's graph, built in {first:.1f} s on 2 threads, +{grown:.0f} MB",
                            "load": load(),
                        }
                    )
                    print(rows[-1], flush=True)
                cold, found = [], []
                for i in items:  # first sight of each cue: its episodes' payloads are read from SQLite
                    start = time.perf_counter()
                    answer = store.recall(cues[i], k=cfg.k)
                    cold.append(time.perf_counter() - start)
                    found.append([r.episode.payload["n"] for r in answer.episodes])
                timed(lambda i, s=store: s.recall(cues[i], k=cfg.k), range(cfg.warmup))
                p50, p95 = p50_p95(timed(lambda i, s=store: s.recall(cues[i], k=cfg.k), items))
                with threadpool_limits(2):
                    faiss.omp_set_num_threads(2)
                    batch = cues[: cfg.batch]
                    store.recall_batch(batch[:8], k=cfg.k)
                    start = time.perf_counter()
                    store.recall_batch(batch, k=cfg.k)
                    batched = len(batch) / (time.perf_counter() - start)
                    start = time.perf_counter()
                    exact_top(unit, batch, cfg.k)
                    numpy_batched = len(batch) / (time.perf_counter() - start)
                    faiss.omp_set_num_threads(1)
                graph_file = Path(tmp) / "index" / "default.hnsw"
                note = (
                    f"first recall (builds) {first:.2f} s, +{grown:.0f} MB"
                    + (
                        f", graph file {graph_file.stat().st_size / 2**20:.0f} MB"
                        if "HNSW" in name and graph_file.exists()
                        else ""
                    )
                    + f"; batched {batched:,.0f} q/s on 2 threads (numpy GEMM scan {numpy_batched:,.0f} q/s)"
                )
                rows.append(
                    {
                        "size": size,
                        "measure": name,
                        "P50 ms": p50,
                        "P95 ms": p95,
                        "P50 ms, payloads read": p50_p95(cold)[0],
                        "recall@10": recall_at(np.array(found), truth),
                        "÷ numpy": p50 / numpy_p50,
                        "÷ faiss HNSW": p50 / hnsw_p50,
                        "note": note,
                        "load": load(),
                    }
                )
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="*", help="store sizes (default 10,000 100,000)")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 episodes (~15 GB; once)")
    parser.add_argument("--libraries", action="store_true", help="compare faiss, hnswlib, usearch first")
    parser.add_argument("--real", type=Path, help="real sentence embeddings (.npy) for --libraries")
    args = parser.parse_args()
    cfg = Config(seed=args.seed)
    if args.sizes is not None:
        cfg = replace(cfg, sizes=tuple(args.sizes))
    if args.million:
        cfg = replace(cfg, sizes=(*cfg.sizes, 1_000_000))
    if args.quick:
        cfg = replace(cfg, sizes=(3000,), dim=64, queries=50, warmup=5, batch=64, library_size=3000)
    faiss.omp_set_num_threads(1)
    rng = seed_everything(cfg.seed)
    run = RunFolder.create(args.out, "store_speed", asdict(cfg), cfg.seed)
    report = ["# Memory engine speed (shared 2-core CPU; load = 1-minute load average)", ""]
    if args.libraries:
        library: list[dict] = []
        if args.real is not None:
            real = unit_rows(np.load(args.real))
            order = rng.permutation(len(real))  # held-out sentences are the queries
            held = cfg.queries + cfg.warmup
            library += library_rows(
                f"all-MiniLM-L6-v2, {len(real) - held:,} sentences × {real.shape[1]}",
                real[order[held:]],
                real[order[:held]],
                cfg,
            )
        synthetic, _ = clustered_episodes(
            cfg.library_size, cfg.dim, max(10, cfg.library_size // 100), 0.6, 16, rng
        )
        library += library_rows(
            f"synthetic {cfg.library_size:,} × {cfg.dim}",
            unit_rows(synthetic),
            cues_for(synthetic, cfg.queries + cfg.warmup, cfg.noise, rng),
            cfg,
        )
        run.write_json("libraries.json", library)
        report += [
            "## HNSW libraries, same M / efConstruction, one query at a time",
            "",
            markdown_table(library, list(library[0])),
            "",
        ]
    rows: list[dict] = []
    for size in cfg.sizes:
        rows += engine_rows(size, cfg, rng)
    if rows:
        run.write_json("results.json", rows)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        report += ["## Engine recall", "", markdown_table(rows, columns)]
    run.write_report("\n".join(report) + "\n")
    print("\n".join(report))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"peak RSS {peak:.0f} MB; run folder: {run.path}")


if __name__ == "__main__":
    main()
