"""Generation speed: greedy decoding with the KV cache against recomputing the whole context
every step (no cache), side by side in one run, for the ~0.8M-parameter character model.

Two clocks: wall time, and the process's CPU time (one thread), which is what decoding costs
on an idle core; on a shared machine the wall clock also counts time spent waiting for a core.
The configurations run in turn within each repeat and the best repeat of each is reported.

    python benchmarks/lm_generation.py [--tokens 256] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from engram.lm.model import PARTS, HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.sample import SamplingConfig, generate


def speed(
    model: HippocampalTransformer, prompt: torch.Tensor, tokens: int, cache: bool
) -> tuple[float, float]:
    """(wall, CPU) new tokens per second of one greedy generation."""
    tic, tic_cpu = time.perf_counter(), time.process_time()
    for _token in generate(model, prompt, tokens, SamplingConfig("greedy"), use_cache=cache):
        pass
    return tokens / (time.perf_counter() - tic), tokens / (time.process_time() - tic_cpu)


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
    models = {}
    for block in (64, 256):
        for name, parts in (("baseline", ()), ("all parts", PARTS)):
            torch.manual_seed(0)
            cfg = HippocampalTransformerConfig(
                vocab_size=len(vocab),
                block_size=block,
                n_layer=4,
                n_head=4,
                n_embd=128,
                parts=parts,
            )
            models[f"4x128 block {block} {name}"] = HippocampalTransformer(cfg, vocab).eval()
    for model in models.values():
        speed(model, prompt, 16, True)  # warm-up
    # every configuration runs once per repeat, in turn, so that bursts of load from other
    # processes fall on all of them alike; the best repeat of each is kept
    best = {(label, cache): (0.0, 0.0) for label in models for cache in (True, False)}
    for _ in range(args.repeats):
        for label, model in models.items():
            for cache in (True, False):
                w, c = speed(model, prompt, args.tokens, cache)
                best[label, cache] = (max(best[label, cache][0], w), max(best[label, cache][1], c))
    for label, model in models.items():
        (cw, cc), (uw, uc) = best[label, True], best[label, False]
        cached, uncached = f"{cw:,.0f} / {cc:,.0f}", f"{uw:,.0f} / {uc:,.0f}"
        ratio = f"{cw / uw:.1f}x / {cc / uc:.1f}x"
        print(f"{label:<28}{model.num_params():>9,}{cached:>16}{uncached:>16}{ratio:>18}")

if __name__ == "__main__":
    main()
