"""Generation speed: greedy decoding with the KV cache against recomputing the whole context
every step (no cache), side by side in one run, for the ~0.8M-parameter character model.

Two clocks: wall time, and the process's CPU time (one thread), which is what decoding costs
on an idle core; on a shared machine the wall clock also counts time spent waiting for a core.

    python benchmarks/lm_generation.py [--tokens 256] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from engram.lm.model import GPT, PARTS, GPTConfig
from engram.lm.sample import SamplingConfig, generate


def speed(model: GPT, prompt: torch.Tensor, tokens: int, cache: bool, repeats: int):
    """Best (wall, CPU) new tokens per second over ``repeats`` runs."""
    wall = cpu = 0.0
    for _ in range(repeats):
        tic, tic_cpu = time.perf_counter(), time.process_time()
        for _token in generate(model, prompt, tokens, SamplingConfig("greedy"), use_cache=cache):
            pass
        wall = max(wall, tokens / (time.perf_counter() - tic))
        cpu = max(cpu, tokens / (time.process_time() - tic_cpu))
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vocab = [chr(32 + i) for i in range(64)] + ["\n"]
    prompt = torch.tensor([[5, 6, 7, 8]])
    print(
        f"greedy generation of {args.tokens} new tokens, batch 1, {args.threads} thread(s), "
        f"best of {args.repeats}; new tokens per second by wall clock / by CPU time"
    )
    header = ("model", "params", "cached", "uncached", "cache speed-up")
    print(f"{header[0]:<28}{header[1]:>9}{header[2]:>16}{header[3]:>16}{header[4]:>18}")
    for block in (64, 256):
        for name, parts in (("baseline", ()), ("all parts", PARTS)):
            torch.manual_seed(0)
            cfg = GPTConfig(
                vocab_size=len(vocab),
                block_size=block,
                n_layer=4,
                n_head=4,
                n_embd=128,
                parts=parts,
            )
            model = GPT(cfg, vocab).eval()
            speed(model, prompt, 16, True, 1)  # warm-up
            cw, cc = speed(model, prompt, args.tokens, True, args.repeats)
            uw, uc = speed(model, prompt, args.tokens, False, args.repeats)
            label = f"4x128 block {block} {name}"
            cached, uncached = f"{cw:,.0f} / {cc:,.0f}", f"{uw:,.0f} / {uc:,.0f}"
            ratio = f"{cw / uw:.1f}x / {cc / uc:.1f}x"
            print(f"{label:<28}{model.num_params():>9,}{cached:>16}{uncached:>16}{ratio:>18}")


if __name__ == "__main__":
    main()
