"""The demo: pattern completion on scikit-learn's bundled digits, and the source's CA3 claims
measured now, each with the conditions it was measured under (``engram demo``).

Digits are strongly correlated (class prototypes overlap by up to 0.8), which is where the
Hebbian rule fails and the pseudo-inverse rule is needed; the claims table uses random
patterns, the setting the source's figures were stated for.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from engram import codes
from engram.ca3 import AttractorMemory, BatchCompletion
from engram.data import load_digits_patterns
from engram.errors import ConfigError
from engram.runs import Claim, Result, RunFolder, markdown_table, progress, seed_everything


@dataclass(frozen=True)
class Config:
    """Sizes of the demo; the defaults finish in well under a minute on 2 cores."""

    seed: int = 0
    side: int = 16  # digits upsampled to side × side units
    rule: str = "pseudoinverse"
    flip_fraction: float = 0.15
    keep_fraction: float = 0.5
    sparse_units: int = 768
    sparse_level: float = 0.05
    sparse_patterns: tuple[int, ...] = (100, 400)
    cue_fractions: tuple[float, ...] = (0.03, 0.05, 0.1, 0.2, 0.3, 0.5)
    capacity_units: int = 400
    capacity_loads: tuple[float, ...] = (0.05, 0.08, 0.1, 0.12, 0.13, 0.14, 0.15, 0.16, 0.18, 0.2)
    cues_per_condition: int = 300

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"seed: expected a non-negative integer, got {self.seed!r}")


QUICK = Config(side=8, sparse_units=256, sparse_patterns=(20,), cue_fractions=(0.1, 0.3),
               capacity_units=128, capacity_loads=(0.05, 0.2), cues_per_condition=40)


def _recalled(result: BatchCompletion, targets: np.ndarray) -> np.ndarray:
    """Recall = the settled state is the target's basin: nearest is right and overlap ≥ 0.95."""
    return (result.nearest == targets) & (result.overlap >= 0.95)


