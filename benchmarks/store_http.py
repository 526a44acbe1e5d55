"""HTTP recall under concurrent clients on loopback: throughput, latency percentiles, errors.

Starts ``engram store serve`` (uvicorn, one worker) on 127.0.0.1 over a store of 10,000 episodes of
768 dimensions, then 32 client threads (httpx, one connection each) send partial-cue recalls
for a fixed number of requests. The same cues answered in-process, one after another, give
the reference: what the HTTP layer costs.

    .venv/bin/python benchmarks/store_http.py [--out runs] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace

import httpx
import numpy as np

from engram.data.episodes import clustered_episodes, partial_noisy_cues
from engram.runs import RunFolder, markdown_table, seed_everything
from engram.store import MemoryStore
from engram.store.server import issue_key


@dataclass(frozen=True)
class Config:
    episodes: int = 10_000
    dim: int = 768
    clients: int = 32
    requests_per_client: int = 40
    seed: int = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cfg = Config(seed=args.seed)
    if args.quick:
        cfg = replace(cfg, episodes=1000, dim=128, clients=8, requests_per_client=10)
    rng = seed_everything(cfg.seed)
    run = RunFolder.create(args.out, "store_http", asdict(cfg), cfg.seed)
    episodes, _ = clustered_episodes(cfg.episodes, cfg.dim, 100, 0.6, 16, rng)
    total = cfg.clients * cfg.requests_per_client
    sources = rng.integers(0, cfg.episodes, total)
    cues, known = partial_noisy_cues(episodes[sources], (0.3, 0.5), 0.5, rng)
    with tempfile.TemporaryDirectory() as tmp:
        key = issue_key(tmp, "bench", dim=cfg.dim)
        with MemoryStore(tmp, space="bench", durable=False) as store:
            store.add_batch(episodes)
            store.calibrate(samples=256)
            start = time.perf_counter()
            for i in range(min(total, 300)):
                store.recall(cues[i], k=5, known=known[i])
            direct_rps = min(total, 300) / (time.perf_counter() - start)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "engram.cli", "serve", "--path", tmp, "--port", str(port)],
            env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"),
        )
        url = f"http://127.0.0.1:{port}/v1/spaces/bench/recall"
        try:
            for _ in range(200):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()
            bodies = [{"cue": cues[i].tolist(), "known": known[i].tolist(), "k": 5} for i in range(total)]

            def client(c: int) -> None:
                with httpx.Client(headers={"X-API-Key": key}, timeout=30.0) as http:
                    for j in range(cfg.requests_per_client):
                        body = bodies[c * cfg.requests_per_client + j]
                        t0 = time.perf_counter()
                        try:
                            r = http.post(url, json=body)
                            ok = r.status_code == 200
                        except httpx.HTTPError as error:
                            ok, r = False, error
                        dt = time.perf_counter() - t0
                        with lock:
                            latencies.append(dt)
                            if not ok:
                                errors.append(str(r))

            threads = [threading.Thread(target=client, args=(c,)) for c in range(cfg.clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(timeout=30)
    ms = np.array(latencies) * 1e3
    rows = [{
        "clients": cfg.clients, "requests": total, "errors": len(errors),
        "throughput_rps": total / wall, "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
        "direct_in_process_rps": direct_rps, "http/direct": total / wall / direct_rps,
    }]
    run.write_json("results.json", {"rows": rows, "first_errors": errors[:5]})
    run.write_csv("results.csv", rows)
    table = markdown_table(rows)
    run.write_report("# HTTP recall under concurrent clients (loopback, shared 2-core CPU)\n\n" + table)
    print(table)
    print(f"run folder: {run.path}")


if __name__ == "__main__":
    main()
