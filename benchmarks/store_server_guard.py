"""What hostile requests cost the server: memory for an unauthenticated oversized POST, time of a
wrong-key request on a large space.

Starts ``engram store serve`` (uvicorn, one worker) on 127.0.0.1 over a space of 200,000 episodes of
256 dimensions, then sends (1) a 64 MiB POST without a key and (2) a request with a wrong key,
reading the server's resident memory (VmRSS, peak VmHWM from /proc) after each.

    .venv/bin/python benchmarks/store_server_guard.py [--out runs] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx

from engram.runs import RunFolder, markdown_table, seed_everything
from engram.store import MemoryStore
from engram.store.server import issue_key


@dataclass(frozen=True)
class Config:
    episodes: int = 200_000
    dim: int = 256
    body_mib: int = 64
    seed: int = 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mib(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process, in MiB (Linux)."""
    text = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cfg = Config(seed=args.seed)
    if args.quick:
        cfg = replace(cfg, episodes=10_000, body_mib=16)
    rng = seed_everything(cfg.seed)
    run = RunFolder.create(args.out, "store_server_guard", asdict(cfg), cfg.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        issue_key(tmp, "big", dim=cfg.dim)
        with MemoryStore(tmp, space="big", durable=False) as store:
            for start in range(0, cfg.episodes, 10_000):
                store.add_batch(rng.standard_normal((min(10_000, cfg.episodes - start), cfg.dim)))
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "engram.cli", "store", "serve", "--path", tmp, "--port", str(port)],
            env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(f"{base}/healthz", timeout=1.0)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            idle = memory_mib(server.pid)
            body = b'{"embedding": [' + b"0.1234567, " * (cfg.body_mib * 2**20 // 11) + b"0.1]}"
            for name, send in [
                (f"{cfg.body_mib} MiB POST, no key", lambda: httpx.post(
                    f"{base}/v1/spaces/big/episodes", content=body, timeout=120,
                    headers={"content-type": "application/json"})),
                (f"GET stats, wrong key ({cfg.episodes:,} × {cfg.dim})", lambda: httpx.get(
                    f"{base}/v1/spaces/big/stats", headers={"X-API-Key": "wrong"}, timeout=120)),
            ]:
                t0 = time.perf_counter()
                status = send().status_code
                seconds = time.perf_counter() - t0
                after = memory_mib(server.pid)
                rows.append({"request": name, "status": status, "seconds": seconds,
                             "rss_idle_mib": idle["VmRSS"], "rss_after_mib": after["VmRSS"],
                             "peak_mib": after["VmHWM"]})
        finally:
            server.terminate()
            server.wait(timeout=30)
    run.write_json("results.json", {"rows": rows})
    run.write_csv("results.csv", rows)
    table = markdown_table(rows)
    run.write_report("# What hostile requests cost the server (loopback, shared 2-core CPU)\n\n" + table)
    print(table)
    print(f"run folder: {run.path}")


if __name__ == "__main__":
    main()
