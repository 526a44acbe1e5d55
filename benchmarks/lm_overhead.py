"""Hippocampal overhead: training tokens per second of each variant against the plain GPT,
measured side by side in one process (interleaved rounds, median of rounds).

    python benchmarks/lm_overhead.py [--rounds 5] [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from engram.lm.model import GPT, PARTS, GPTConfig
from engram.lm.train import TrainConfig, build_optimizer

VARIANTS = {"baseline": (), **{p: (p,) for p in PARTS}, "all": PARTS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vocab = [chr(32 + i) for i in range(64)] + ["\n"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(len(vocab), (args.batch, 64), generator=gen)
    y = torch.randint(len(vocab), (args.batch, 64), generator=gen)
    models, opts = {}, {}
    for name, parts in VARIANTS.items():
        torch.manual_seed(0)
        cfg = GPTConfig(
            vocab_size=len(vocab), block_size=64, n_layer=4, n_head=4, n_embd=128, parts=parts
        )
        models[name] = GPT(cfg, vocab)
        opts[name] = build_optimizer(models[name], TrainConfig())  # as training builds it

    def step(name: str) -> None:
        loss = models[name](x, y).loss
        loss.backward()
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)

    for name in VARIANTS:  # warm-up
        for _ in range(3):
            step(name)
    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            tic, tic_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step(name)
            wall[name].append((time.perf_counter() - tic) / args.steps)
            cpu[name].append((time.process_time() - tic_cpu) / args.steps)
    tokens = args.batch * 64
    print(
        f"training tokens/s, 4x128 model, batch {args.batch}x64, {args.threads} thread(s), "
        f"median of {args.rounds} interleaved rounds x {args.steps} steps; "
        "by wall clock and by process CPU time"
    )
    print(
        f"{'variant':<12}{'params':>10}{'wall tok/s':>12}{'overhead':>10}"
        f"{'CPU tok/s':>12}{'overhead':>10}"
    )
    base_wall, base_cpu = statistics.median(wall["baseline"]), statistics.median(cpu["baseline"])
    for name in VARIANTS:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"{name:<12}{models[name].num_params():>10,}{tokens / w:>12,.0f}"
            f"{(w / base_wall - 1) * 100:>9.1f}%{tokens / c:>12,.0f}"
            f"{(c / base_cpu - 1) * 100:>9.1f}%"
        )


if __name__ == "__main__":
    main()
