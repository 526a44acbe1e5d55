"""Generation speed beyond the block: greedy decoding of a long stream by the model's own
cached generation (its KV cache rebuilt from the last half block whenever the block fills)
against the sliding window with sinks and each memory of evicted tokens, and Transformer-XL-
style recurrence, side by side in one run, for the ~0.8M-parameter character model (4×128,
block 64; window 32 + 4 sinks, chunks of 16, memories of 64 entries per head and layer).

Two clocks: wall time and the process's CPU time (one thread). The arms run in turn within
each repeat and the best repeat of each is reported, with the load average of the machine.

    python benchmarks/lm_longcontext.py [--tokens 512] [--repeats 3] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from engram.lm.longcontext.arms import ARMS, Span, greedy, streamer
from engram.lm.model import HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.sample import SamplingConfig, generate


def speed(model: HippocampalTransformer, arm: str, span: Span, prompt: torch.Tensor, tokens: int):
    """(wall, CPU) new tokens per second of one greedy generation under ``arm``."""
    tic, tic_cpu = time.perf_counter(), time.process_time()
    if arm == "full":
        for _token in generate(model, prompt, tokens, SamplingConfig("greedy")):
            pass
    else:
        greedy(streamer(model, arm, span), prompt, tokens)
    return tokens / (time.perf_counter() - tic), tokens / (time.process_time() - tic_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", default="", help="a trained model's folder (default: random)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.checkpoint:
        from engram.lm.train import model_from_checkpoint

        model = model_from_checkpoint(args.checkpoint)[0]
    else:
        torch.manual_seed(0)
        config = HippocampalTransformerConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
        model = HippocampalTransformer(config).eval()
    span = Span()
    prompt = torch.tensor([[5, 6, 7, 8]])
    arms = list(ARMS)
    for arm in arms:
        speed(model, arm, span, prompt, 24)  # warm-up
    best = {arm: (0.0, 0.0) for arm in arms}
    for _ in range(args.repeats):
        for arm in arms:
            w, c = speed(model, arm, span, prompt, args.tokens)
            best[arm] = (max(best[arm][0], w), max(best[arm][1], c))
    print(
        f"greedy generation of {args.tokens} new tokens, batch 1, one thread, best of "
        f"{args.repeats}; load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'arm':<14}{'wall tok/s':>12}{'CPU tok/s':>12}{'CPU vs full':>13}")
    for arm in arms:
        w, c = best[arm]
        print(f"{arm:<14}{w:>12,.0f}{c:>12,.0f}{c / best['full'][1]:>12.2f}x")


if __name__ == "__main__":
    main()
