"""Dynamics: synchronous vs asynchronous updates — steps to converge, final error, 2-cycles
and energy traces. Asynchronous updates with symmetric zero-diagonal weights can never raise
the energy (Hopfield 1982); synchronous ones can, and can settle into 2-cycles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engram import codes
from engram.ca3 import AttractorMemory
from engram.ca3 import theory as theory
from engram.ca3.experiments.measure import energy_rises, generator, one_thread, recall
from engram.ca3.experiments.summary import (
    caption,
    errorbars,
    figure,
    fmt,
    interval,
    select,
    summarise,
)
from engram.runs import Claim, Result, RunFolder, markdown_table

METRICS = ("recall", "hamming", "converged", "cycled", "iterations", "energy_rise_share")
UPDATES = ("sync", "async")


@dataclass(frozen=True)
class Config:
    """Bipolar Hebbian network; the same stored set and cues go through both dynamics."""

    n_units: int = 256
    loads: tuple[float, ...] = (0.05, 0.1, 0.14, 0.2, 0.3)
    flip_fraction: float = 0.2
    max_iterations: int = 30
    trace_load: float = 0.14
    n_seeds: int = 8
    seed: int = 0


QUICK = Config(n_units=96, loads=(0.05, 0.3), trace_load=0.3, n_seeds=2)


def run(cfg: Config, run_folder: RunFolder) -> Result:
    with one_thread():
        rows, traces, totals = [], {u: [] for u in UPDATES}, {u: [0, 0] for u in UPDATES}
        for key, load in enumerate(cfg.loads):
            p = max(2, round(load * cfg.n_units))
            for s in range(cfg.n_seeds):
                rng = generator(cfg.seed, s, key)
                patterns = codes.random_bipolar(p, cfg.n_units, rng)
                cues = codes.flip_bits(patterns, round(cfg.flip_fraction * cfg.n_units), rng)
                for update in UPDATES:
                    memory = AttractorMemory(cfg.n_units, update=update,
                                             max_iterations=cfg.max_iterations, seed=s)
                    result = recall(memory.store(patterns), cues, np.arange(p), patterns)
                    rises, steps = energy_rises(result.completion.energy)
                    totals[update][0] += rises
                    totals[update][1] += steps
                    rows.append({"update": update, "n_patterns": p, "alpha": p / cfg.n_units,
                                 "seed": s, "rises": rises, "steps": steps, **result.means()})
                    if load == cfg.trace_load:
                        traces[update].append(_held(result.completion.energy) / cfg.n_units)
    summary = summarise(rows, ("update", "n_patterns", "alpha"), METRICS)
    return Result(
        claims=_claims(cfg, rows, totals),
        tables={"per_seed": rows, "summary": summary},
        figures=_plot(cfg, summary, traces, run_folder),
        title="Synchronous vs asynchronous dynamics",
        intro=f"Bipolar Hebbian, N={cfg.n_units}, cues with {cfg.flip_fraction:.0%} flipped, up "
        f"to {cfg.max_iterations} updates (sync: all units at once) or sweeps (async: every unit "
        f"once, in a random order); both cost N unit evaluations per step. {cfg.n_seeds} seeds.",
        sections=("## Means over seeds\n\n" + markdown_table(
            summary, ["update", "alpha", "iterations", "converged", "cycled", "hamming",
                      "recall", "energy_rise_share"]),),
    )


def _held(energy: np.ndarray) -> np.ndarray:
    """Energy traces with each cue's last value held after it stopped (for mean traces)."""
    out = energy.copy()
    for t in range(1, out.shape[1]):
        gap = np.isnan(out[:, t])
        out[gap, t] = out[gap, t - 1]
    return out


