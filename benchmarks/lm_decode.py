"""Decoding speed of all hippocampal parts against the plain GPT, side by side in one run:
KV-cached greedy decoding of the ~0.8M-parameter character model, with the folded decoding
tables (``fused``, the default) and without them (``step-by-step``, the path before them).

Reported: new tokens per second by wall clock and by the process's CPU time (one thread), each
variant's ratio to the plain GPT's, and the load average before and after. The variants run
in turn within each repeat, so that load from other processes falls on all of them alike; the
median repeat of each is reported (and the best, as a load-robust second view).

    python benchmarks/lm_decode.py [--tokens 200] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from engram.lm.model import PARTS, HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.sample import SamplingConfig, generate


def speed(model: HippocampalTransformer, prompt: torch.Tensor, tokens: int) -> tuple[float, float]:
    """(wall, CPU) new tokens per second of one cached greedy generation."""
    tic, tic_cpu = time.perf_counter(), time.process_time()
    for _token in generate(model, prompt, tokens, SamplingConfig("greedy")):
        pass
    return tokens / (time.perf_counter() - tic), tokens / (time.process_time() - tic_cpu)


def models(block: int, vocab: list[str]) -> dict[str, HippocampalTransformer]:
    """The plain GPT, all parts folded, and all parts step by step (the same weights)."""
    out = {}
    for name, parts in (("plain GPT", ()), ("all parts, fused", PARTS)):
        torch.manual_seed(0)
        config = HippocampalTransformerConfig(
            vocab_size=len(vocab), block_size=block, n_layer=4, n_head=4, n_embd=128, parts=parts
        )
        out[name] = HippocampalTransformer(config, vocab).eval()
    eager = HippocampalTransformer(out["all parts, fused"].config, vocab).eval()
    eager.load_state_dict(out["all parts, fused"].state_dict())
    eager.fused_decoding = False
    out["all parts, step-by-step"] = eager
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vocab = [chr(32 + i) for i in range(64)] + ["\n"]
    prompt = torch.tensor([[5, 6, 7, 8]])
    load_before = os.getloadavg()
    print(
        f"cached greedy decoding of {args.tokens} new tokens, batch 1, {args.threads} thread(s), "
        f"{args.repeats} repeats; load average before {load_before[0]:.2f} {load_before[1]:.2f}"
    )
    for block in (64, 256):
        variants = models(block, vocab)
        with torch.inference_mode():  # the fused decode equals the step-by-step one
            a = torch.stack(list(generate(variants["all parts, fused"], prompt, 60)))
            b = torch.stack(list(generate(variants["all parts, step-by-step"], prompt, 60)))
        assert torch.equal(a, b), "fused and step-by-step decoding chose different tokens"
        for model in variants.values():
            speed(model, prompt, 16)  # warm-up (and the tables are folded once)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, model in variants.items():
                runs[name].append(speed(model, prompt, args.tokens))
        plain_wall = statistics.median(w for w, _ in runs["plain GPT"])
        plain_cpu = statistics.median(c for _, c in runs["plain GPT"])
        plain_best = max(c for _, c in runs["plain GPT"])
        print(f"\nblock {block}")
        header = ("variant", "wall tok/s", "CPU tok/s", "ratio wall", "ratio CPU", "ratio best")
        print(f"{header[0]:<26}" + "".join(f"{h:>12}" for h in header[1:]))
        for name in variants:
            wall = statistics.median(w for w, _ in runs[name])
            cpu = statistics.median(c for _, c in runs[name])
            best = max(c for _, c in runs[name])
            print(
                f"{name:<26}{wall:>12,.0f}{cpu:>12,.0f}{wall / plain_wall:>12.2f}"
                f"{cpu / plain_cpu:>12.2f}{best / plain_best:>12.2f}"
            )
    load_after = os.getloadavg()
    print(f"\nload average after {load_after[0]:.2f} {load_after[1]:.2f}")


if __name__ == "__main__":
    main()
