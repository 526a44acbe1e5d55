"""CA3 completion speed: Engram's kernels against a plain dense numpy implementation, timed
side by side in one run.

Setting A (the source's): 768 units, 5% sparse codes (k = 38), 100 stored patterns, cues
keeping 30% of the active units. Single-cue latency on one thread; batched completions per
second on all cores.
Setting B: 8,000 bipolar units, 900 patterns (α ≈ 0.11), cues with 800 flipped bits: time to
store, time per batched completion of 100 cues, peak memory.

Run: ``python benchmarks/ca3_completion.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

SOURCE_CLAIMS = "source: 2.8 ms per iteration, 14 ms P50, 19 ms P95, 50 completions/s per core"


def dense_numpy_complete(
    weights: np.ndarray, patterns: np.ndarray, cues: np.ndarray, k: int | None, steps: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """The plain implementation: full W·s every step (BLAS), k-WTA by argpartition or sign,
    stop at a fixed point, nearest stored pattern by a dense product. Returns (states, nearest)."""
    states = cues.astype(np.float32)
    live = np.arange(len(states))
    for _ in range(steps):
        h = states[live] @ weights
        if k is None:
            new = np.where(h > 0, 1.0, np.where(h < 0, -1.0, states[live])).astype(np.float32)
        else:
            winners = np.argpartition(-h, k, axis=1)[:, :k]
            new = np.zeros_like(h)
            np.put_along_axis(new, winners, 1.0, axis=1)
        moved = ~np.all(new == states[live], axis=1)
        states[live] = new
        live = live[moved]
        if live.size == 0:
            break
    nearest = np.argmax(states @ patterns.T, axis=1)
    return states, nearest


def _percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def setting_a(quick: bool) -> dict[str, float]:
    import torch
    from numba import set_num_threads

    from engram import codes
    from engram.ca3 import AttractorMemory

    rng = np.random.default_rng(0)
    n, a, p = 768, 0.05, 100
    patterns = codes.random_sparse(p, n, a, rng)
    memory = AttractorMemory(n, code="sparse", sparsity=a).store(patterns)
    k = memory.k
    weights = memory.weights.numpy()
    n_cues = 2_000 if quick else 20_000
    cues = np.concatenate([codes.partial_cue(patterns, 0.3, rng) for _ in range(n_cues // p)])
    truth = np.tile(np.arange(p), n_cues // p)
    memory.complete(cues[0])  # compile (cached on disk after the first run)
    memory.complete_batch(cues[:10])

    # single cue, one thread
    from threadpoolctl import threadpool_limits

    set_num_threads(1)
    torch.set_num_threads(1)
    blas = threadpool_limits(1)
    repeats = 2_000 if quick else 20_000
    ours, naive = [], []
    for i in range(repeats):
        cue = cues[i % len(cues)]
        t0 = time.perf_counter()
        memory.complete(cue)
        t1 = time.perf_counter()
        dense_numpy_complete(weights, patterns, cue[None], k)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        naive.append(t2 - t1)
    ours_p50, ours_p95 = _percentiles(ours)
    naive_p50, naive_p95 = _percentiles(naive)

    # batched, all cores
    blas.unregister()
    cores = os.cpu_count() or 1
    set_num_threads(cores)
    torch.set_num_threads(cores)
    rounds = 3
    best_ours = min(_timed(lambda: memory.complete_batch(cues)) for _ in range(rounds))
    result = memory.complete_batch(cues)
    best_naive = min(
        _timed(lambda: dense_numpy_complete(weights, patterns, cues, k)) for _ in range(rounds)
    )
    torch_memory = AttractorMemory(n, code="sparse", sparsity=a, update="sync")
    torch_memory.store(patterns)
    torch_memory._single_path = False  # force the torch path (the one CUDA uses) on the CPU
    best_torch = min(_timed(lambda: torch_memory.complete_batch(cues)) for _ in range(rounds))
    return {
        "single_p50_us": ours_p50 * 1e6,
        "single_p95_us": ours_p95 * 1e6,
        "naive_single_p50_us": naive_p50 * 1e6,
        "naive_single_p95_us": naive_p95 * 1e6,
        "batch_per_s": n_cues / best_ours,
        "naive_batch_per_s": n_cues / best_naive,
        "torch_batch_per_s": n_cues / best_torch,
        "batch_recall": float(np.mean(result.nearest == truth)),
        "batch_mean_iterations": float(result.iterations.mean()),
        "cores": cores,
    }


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def setting_b(implementation: str, quick: bool) -> dict[str, float]:
    """One implementation of setting B, in its own process so that peak memory is its own."""
    import torch

    from engram import codes
    from engram.ca3 import AttractorMemory

    rng = np.random.default_rng(1)
    n, p, flips, b = (2_000, 225, 200, 100) if quick else (8_000, 900, 800, 100)
    patterns = codes.random_bipolar(p, n, rng)
    cues = codes.flip_bits(patterns[:b], flips, rng)
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    if implementation == "engram":
        memory = AttractorMemory(n).store(patterns)
    else:
        x = patterns.astype(np.float32)
        weights = x.T @ x / n
        np.fill_diagonal(weights, 0)
    store_s = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        if implementation == "engram":
            result = memory.complete_batch(cues)
            states = result.states
        else:
            states, _ = dense_numpy_complete(weights, x, cues, None)
        times.append(time.perf_counter() - t0)
    distance = np.sum(states != patterns[:b], axis=1)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "store_s": store_s,
        "complete_100_s": min(times),
        "peak_rss_mb": peak_mb,
        "mean_bits_from_target": float(distance.mean()),
        "exact_recall": float(np.mean(distance == 0)),
    }
    if implementation == "engram":
        out["mean_iterations"] = float(result.iterations.mean())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--setting-b", choices=["engram", "numpy"], help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.setting_b:
        print(json.dumps(setting_b(args.setting_b, args.quick)))
        return 0

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    a = setting_a(args.quick)
    print("\nA. 768 units, 5% sparse (k=38), 100 patterns, cues keeping 30% of the active units")
    print(f"  single cue, 1 thread   P50 {a['single_p50_us']:8.1f} µs   P95 {a['single_p95_us']:8.1f} µs"
          f"   (dense numpy: P50 {a['naive_single_p50_us']:.1f} µs, P95 {a['naive_single_p95_us']:.1f} µs;"
          f" ratio P50 {a['naive_single_p50_us'] / a['single_p50_us']:.1f}×)")
    print(f"  batched, {a['cores']} cores      {a['batch_per_s']:10,.0f} completions/s"
          f"   (dense numpy: {a['naive_batch_per_s']:,.0f}/s; ratio "
          f"{a['batch_per_s'] / a['naive_batch_per_s']:.1f}×; torch path on CPU: "
          f"{a['torch_batch_per_s']:,.0f}/s)")
    print(f"  recall {a['batch_recall']:.1%}, mean iterations {a['batch_mean_iterations']:.2f}")
    print(f"  goal: P50 ≤ 30 µs, P95 ≤ 60 µs, ≥ 100,000/s; {SOURCE_CLAIMS}")

    b = {}
    for implementation in ("engram", "numpy"):
        command = [sys.executable, __file__, "--setting-b", implementation]
        if args.quick:
            command.append("--quick")
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        b[implementation] = json.loads(done.stdout.strip().splitlines()[-1])
    size = "2,000 units, 225 patterns, 200 flips" if args.quick else "8,000 units, 900 patterns, 800 flips"
    print(f"\nB. bipolar, {size}, Hebbian, batch of 100 cues")
    for name, row in b.items():
        print(f"  {name:7s} store {row['store_s']:6.2f} s"
              f"   complete 100 cues {row['complete_100_s']:6.3f} s"
              f"   peak RSS {row['peak_rss_mb']:7.0f} MB"
              f"   bits from target {row['mean_bits_from_target']:.1f}"
              f"   exact {row['exact_recall']:.0%}")
    ratio = b["numpy"]["complete_100_s"] / b["engram"]["complete_100_s"]
    print(f"  ratio (numpy / engram) complete: {ratio:.1f}×,"
          f" mean iterations {b['engram']['mean_iterations']:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"setting_a": a, "setting_b": b}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
