"""EpisodicBuffer: batched reservoir insertion vs a naive per-item Python reservoir.

Run: ``python benchmarks/replay_buffer.py`` (prints items/second of both and the ratio).
"""

from __future__ import annotations

import random
import time

import torch

from engram.replay import EpisodicBuffer


def naive_reservoir(stream: torch.Tensor, labels: torch.Tensor, capacity: int) -> list:
    """The textbook loop: one item at a time into a Python list."""
    kept: list = []
    rng = random.Random(0)
    for seen, (x, y) in enumerate(zip(stream, labels, strict=True)):
        if len(kept) < capacity:
            kept.append((x.clone(), int(y)))
        else:
            j = rng.randint(0, seen)
            if j < capacity:
                kept[j] = (x.clone(), int(y))
    return kept


def main() -> None:
    torch.set_num_threads(1)
    n, batch, capacity = 60_000, 128, 1000
    stream, labels = torch.rand(n, 784), torch.randint(10, (n,))
    start = time.perf_counter()
    buf = EpisodicBuffer(capacity)
    for i in range(0, n, batch):
        buf.add(stream[i : i + batch], labels[i : i + batch])
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    naive_reservoir(stream, labels, capacity)
    t_naive = time.perf_counter() - start
    print(f"reservoir insert of {n} MNIST-sized items, capacity {capacity}: EpisodicBuffer "
          f"{n / t_ours:,.0f} items/s, naive loop {n / t_naive:,.0f} items/s, "
          f"ratio ×{t_naive / t_ours:.1f}")
    start = time.perf_counter()
    for _ in range(1000):
        buf.sample(128, mode="prioritized")
    print(f"prioritized sample of 128 from {capacity}: {(time.perf_counter() - start):.3f} ms each")


if __name__ == "__main__":
    main()
