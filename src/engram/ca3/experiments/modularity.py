"""Modularity: the same items held by M smaller networks instead of one network of the same
total size N — interference, capacity and recall, and what the split saves in synapses.

Two ways to split: ``items`` gives each module its own share of the items (P/M patterns of
N/M units; the module of an item is known, as when an index routes the cue), and ``slices``
gives every module the same P items cut into N/M-unit slices (each module then runs at load
M·α, so interference grows with M).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engram import codes
from engram.ca3 import AttractorMemory
from engram.ca3 import theory as theory
from engram.ca3.experiments.measure import (
    RECALL_OVERLAP,
    crossing,
    generator,
    one_thread,
    recall,
)
from engram.ca3.experiments.summary import (
    caption,
    errorbars,
    figure,
    fmt,
    interval,
    select,
    summarise,
)
from engram.errors import ConfigError
from engram.runs import Claim, Result, RunFolder, markdown_table

METRICS = ("recall", "hamming", "nn_recall")
MODES = ("items", "slices")


@dataclass(frozen=True)
class Config:
    n_units: int = 1024
    modules: tuple[int, ...] = (1, 2, 4, 8)
    loads: tuple[float, ...] = (0.04, 0.08, 0.11, 0.13, 0.15, 0.18, 0.22)
    flip_fraction: float = 0.1
    max_iterations: int = 30
    n_seeds: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        for m in self.modules:
            if self.n_units % m:
                raise ConfigError(f"modules: {m} does not divide n_units={self.n_units}")


QUICK = Config(n_units=128, modules=(1, 4), loads=(0.05, 0.3), n_seeds=2)


def _items(cfg: Config, m: int, p: int, rng: np.random.Generator, s: int) -> dict[str, float]:
    """Each module stores its own P/M items; recall is scored per item at N/M units, and the
    Hamming distance scaled to N so that both splits compare on one axis."""
    size = cfg.n_units // m
    recalled, hamming, nn = [], [], []
    for share in np.array_split(np.arange(p), m):
        if share.size == 0:
            continue
        patterns = codes.random_bipolar(share.size, size, rng)
        cues = codes.flip_bits(patterns, round(cfg.flip_fraction * size), rng)
        memory = AttractorMemory(size, max_iterations=cfg.max_iterations, seed=s).store(patterns)
        out = recall(memory, cues, np.arange(share.size), patterns)
        recalled.append(out.recalled)
        hamming.append(out.hamming * m)
        nn.append(out.nn_recalled)
    return {"recall": float(np.concatenate(recalled).mean()),
            "hamming": float(np.concatenate(hamming).mean()),
            "nn_recall": float(np.concatenate(nn).mean())}


def _slices(cfg: Config, m: int, p: int, rng: np.random.Generator, s: int) -> dict[str, float]:
    """Each module stores one N/M-unit slice of every item; an item is recalled when the
    concatenated final state overlaps it ≥ 0.95."""
    patterns = codes.random_bipolar(p, cfg.n_units, rng)
    cues = codes.flip_bits(patterns, round(cfg.flip_fraction * cfg.n_units), rng)
    states = np.empty_like(patterns)
    nn_score = np.zeros((p, p), dtype=np.float32)
    for cols in np.array_split(np.arange(cfg.n_units), m):
        memory = AttractorMemory(cols.size, max_iterations=cfg.max_iterations, seed=s)
        memory.store(patterns[:, cols])
        states[:, cols] = recall(memory, cues[:, cols], np.arange(p), patterns[:, cols]).completion.states
        nn_score += cues[:, cols].astype(np.float32) @ patterns[:, cols].T.astype(np.float32)
    target = (states.astype(np.float32) * patterns).sum(1) / cfg.n_units
    return {"recall": float(np.mean(target >= RECALL_OVERLAP)),
            "hamming": float((states != patterns).sum(1).mean()),
            "nn_recall": float(np.mean(nn_score.argmax(1) == np.arange(p)))}


def run(cfg: Config, run_folder: RunFolder) -> Result:
    rows = []
    with one_thread():
        for mode_index, mode in enumerate(MODES):
            for m in cfg.modules:
                for key, load in enumerate(cfg.loads):
                    p = max(m, round(load * cfg.n_units))
                    for s in range(cfg.n_seeds):
                        rng = generator(cfg.seed, s, mode_index, m, key)
                        out = (_items if mode == "items" else _slices)(cfg, m, p, rng, s)
                        rows.append({"mode": mode, "modules": m, "module_units": cfg.n_units // m,
                                     "synapses": cfg.n_units**2 // m, "n_patterns": p,
                                     "alpha": p / cfg.n_units, "seed": s, **out})
    summary = summarise(rows, ("mode", "modules", "module_units", "synapses", "n_patterns",
                               "alpha"), METRICS)
    return Result(
        claims=_claims(cfg, rows),
        tables={"per_seed": rows, "summary": summary},
        figures=_plot(cfg, summary, run_folder),
        title="Modularity",
        intro=f"N={cfg.n_units} units in total split into M modules; random ±1 items, cues with "
        f"{cfg.flip_fraction:.0%} flipped, Hebbian, sync ≤ {cfg.max_iterations} updates, "
        f"{cfg.n_seeds} seeds. Capacity = total load P/N where recall falls below 50%.",
        sections=("## Means over seeds\n\n" + markdown_table(
            summary, ["mode", "modules", "synapses", "alpha", "recall", "recall_low",
                      "recall_high", "hamming"]),),
    )


def _capacity(rows: list[dict[str, Any]], mode: str, m: int) -> list[float]:
    out = []
    for s in sorted({r["seed"] for r in rows}):
        cells = sorted(select(rows, mode=mode, modules=m, seed=s), key=lambda r: r["alpha"])
        out.append(crossing([c["alpha"] for c in cells], [c["recall"] for c in cells], 0.5))
    return out


def _claims(cfg: Config, rows: list[dict[str, Any]]) -> list[Claim]:
    one, most = min(cfg.modules), max(cfg.modules)
    caps = {(mode, m): interval(_capacity(rows, mode, m)) for mode in MODES for m in (one, most)}
    single = caps[("items", one)]
    split = caps[("items", most)]
    sliced = caps[("slices", most)]
    same = split.high >= single.low and split.low <= single.high
    return [Claim(
        statement="splitting the items over M modules keeps the capacity in items (α_c·N) with "
        "M× fewer synapses",
        source="Amit 1989 (capacity ∝ units); modular-memory argument",
        measured=f"capacity P/N: {most} modules {fmt(split)}, one network {fmt(single)}",
        details=f"capacity P/N: one network {fmt(single)}, {most} modules {fmt(split)} "
        f"({cfg.n_units**2 // most:,} vs {cfg.n_units**2:,} synapses)",
        target="capacity P/N of M modules ≥ one network's",
        conditions=f"N={cfg.n_units} total, module known at recall, {cfg.flip_fraction:.0%} flipped cue",
        verdict="holds, conditional on knowing the module at recall (intervals overlap)" if same
        else ("holds only in part: the modules hold fewer items (finite-size)"
              if split.estimate < single.estimate else
              "holds, conditional on knowing the module at recall: the modules held more "
              "(finite-size: a small network's knee lies further above α_c)"),
        value=split.estimate,
    ), Claim(
        statement="cutting every item across modules multiplies interference by M",
        source="load per module = M·α",
        measured=f"capacity P/N: {most} slices {fmt(sliced)}, one network "
        f"{fmt(caps[('slices', one)])}", value=sliced.estimate,
        details=f"capacity P/N with {most} slices {fmt(sliced)} vs one network "
        f"{fmt(caps[('slices', one)])} "
        f"(theory α_c/M = {theory.ALPHA_C / most:.3f})",
        target=f"α_c/M = {theory.ALPHA_C / most:.3f}",
        conditions=f"N={cfg.n_units} total, item recalled when all slices are",
        verdict="holds"
        if sliced.high < caps[("slices", one)].low else "does not hold",
    )]


def _plot(cfg: Config, summary: list[dict[str, Any]], run_folder: RunFolder) -> list[str]:
    fig, ax = figure(3)
    for m in cfg.modules:
        errorbars(ax[0], select(summary, mode="items", modules=m), "alpha", "recall",
                  label=f"M={m} ({cfg.n_units // m} units)")
        errorbars(ax[1], select(summary, mode="slices", modules=m), "alpha", "recall", label=f"M={m}")
        errorbars(ax[2], select(summary, mode="items", modules=m), "alpha", "hamming", label=f"M={m}")
    for m in cfg.modules:
        ax[1].axvline(theory.ALPHA_C / m, color="grey", linestyle=":", linewidth=0.7)
    for a in ax:
        a.axvline(theory.ALPHA_C, color="k", linestyle="--", linewidth=0.8)
        a.set_xlabel("total load P/N")
        a.legend(fontsize=6)
    ax[0].set(ylabel="items recalled", title="items split over modules")
    ax[1].set(ylabel="items recalled", title="items cut into slices (: α_c/M)")
    ax[2].set(ylabel="final Hamming distance (of N)", title="error, items split")
    caption(fig, f"Modularity, N={cfg.n_units} in total", cfg.n_seeds)
    run_folder.save_figure("modularity.png", fig, dpi=80)
    return ["modularity.png"]
