"""HTTP recall under concurrent clients on loopback: throughput, latency percentiles, errors.

Starts ``engram store serve`` (uvicorn, one worker) on 127.0.0.1 over a store of 10,000 episodes of
768 dimensions, then 1, 8, 32 and 128 concurrent clients (keep-alive connections of one asyncio
loop, each request encoded before timing) send partial-cue recalls; beside each, the same
clients against a trivial FastAPI endpoint (one uvicorn worker) that takes the same body and
answers a body of the same size, measured in the same run: what serving alone costs. The same
cues answered in-process, one after another, give the other reference, and ``recall_batch`` in
batches of 32 the best micro-batching can reach (both on one thread, as the server runs). The
load average is printed with every row.

    .venv/bin/python benchmarks/store_http.py [--out runs] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace

import httpx
import numpy as np
import orjson
import psutil
import torch
from threadpoolctl import threadpool_limits

from engram.codes import noisy_partial_cues
from engram.data.episodes import clustered_episodes
from engram.runs import RunFolder, markdown_table, seed_everything
from engram.store import MemoryStore
from engram.store.server import issue_key

WARMUP = 64  # recalls before any timing, in-process and per server


@dataclass(frozen=True)
class Config:
    episodes: int = 10_000
    dim: int = 768
    clients: tuple[int, ...] = (1, 8, 32, 128)
    requests: int = 640  # per client count, split evenly
    seed: int = 0
    workers: int = 1  # engine server processes (the trivial endpoint keeps one)


def trivial_app(reply_bytes: int):
    """A FastAPI app whose one route parses a JSON body and answers ``reply_bytes`` of JSON."""
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    app = FastAPI()
    reply = b'{"x":"' + b"0" * max(0, reply_bytes - 8) + b'"}'

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        orjson.loads(await request.body())  # the parser the engine's routes use
        return Response(reply, media_type="application/json")

    return app


def serve_trivial(port: int, reply_bytes: int) -> None:
    import uvicorn

    uvicorn.run(trivial_app(reply_bytes), host="127.0.0.1", port=port, log_level="warning")


def wait_for(url: str) -> None:
    for _ in range(300):
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)


def settled(server: subprocess.Popen, workers: int, timeout: float = 600.0) -> None:
    """Wait until the server runs ``workers`` processes (uvicorn's, not multiprocessing's
    tracker; the server itself when it runs one) and they sit idle: imported and listening."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parent = psutil.Process(server.pid)
        kids = [p for p in parent.children() if "resource_tracker" not in " ".join(p.cmdline())]
        procs = kids if workers > 1 else [parent]
        if len(procs) == workers:
            before = sum(sum(p.cpu_times()[:2]) for p in procs)
            time.sleep(1.0)
            if sum(sum(p.cpu_times()[:2]) for p in procs) - before < 0.05:
                return
        else:
            time.sleep(0.2)
    raise TimeoutError(f"the server did not settle into {workers} idle processes in {timeout:.0f} s")


def request_bytes(path: str, headers: dict[str, str], body: dict) -> bytes:
    """One HTTP/1.1 keep-alive POST of ``body`` as JSON, encoded once before timing."""
    payload = orjson.dumps(body)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on an open connection and read its whole answer; its status code."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status, *fields = head.decode("latin-1").split("\r\n")
    length = next((int(f.split(":", 1)[1]) for f in fields if f.lower().startswith("content-length:")), None)
    if length is None:  # every route measured answers with a length; anything else is a failure
        raise ValueError(f"answer without Content-Length: {status}")
    await reader.readexactly(length)
    return int(status.split(" ", 2)[1])


