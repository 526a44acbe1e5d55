"""Hippocampal overhead: training tokens per second of each variant against the plain GPT,
measured side by side in one process: the variants take single training steps in turn, so
that load from other processes falls on all of them alike; median over every timed step.

    python benchmarks/lm_overhead.py [--rounds 5] [--steps 10] [--threads 1] [--size 1m|10m]

``baseline-matched`` (the plain GPT with its MLP widened to the all-parts parameter count,
as in the ablation) gives the overhead of all parts at equal parameters as well.
``--size 10m`` measures the GPU configuration (6 layers, 6 heads, 384 wide, block 256) on the
CPU, where the parts' fixed costs weigh less against the larger matrix products.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from engram.lm.experiments.ablation import MATCHED, variant_model
from engram.lm.model import PARTS, HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.train import TrainConfig, build_optimizer

VARIANTS = {"baseline": (), **{p: (p,) for p in PARTS}, "all": PARTS, MATCHED: ()}
SIZES = {
    "1m": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64},
    "10m": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds × steps timed steps each")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--size", choices=tuple(SIZES), default="1m")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="baseline is always run")
    args = parser.parse_args()
    names = ["baseline"] + [v for v in args.variants.split(",") if v and v != "baseline"]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; expected names from {list(VARIANTS)}")
    size = SIZES[args.size]
    block = size["block_size"]
    torch.set_num_threads(args.threads)
    vocab = [chr(32 + i) for i in range(64)] + ["\n"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(len(vocab), (args.batch, block), generator=gen)
    y = torch.randint(len(vocab), (args.batch, block), generator=gen)
    models, opts = {}, {}
    for name in names:
        torch.manual_seed(0)
        cfg = HippocampalTransformerConfig(**variant_model({**size, "vocab_size": len(vocab)}, name))
        models[name] = HippocampalTransformer(cfg, vocab)
        opts[name] = build_optimizer(models[name], TrainConfig())  # as training builds it

    def step(name: str) -> None:
        loss = models[name](x, y).loss
        loss.backward()
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)

    for name in names:  # warm-up
        for _ in range(3):
            step(name)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds * args.steps):
        for name in names:
            tic, tic_cpu = time.perf_counter(), time.process_time()
            step(name)
            wall[name].append(time.perf_counter() - tic)
            cpu[name].append(time.process_time() - tic_cpu)
    tokens = args.batch * block
    shape = f"{size['n_layer']}x{size['n_embd']}"
    print(
        f"training tokens/s, {shape} model, batch {args.batch}x{block}, {args.threads} thread(s), "
        f"median of {args.rounds * args.steps} steps taken in turn; "
        "by wall clock and by process CPU time (median and fastest step)"
    )
    print(
        f"{'variant':<17}{'params':>10}{'wall tok/s':>12}{'overhead':>10}"
        f"{'CPU tok/s':>12}{'overhead':>10}{'best-step CPU':>15}{'overhead':>10}"
    )
    # the fastest step is the least disturbed by other processes: a second, load-robust view
    base = [statistics.median(wall["baseline"]), statistics.median(cpu["baseline"])]
    base.append(min(cpu["baseline"]))
    for name in names:
        w, c, b = statistics.median(wall[name]), statistics.median(cpu[name]), min(cpu[name])
        print(
            f"{name:<17}{models[name].num_params():>10,}{tokens / w:>12,.0f}"
            f"{(w / base[0] - 1) * 100:>9.1f}%{tokens / c:>12,.0f}"
            f"{(c / base[1] - 1) * 100:>9.1f}%{tokens / b:>15,.0f}{(b / base[2] - 1) * 100:>9.1f}%"
        )
    if "all" in names and MATCHED in names:
        ratios = [
            statistics.median(wall["all"]) / statistics.median(wall[MATCHED]),
            statistics.median(cpu["all"]) / statistics.median(cpu[MATCHED]),
            min(cpu["all"]) / min(cpu[MATCHED]),
        ]
        print(
            f"all vs {MATCHED} (equal parameters): wall {(ratios[0] - 1) * 100:+.1f}%, "
            f"CPU {(ratios[1] - 1) * 100:+.1f}%, best-step CPU {(ratios[2] - 1) * 100:+.1f}%"
        )


if __name__ == "__main__":
    main()