def digits_gallery(cfg: Config, rng: np.random.Generator) -> tuple[dict, object]:
    """Store one binarised prototype per digit class; complete corrupted, partial, novel
    handwritten and random cues; return the measured rates and a picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels = load_digits_patterns(cfg.side)
    prototypes = np.stack(
        [np.where(images[labels == c].mean(0) > 0, 1, -1) for c in range(10)]
    ).astype(np.int8)
    memory = AttractorMemory(cfg.side**2, rule=cfg.rule).store(prototypes)
    hebbian = AttractorMemory(cfg.side**2, rule="hebbian").store(prototypes)
    n_flip = round(cfg.flip_fraction * cfg.side**2)
    targets = np.arange(10)
    cues = {
        "flipped": codes.flip_bits(prototypes, n_flip, rng),
        "partial": codes.partial_cue(prototypes, cfg.keep_fraction, rng),
        "handwritten": images[[rng.choice(np.flatnonzero(labels == c)) for c in range(10)]],
        "random": codes.random_bipolar(10, cfg.side**2, rng),
    }
    results = {name: memory.complete_batch(c) for name, c in cues.items()}
    many = {
        "flipped": np.repeat(prototypes, 20, 0),
        "partial": np.repeat(prototypes, 20, 0),
    }
    rates: dict[str, float] = {}
    for name, source in many.items():
        noisy = codes.flip_bits(source, n_flip, rng) if name == "flipped" else codes.partial_cue(
            source, cfg.keep_fraction, rng
        )
        truth = np.repeat(targets, 20)
        ours, classical = memory.complete_batch(noisy), hebbian.complete_batch(noisy)
        rates[f"{name}_recalled_{cfg.rule}"] = float(_recalled(ours, truth).mean())
        rates[f"{name}_recalled_hebbian"] = float(_recalled(classical, truth).mean())
        rates[f"{name}_accepted_{cfg.rule}"] = float(ours.accepted.mean())
    held_out = memory.complete_batch(images)
    rates["handwritten_nearest_is_label"] = float((held_out.nearest == labels).mean())
    rates["handwritten_accepted"] = float(held_out.accepted.mean())
    rates["handwritten_accepted_and_right"] = float(
        (held_out.accepted & (held_out.nearest == labels)).mean()
    )
    rates["random_rejected"] = float(
        1 - memory.complete_batch(codes.random_bipolar(500, cfg.side**2, rng)).accepted.mean()
    )

    fig, axes = plt.subplots(len(cues) * 3, 10, figsize=(10, len(cues) * 3.1))
    for block, (name, result) in enumerate(results.items()):
        for col in range(10):
            accepted = bool(result.accepted[col])
            nearest = int(result.nearest[col])
            panels = (
                (cues[name][col], f"{name}\ncue", ""),
                (
                    result.states[col] if accepted else np.zeros(cfg.side**2),
                    "completion",
                    f"→ {nearest} ({result.overlap_score[col]:.2f})" if accepted else "refused",
                ),
                (prototypes[nearest], "stored\n(nearest)", ""),
            )
            for offset, (image, ylabel, title) in enumerate(panels):
                ax = axes[3 * block + offset, col]
                ax.imshow(image.reshape(cfg.side, cfg.side), cmap="gray", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if title:
                    ax.set_title(title, fontsize=7, color="black" if accepted else "red", pad=2)
                if col == 0:
                    ax.set_ylabel(ylabel, fontsize=7)
    fig.suptitle(
        f"{cfg.side}×{cfg.side} digit prototypes, {cfg.rule} rule: cue → completion (class, "
        "overlap score) → stored pattern; refused = CA1 'insufficient evidence' (grey)",
        fontsize=8,
        y=0.995,
    )
    fig.tight_layout()
    return rates, fig


def _sparse_cue_curve(
    cfg: Config, n_patterns: int, rng: np.random.Generator
) -> tuple[dict[float, float], AttractorMemory, AttractorMemory]:
    """Recall against cue fraction for one load, with the sync memory (whose stats count
    every step) and an async twin completing the 30% cues."""
    n, a = cfg.sparse_units, cfg.sparse_level
    patterns = codes.random_sparse(n_patterns, n, a, rng)
    sync = AttractorMemory(n, code="sparse", sparsity=a).store(patterns)
    reps = max(1, cfg.cues_per_condition // n_patterns)
    truth = np.tile(np.arange(n_patterns), reps)
    curve = {}
    for fraction in cfg.cue_fractions:
        cues = np.concatenate([codes.partial_cue(patterns, fraction, rng) for _ in range(reps)])
        curve[fraction] = float(_recalled(sync.complete_batch(cues), truth).mean())
    asynchronous = AttractorMemory(n, code="sparse", sparsity=a, update="async").store(patterns)
    asynchronous.complete_batch(
        np.concatenate([codes.partial_cue(patterns, 0.3, rng) for _ in range(reps)])
    )
    return curve, sync, asynchronous


def measure_claims(cfg: Config, rng: np.random.Generator) -> list[Claim]:
    """The source's CA3 claims, each measured under stated conditions."""
    n, a = cfg.sparse_units, cfg.sparse_level
    rows: dict[str, list[str]] = {"converge": [], "energy": [], "cue": []}
    for p in progress(cfg.sparse_patterns, "sparse loads"):
        curve, sync, asynchronous = _sparse_cue_curve(cfg, p, rng)
        where = f"P={p} (α={p / n:.2f})"
        rows["converge"].append(
            f"{where}: {sync.stats.convergence_rate:.1%} sync over all cue fractions, "
            f"{asynchronous.stats.convergence_rate:.1%} async at 30%"
        )
        rows["energy"].append(
            f"{where}: sync {sync.stats.energy_rises} rises in {sync.stats.energy_steps} steps "
            f"({sync.stats.energy_decrease_rate:.2%} did not rise), async "
            f"{asynchronous.stats.energy_rises} in {asynchronous.stats.energy_steps}"
        )
        needed = [f for f, rate in curve.items() if rate >= 0.95]
        least = f"{min(needed):.0%} of the k={sync.k} active units" if needed else "not reached"
        rows["cue"].append(
            f"{where}: ≥95% recall from {least} ("
            + ", ".join(f"{f:.0%}→{r:.0%}" for f, r in curve.items()) + ")"
        )
    sparse_conditions = (
        f"N={n}, a={a}, k-WTA, covariance rule, partial cues keeping a fraction of the active units"
    )

    capacity_rows = []
    m = cfg.capacity_units
    for load in progress(cfg.capacity_loads, "capacity"):
        stored = codes.random_bipolar(max(1, round(load * m)), m, rng)
        memory = AttractorMemory(m).store(stored)
        result = memory.complete_batch(codes.flip_bits(stored, round(0.05 * m), rng))
        capacity_rows.append((load, float(_recalled(result, np.arange(len(stored))).mean())))
    holding = [load for load, rate in capacity_rows if rate >= 0.9]
    capacity = max(holding) if holding else 0.0

    source = "source thread (CA3 claims)"
    return [
        Claim(statement="converges within 7 iterations", source=source, target="96.8% of cues",
              measured="; ".join(rows["converge"]), verdict="measured",
              conditions=sparse_conditions + "; async counts sweeps"),
        Claim(statement="energy decreases on each step", source=source, target="99.97% of steps",
              measured="; ".join(rows["energy"]), verdict="measured",
              conditions=sparse_conditions + "; async is guaranteed by theory, sync is not"),
        Claim(statement="30% cue overlap suffices", source=source, target="30% threshold",
              measured="; ".join(rows["cue"]), verdict="measured",
              conditions=sparse_conditions + "; recall = nearest right and overlap ≥ 0.95"),
        Claim(statement="capacity 0.156N ('Hopfield predicts 0.15N')", source=source,
              target="0.156N (AGS theory: α_c ≈ 0.138)", value=capacity, verdict="measured",
              measured=f"≥90% recall up to α={capacity:.2f}; by α: "
              + ", ".join(f"{load:.2f}→{rate:.0%}" for load, rate in capacity_rows),
              conditions=f"bipolar random patterns, N={m}, Hebbian, sync, cues with 5% flipped bits"),
    ]