def hammer(port: int, path: str, headers: dict[str, str], bodies: list[dict], clients: int
           ) -> dict[str, float]:
    """``clients`` concurrent keep-alive connections share ``bodies``; throughput, percentiles,
    errors. One asyncio loop with the requests encoded before timing, so the client costs a small
    fraction of what the server does (threads of httpx cost more than the trivial endpoint and
    capped every figure near 250 requests/s on this machine)."""
    requests = [request_bytes(path, headers, body) for body in bodies]
    per = len(requests) // clients
    latencies: list[float] = []
    errors: list[str] = []

    async def client(c: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in requests[c * per : (c + 1) * per]:
                t0 = time.perf_counter()
                try:
                    status = await _exchange(reader, writer, request)
                    why = "" if status == 200 else str(status)
                except (OSError, ValueError, asyncio.IncompleteReadError) as error:
                    why = repr(error)
                latencies.append(time.perf_counter() - t0)
                if why:
                    errors.append(why)
                    if not why.isdigit():  # the connection is gone: open another
                        writer.close()
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    async def everyone() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        return time.perf_counter() - start

    wall = asyncio.run(everyone())
    ms = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "first_error": errors[0] if errors else "",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="engine server processes (serve --workers)")
    parser.add_argument(
        "--trivial-server", type=int, nargs=2, metavar=("PORT", "BYTES"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.trivial_server:
        serve_trivial(*args.trivial_server)
        return
    cfg = Config(seed=args.seed, workers=args.workers)
    if args.quick:
        cfg = replace(cfg, episodes=1000, dim=128, clients=(1, 8), requests=64)
    rng = seed_everything(cfg.seed)
    run = RunFolder.create(args.out, "store_http", asdict(cfg), cfg.seed)
    episodes, _ = clustered_episodes(cfg.episodes, cfg.dim, 100, 0.6, 16, rng)
    sources = rng.integers(0, cfg.episodes, cfg.requests)
    cues, known = noisy_partial_cues(episodes[sources], (0.3, 0.5), 0.5, rng)
    bodies = [{"cue": cues[i].tolist(), "known": known[i].tolist(), "k": 5} for i in range(cfg.requests)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        key = issue_key(tmp, "bench", dim=cfg.dim)
        # In-process references on one thread, as the server runs: one recall after another,
        # and recall_batch in batches of 32 (what micro-batching can reach at best).
        with MemoryStore(tmp, space="bench", durable=False) as store, threadpool_limits(1):
            torch.set_num_threads(1)
            store.add_batch(episodes)
            store.calibrate(samples=256)
            for i in range(WARMUP):  # the first recall builds the HNSW graph: not a recall's cost
                store.recall(cues[i % cfg.requests], k=5, known=known[i % cfg.requests])
            n = min(cfg.requests, 320)
            start = time.perf_counter()
            for i in range(n):
                store.recall(cues[i], k=5, known=known[i])
            direct_rps = n / (time.perf_counter() - start)
            start = time.perf_counter()
            for i in range(0, n, 32):
                store.recall_batch(cues[i : i + 32], k=5, known=known[i : i + 32])
            batch_rps = n / (time.perf_counter() - start)
        port, trivial_port = free_port(), free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "engram.cli", "store", "serve", "--path", tmp, "--port", str(port),
             "--workers", str(cfg.workers)],
            env=env,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/healthz")
            settled(server, cfg.workers)
            route = "/v1/spaces/bench/recall"
            url = f"http://127.0.0.1:{port}{route}"
            reply = len(httpx.post(url, json=bodies[0], headers={"X-API-Key": key}).content)
            trivial = subprocess.Popen(
                [sys.executable, __file__, "--trivial-server", str(trivial_port), str(reply)], env=env
            )
            try:
                wait_for(f"http://127.0.0.1:{trivial_port}/docs")
                # Warm both servers (the engine's first recalls load its graph) before timing.
                hammer(port, route, {"X-API-Key": key}, bodies[:WARMUP], 8)
                hammer(trivial_port, "/echo", {}, bodies[:WARMUP], 8)
                for clients in cfg.clients:
                    ours = hammer(port, route, {"X-API-Key": key}, bodies, clients)
                    bare = hammer(trivial_port, "/echo", {}, bodies, clients)
                    rows.append(
                        {
                            "clients": clients,
                            "requests": ours["requests"],
                            "errors": ours["errors"],
                            "recalls/s": ours["rps"],
                            "P50 ms": ours["p50_ms"],
                            "P95 ms": ours["p95_ms"],
                            "P99 ms": ours["p99_ms"],
                            "trivial endpoint req/s": bare["rps"],
                            "trivial P50 ms": bare["p50_ms"],
                            "÷ trivial": ours["rps"] / bare["rps"],
                            "in-process sequential recalls/s": direct_rps,
                            "in-process recall_batch(32) recalls/s": batch_rps,
                            "load": round(os.getloadavg()[0], 1),
                            "first error": ours["first_error"],
                        }
                    )
                    print(rows[-1], flush=True)
            finally:
                trivial.terminate()
                trivial.wait(timeout=30)
        finally:
            server.terminate()
            server.wait(timeout=30)
    run.write_json("results.json", rows)
    run.write_csv("results.csv", rows)
    table = markdown_table(rows)
    run.write_report(
        f"# HTTP recall under concurrent clients (loopback, shared 2-core CPU; {cfg.workers} engine "
        f"worker(s); body {reply:,} bytes answered)\n\n" + table
    )
    print(table)
    print(f"run folder: {run.path}")


if __name__ == "__main__":
    main()
