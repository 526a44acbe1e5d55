"""Speed of the memory engine: recall latency at 10,000 and 100,000 episodes of 768 dimensions,
and batched ingest, each next to a naive reference measured in the same run.

Recall: the full pipeline (exact search, Hopfield completion, gate, payload fetch) for one
partial cue at a time, against a bare numpy brute-force top-k on the same matrix (the floor
any exact method pays), and the faiss IVF path at the larger size. Ingest: ``add_batch`` of
1,000 episodes per transaction (durable: fsync per batch; and not durable), against one
``add`` per episode.

    .venv/bin/python benchmarks/store_speed.py [--out runs] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from functools import partial

import numpy as np

from engram.data.episodes import clustered_episodes, partial_noisy_cues
from engram.runs import RunFolder, markdown_table, seed_everything
from engram.store import MemoryStore, RecallConfig


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = (10_000, 100_000)
    dim: int = 768
    queries: int = 300
    warmup: int = 20
    ingest_episodes: int = 20_000
    ingest_batch: int = 1000
    single_adds: int = 300
    faiss_nprobe: int = 16
    sketch_dim: int = 128
    sketch_shortlist: int = 512
    seed: int = 0


def percentiles(times: list[float]) -> dict[str, float]:
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99))}


def timed(fn, items) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", type=int, nargs="+", help="store sizes to time (default 10,000 100,000)")
    args = parser.parse_args()
    cfg = Config(seed=args.seed)
    if args.sizes:
        cfg = replace(cfg, sizes=tuple(args.sizes))
    if args.quick:
        cfg = replace(cfg, sizes=(2000,), dim=128, queries=50, warmup=5, ingest_episodes=2000, single_adds=50)
    rng = seed_everything(cfg.seed)
    run = RunFolder.create(args.out, "store_speed", asdict(cfg), cfg.seed)
    rows: list[dict] = []

    # ---------------------------------------------------------------- ingest
    data, _ = clustered_episodes(cfg.ingest_episodes, cfg.dim, 100, 0.6, 16, rng)
    for durable in (True, False):
        with tempfile.TemporaryDirectory() as tmp, MemoryStore(tmp, dim=cfg.dim, durable=durable) as store:
            start = time.perf_counter()
            for b in range(0, cfg.ingest_episodes, cfg.ingest_batch):
                store.add_batch(data[b : b + cfg.ingest_batch],
                                payloads=[{"n": i} for i in range(b, b + cfg.ingest_batch)])
            batched = cfg.ingest_episodes / (time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp, MemoryStore(tmp, dim=cfg.dim, durable=durable) as store:
            start = time.perf_counter()
            for i in range(cfg.single_adds):
                store.add(data[i], {"n": i})
            single = cfg.single_adds / (time.perf_counter() - start)
        rows.append({"measure": f"ingest episodes/s (durable={durable})", "ours": batched,
                     "naive": single, "ours/naive": batched / single,
                     "note": f"add_batch of {cfg.ingest_batch} vs one add per episode"})
        print(rows[-1], flush=True)

    # ---------------------------------------------------------------- recall latency
    for size in cfg.sizes:
        episodes, _ = clustered_episodes(size, cfg.dim, max(10, size // 100), 0.6, 16, rng)
        sources = rng.choice(size, cfg.queries + cfg.warmup, replace=False)
        cues, known = partial_noisy_cues(episodes[sources], (0.3, 0.5), 0.5, rng)
        with tempfile.TemporaryDirectory() as tmp:
            store = MemoryStore(tmp, dim=cfg.dim, durable=False, config=RecallConfig(faiss_above=None))
            for b in range(0, size, 10_000):
                store.add_batch(episodes[b : b + 10_000])
            store.calibrate(samples=256)
            unit = store._index.view()

            def naive(i: int, unit: np.ndarray = unit, cues: np.ndarray = cues,
                      known: np.ndarray = known) -> np.ndarray:
                q = np.where(known[i], cues[i], 0.0).astype(np.float32)
                scores = unit @ q
                top = np.argpartition(-scores, 5)[:5]
                return top[np.argsort(-scores[top])]

            def ours(i: int, store: MemoryStore = store, cues: np.ndarray = cues,
                     known: np.ndarray = known) -> None:
                store.recall(cues[i], k=5, known=known[i])

            items = range(cfg.warmup, cfg.warmup + cfg.queries)
            timed(ours, range(cfg.warmup))
            timed(naive, range(cfg.warmup))
            t_ours = percentiles(timed(ours, items))
            t_naive = percentiles(timed(naive, items))
            rows.append({"measure": f"recall P50 ms at {size:,}", "ours": t_ours["p50_ms"],
                         "naive": t_naive["p50_ms"], "ours/naive": t_ours["p50_ms"] / t_naive["p50_ms"],
                         "note": "full pipeline vs numpy brute-force top-5 (search only)"})
            rows.append({"measure": f"recall P95 ms at {size:,}", "ours": t_ours["p95_ms"],
                         "naive": t_naive["p95_ms"], "ours/naive": t_ours["p95_ms"] / t_naive["p95_ms"],
                         "note": ""})
            print(rows[-2], rows[-1], flush=True)
            variants = {f"sketch {cfg.sketch_dim} → {cfg.sketch_shortlist} exact":
                        RecallConfig(faiss_above=None, sketch_dim=cfg.sketch_dim,
                                     sketch_shortlist=cfg.sketch_shortlist)}
            if size >= 50_000:
                variants[f"faiss IVF nprobe {cfg.faiss_nprobe}"] = RecallConfig(
                    faiss_above=1, faiss_nprobe=cfg.faiss_nprobe)
            for name, variant in variants.items():
                fast = MemoryStore(tmp, dim=cfg.dim, durable=False, config=variant)
                start = time.perf_counter()
                fast.recall(cues[0], k=5, known=known[0])
                build = time.perf_counter() - start
                checked = min(100, cfg.queries)
                agree = np.mean([
                    fast.recall(cues[i], k=1, known=known[i]).trace["completion_winner"]
                    == store.recall(cues[i], k=1, known=known[i]).trace["completion_winner"]
                    for i in range(cfg.warmup, cfg.warmup + checked)
                ])
                t_fast = percentiles(timed(partial(ours, store=fast), items))
                rows.append({"measure": f"recall P50 ms at {size:,}, {name}", "ours": t_fast["p50_ms"],
                             "naive": t_naive["p50_ms"], "ours/naive": t_fast["p50_ms"] / t_naive["p50_ms"],
                             "note": f"winner agrees with exact on {agree:.0%} of {checked} cues; "
                                     f"first query (builds the index) {build:.2f} s"})
                rows.append({"measure": f"recall P95 ms at {size:,}, {name}", "ours": t_fast["p95_ms"],
                             "naive": t_naive["p95_ms"], "ours/naive": t_fast["p95_ms"] / t_naive["p95_ms"],
                             "note": ""})
                print(rows[-2], rows[-1], flush=True)
                fast.close()
            store.close()
    run.write_json("results.json", rows)
    run.write_csv("results.csv", rows)
    table = markdown_table(rows, ["measure", "ours", "naive", "ours/naive", "note"])
    run.write_report("# Memory engine speed (shared 2-core CPU)\n\n" + table)
    print(table)
    print(f"run folder: {run.path}")


if __name__ == "__main__":
    main()