def run(cfg: Config, folder: RunFolder) -> Result:
    rng = seed_everything(cfg.seed)
    with warnings.catch_warnings():
        # the demo drives memories past capacity and feeds random cues on purpose
        warnings.filterwarnings("ignore", message="convergence rate", category=RuntimeWarning)
        rates, figure = digits_gallery(cfg, rng)
        folder.save_figure("digits.png", figure)
        claims = measure_claims(cfg, rng)
    digits = [{"measure": k, "value": v} for k, v in rates.items()]
    return Result(
        claims=claims,
        tables={"digits": digits},
        figures=("digits.png",),
        title="engram demo",
        intro=f"Seed {cfg.seed}. One digit prototype per class stored ({cfg.side}×{cfg.side} "
        f"units, {cfg.rule} rule); cues are flipped, partial (unknown units = 0), other "
        "handwritten exemplars of the class, or random; then the source's CA3 claims, measured now.",
        sections=("## Digits (scikit-learn's bundled 8×8 digits, upsampled and binarised)\n\n"
                  + markdown_table(digits),),
    )


def _command(args: argparse.Namespace) -> int:
    from engram.runs import experiment, merge, start

    exp = experiment("ca3.demo")
    cfg = merge(exp.config(), {"seed": args.seed})
    folder, result = start(exp, cfg, args.out, command=f"engram demo --seed {cfg.seed}")
    print(f"Digits ({cfg.side}×{cfg.side} units, {cfg.rule} rule, one prototype per class):")
    for row in result.tables["digits"]:
        print(f"  {row['measure']:38s} {row['value']:6.1%}")
    print("\nClaims of the source, measured now:")
    for claim in result.claims:
        print(f"- {claim.statement} (source: {claim.target})")
        print(f"    measured:   {claim.measured}")
        print(f"    conditions: {claim.conditions}")
    print(f"\nRun folder: {folder.path}; picture: {folder.file('digits.png')}")
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="pattern completion on bundled digits and the CA3 claims, measured"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs", help="folder in which the run folder is made")
    parser.set_defaults(func=_command)
