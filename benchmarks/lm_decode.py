"""Decoding speed of all hippocampal parts against the plain GPT, side by side in one run:
KV-cached greedy decoding of the ~0.8M-parameter character model, with the folded decoding
tables (``fused``, the default) and without them (``step-by-step``, the path before them);
with ``--compile``, also both models with ``compile_decoding()`` (torch.compile, inductor),
and with ``--cpp-wrapper`` as well, compiled with inductor's C++ wrapper.

Reported: new tokens per second by wall clock and by the process's CPU time (one thread), each
variant's ratio to the eager plain GPT's and to the plain GPT compiled as it is, the CPU time
the compiled variants' first generation took (compilation included) and the load average
before and after. The variants run in turn within each repeat, so that load from other
processes falls on all of them alike; the median repeat of each is reported (and the best,
as a load-robust second view).

    python benchmarks/lm_decode.py [--tokens 200] [--repeats 7] [--threads 1] [--compile [--cpp-wrapper]]
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


def models(
    block: int, vocab: list[str], compiled: bool, cpp_wrapper: bool
) -> dict[str, HippocampalTransformer]:
    """The plain GPT, all parts folded, all parts step by step (the same weights), and with
    ``compiled`` the plain GPT and all parts folded, compiled (also with inductor's C++
    wrapper with ``cpp_wrapper``)."""
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
    kinds = {"compiled": None, "compiled C++": {"cpp_wrapper": True}}
    for kind, options in kinds.items():
        if not compiled or (options is not None and not cpp_wrapper):
            continue
        for name in ("plain GPT", "all parts, fused"):
            model = HippocampalTransformer(out[name].config, vocab).eval()
            model.load_state_dict(out[name].state_dict())
            model.compile_decoding(options=options)
            out[f"{name}, {kind}"] = model
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", default="64,256", help="block sizes, comma-separated")
    parser.add_argument("--compile", action="store_true", help="add the compiled variants")
    parser.add_argument(
        "--cpp-wrapper", action="store_true", help="with --compile: also with the C++ wrapper"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vocab = [chr(32 + i) for i in range(64)] + ["\n"]
    prompt = torch.tensor([[5, 6, 7, 8]])
    load_before = os.getloadavg()
    print(
        f"cached greedy decoding of {args.tokens} new tokens, batch 1, {args.threads} thread(s), "
        f"{args.repeats} repeats; load average before {load_before[0]:.2f} {load_before[1]:.2f}"
    )
    for block in (int(b) for b in args.blocks.split(",")):
        variants = models(block, vocab, args.compile, args.cpp_wrapper)
        first: dict[str, float] = {}
        for name, model in variants.items():  # warm-up, through every position a run reaches
            tic = time.process_time()
            speed(model, prompt, args.tokens if "compiled" in name else 16)
            first[name] = time.process_time() - tic
        with torch.inference_mode():  # every path chooses the step-by-step path's tokens
            reference = torch.stack(list(generate(variants["all parts, step-by-step"], prompt, 60)))
            for name in variants:
                if name.startswith("all parts, fused"):
                    chosen = torch.stack(list(generate(variants[name], prompt, 60)))
                    assert torch.equal(chosen, reference), f"{name} chose different tokens"
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, model in variants.items():
                runs[name].append(speed(model, prompt, args.tokens))
        wall = {n: statistics.median(w for w, _ in r) for n, r in runs.items()}
        cpu = {n: statistics.median(c for _, c in r) for n, r in runs.items()}
        best = {n: max(c for _, c in r) for n, r in runs.items()}
        print(f"\nblock {block} (ratio own: to the plain GPT compiled as the variant is)")
        header = ("wall tok/s", "CPU tok/s", "ratio wall", "ratio CPU", "ratio best", "ratio own")
        print(f"{'variant':<30}" + "".join(f"{h:>12}" for h in header))
        for name in variants:
            own = "plain GPT" + name[name.find(", compiled") :] if "compiled" in name else "plain GPT"
            print(
                f"{name:<30}{wall[name]:>12,.0f}{cpu[name]:>12,.0f}"
                f"{wall[name] / wall['plain GPT']:>12.2f}{cpu[name] / cpu['plain GPT']:>12.2f}"
                f"{best[name] / best['plain GPT']:>12.2f}{cpu[name] / cpu[own]:>12.2f}"
            )
        for name in variants:
            if "compiled" in name:
                print(f"first generation of {name} (compilation included): {first[name]:.1f} s CPU")
    load_after = os.getloadavg()
    print(f"\nload average after {load_after[0]:.2f} {load_after[1]:.2f}")


if __name__ == "__main__":
    main()
