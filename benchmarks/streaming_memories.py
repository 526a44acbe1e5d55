"""Parallel form vs the token-by-token reference, per eviction memory, in one run.

    .venv/bin/python benchmarks/streaming_memories.py [--length 64] [--batch 16] [--repeats 3]

Prints tokens/s of the parallel (training) form and of the streaming reference for every
memory kind, their ratio, and each parallel form's speed relative to window-only attention.
"""

from __future__ import annotations

import argparse
import time

import torch

from engram.streaming import MEMORY_KINDS, StreamingConfig, StreamingTransformer


def _tokens_per_second(fn, tokens: torch.Tensor, repeats: int) -> float:
    fn(tokens)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(tokens)
    return repeats * tokens.numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokens = torch.randint(0, 64, (args.batch, args.length))
    rows = []
    for kind in MEMORY_KINDS:
        cfg = StreamingConfig(vocab_size=64, window=args.window, memory=kind, knn_capacity=None)
        model = StreamingTransformer(cfg).eval()
        with torch.no_grad():
            parallel = _tokens_per_second(model, tokens, args.repeats)
            streaming = _tokens_per_second(model.stream, tokens, 1)
        rows.append((kind, parallel, streaming))
    base = rows[0][1]
    print(
        f"shared 2-core CPU, {args.threads} thread(s); batch {args.batch} × length "
        f"{args.length}, window {args.window}, d_model 64, 2 layers"
    )
    print(
        f"{'memory':<15}{'parallel tok/s':>16}{'stream tok/s':>14}{'parallel/stream':>17}"
        f"{'vs window':>11}"
    )
    for kind, parallel, streaming in rows:
        print(
            f"{kind:<15}{parallel:>16.0f}{streaming:>14.0f}{parallel / streaming:>17.1f}"
            f"{parallel / base:>11.2f}"
        )


if __name__ == "__main__":
    main()