def _claims(cfg: Config, rows: list[dict[str, Any]], totals: dict[str, list[int]]) -> list[Claim]:
    a_rises, a_steps = totals["async"]
    s_rises, s_steps = totals["sync"]
    cycled = interval([r["cycled"] for r in select(rows, update="sync")], share=True)
    claims = [Claim(
        statement="asynchronous updates never raise the energy",
        source="Hopfield 1982 (symmetric weights, zero diagonal)",
        measured=f"{a_rises} rises in {a_steps} asynchronous sweeps",
        target="0 energy rises",
        conditions=f"Hebbian, N={cfg.n_units}, loads {min(cfg.loads)}–{max(cfg.loads)}, {cfg.n_seeds} seeds",
        verdict="holds" if a_rises == 0 else "does not hold (kernel or weights wrong)",
    ), Claim(
        statement="synchronous updates can raise the energy and fall into 2-cycles",
        source="Bruck 1990; Goles 1985",
        measured=f"{s_rises} rises in {s_steps} synchronous steps; 2-cycles in "
        f"{fmt(cycled, percent=True)} of cues",
        target="some rises or 2-cycles",
        conditions=f"same networks and cues, {cfg.flip_fraction:.0%} flipped",
        verdict="holds" if s_rises + cycled.estimate > 0 else "not observed at these loads",
    )]
    for update in UPDATES:
        low = select(rows, update=update, alpha=min(r["alpha"] for r in rows))
        iters = interval([r["iterations"] for r in low])
        claims.append(Claim(
            statement=f"{update} steps to converge far below capacity",
            source="measurement",
            measured=f"{fmt(iters)} {'updates' if update == 'sync' else 'sweeps'} "
            "(incl. the final no-change step)",
            target="none (a measurement)",
            conditions=f"α={low[0]['alpha']:.3f}, {cfg.flip_fraction:.0%} flipped",
            verdict="measured",
        ))
    return claims


def _plot(cfg: Config, summary: list[dict[str, Any]], traces: dict[str, list[np.ndarray]],
          run_folder: RunFolder) -> list[str]:
    fig, ax = figure(4)
    for update in UPDATES:
        cells = select(summary, update=update)
        errorbars(ax[0], cells, "alpha", "iterations", label=update)
        errorbars(ax[1], cells, "alpha", "hamming", label=update)
        errorbars(ax[2], cells, "alpha", "cycled", label=update)
        if traces[update]:
            # per seed: the mean trace over cues; then mean ± 95% CI over seeds, per step
            per_seed = np.stack([t.mean(0) for t in traces[update]])
            ivs = [interval(per_seed[:, t]) for t in range(per_seed.shape[1])]
            steps = np.arange(1, per_seed.shape[1] + 1)
            mean = np.array([iv.estimate for iv in ivs])
            ax[3].plot(steps, mean, marker="o", markersize=2, label=update)
            ax[3].fill_between(steps, [iv.low for iv in ivs], [iv.high for iv in ivs], alpha=0.3)
    alphas = np.linspace(0.01, theory.ALPHA_C - 1e-3, 100)
    ax[1].plot(alphas, theory.retrieval_error_fraction(alphas) * cfg.n_units, "k:", linewidth=1,
               label="AGS (1−m)N/2")
    for a in ax[:3]:
        a.axvline(theory.ALPHA_C, color="k", linestyle="--", linewidth=0.8)
        a.set_xlabel("load α")
    ax[0].set(ylabel="steps (updates / sweeps)", title="steps to stop")
    ax[1].set(ylabel="final Hamming distance", title="final error")
    ax[2].set(ylabel="share of cues in a 2-cycle", title="2-cycles")
    ax[3].set(xlabel="step", ylabel="energy / N", title=f"energy traces at α={cfg.trace_load}",
              xlim=(0.5, 10.5))
    for a in ax:
        a.legend(fontsize=6)
    caption(fig, f"Sync vs async, N={cfg.n_units}", cfg.n_seeds)
    run_folder.save_figure("dynamics.png", fig, dpi=80)
    return ["dynamics.png"]
