"""The measured ablation on tiny shakespeare: the plain GPT (~0.8M parameters, nanoGPT's CPU
recipe 4×128, block 64, batch 12) against each hippocampal part and all of them, same data,
optimiser, budget and seeds. Writes a run folder under runs/ and prints the report's table.

    python benchmarks/lm_ablation.py [--steps 1000] [--seeds 0,1,2] [--workers 2]

An interrupted ablation is reported from its finished runs with
``engram lm ablate --resume runs/lm-ablation-<stamp> --no-train``.
"""

from __future__ import annotations

import argparse

from engram.cli import main as engram


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="1000")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", default="2")
    args = parser.parse_args()
    return engram(
        [
            "lm",
            "ablate",
            "--steps",
            args.steps,
            "--seeds",
            args.seeds,
            "--workers",
            args.workers,
            "--eval-interval",
            "100",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
