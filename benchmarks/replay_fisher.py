"""Fisher diagonal for EWC: per-sample gradients with torch.func (vmap) vs a backward loop.

Run: ``python benchmarks/replay_fisher.py`` (prints both timings and their ratio, and the
largest difference between the two results).
"""

from __future__ import annotations

import time

import torch

from engram.replay import fisher_diagonal, fisher_diagonal_loop
from engram.replay.experiments.continual_train import mlp


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    for hidden, n in ((100, 512), (400, 512)):
        model = mlp(784, hidden, 10)
        x, y = torch.rand(n, 784), torch.randint(10, (n,))
        fast = fisher_diagonal(model, x, y)
        slow = fisher_diagonal_loop(model, x, y)
        err = max(float((fast[k] - slow[k]).abs().max()) for k in fast)
        t_fast = best_of(lambda m=model, a=x, b=y: fisher_diagonal(m, a, b))
        t_slow = best_of(lambda m=model, a=x, b=y: fisher_diagonal_loop(m, a, b))
        print(f"MLP 784-{hidden}-{hidden}-10, {n} samples, 1 thread: torch.func {t_fast:.3f}s, "
              f"loop {t_slow:.3f}s, speed-up ×{t_slow / t_fast:.1f}, max |diff| {err:.2e}")


if __name__ == "__main__":
    main()
