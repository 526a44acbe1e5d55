"""The eviction experiment's variants at a powered seed count, built on a finished main run.

Distance (with an in-window control), number of pairs, rehearsal, overwrite, and the far task,
whose 26 evicted tokens per layer exceed the equal-state kNN's 16 entries, so that bounded kNN
must drop entries. The main run (``streaming.eviction``; its folder in ``main_run``, or with
``main_run`` empty the ``main`` config run first in ``<folder>/main``) gives the task and model
settings and the learning rates, its per-seed results are the ``base`` task, and its effect
sizes fix the seed count by a power analysis. ``preregistration-variants.md`` is written before
the first model. Jobs run seed by seed over every cell, so a stop (``stop_at``, an interruption)
leaves all cells with the same seeds; ``engram run --resume`` continues.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engram import stats
from engram.data.recall_tasks import min_query_distance
from engram.errors import ConfigError
from engram.io import atomic_write_text, number
from engram.runs import Job, Result, RunFolder, current_runner, experiment, from_mapping, run_in
from engram.runs.jobs import cache_path
from engram.streaming.experiments import design
from engram.streaming.experiments.claims import hypothesis_claim
from engram.streaming.experiments.costs import throughput
from engram.streaming.experiments.design import BASELINE, CONDITIONS, MAIN_SEED0, MEMORIES
from engram.streaming.experiments.hypotheses import ranking_pairs, score_name, variant_family
from engram.streaming.experiments.plots import plot_variants
from engram.streaming.experiments.preregistration import variants_preregistration
from engram.streaming.experiments.report import variants_sections
from engram.streaming.experiments.statistics import compare, compare_to, correct_family, escapes
from engram.streaming.experiments.training import ModelSpec, accuracies, flat, train_and_test, train_models

SEED_STRIDE = 1000  # as in the main run: model seeds 100 + 1000·seed + i
DEFAULT_CELLS: dict[str, tuple[str, ...]] = {
    "far": ("window_sinks", "matrix", "matrix_delta", "knn", "knn_unbounded", "full"),
    "pairs_4": ("window_sinks", "matrix", "matrix_delta", "knn", "full"),
    # Full attention (a reference, in no hypothesis) only where the task is new or harder:
    # a cut to fit the shared 2-core CPU.
    "pairs_1": ("window_sinks", "matrix", "matrix_delta", "knn"),
    "rehearsal": ("window_sinks", "matrix", "matrix_delta", "knn"),
    "overwrite": ("window_sinks", "matrix", "matrix_delta", "knn"),
    "in_window": ("window_sinks", "matrix", "matrix_delta", "knn", "full"),
    "base": ("projection_trained",),
}
VARIANTS = ("base", "in_window", "far", "pairs_1", "pairs_4", "rehearsal", "overwrite")


@dataclass(frozen=True)
class Config:
    """What the variant study runs; the task and model settings come from the main run."""

    main_run: str = ""  # a finished streaming.eviction folder; "" runs ``main`` first
    main: design.Config = field(default_factory=design.Config)
    cells: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_CELLS))
    # Learning rates for conditions the main run did not train (no sweep: stated in the docs).
    extra_lr: dict[str, float] = field(
        default_factory=lambda: {"knn_unbounded": 3e-3, "projection_trained": 3e-3}
    )
    seeds: int | None = None  # None: the power analysis decides
    power_from: tuple[str, ...] = ("matrix", "matrix_delta", "knn")
    power: float = 0.8
    alpha: float = 0.05
    steps: int | None = None  # None: the main run's
    stop_at: str | None = None  # "HH:MM" UTC: no model starts after it
    seed: int = 0

    def __post_init__(self) -> None:
        for variant, conditions in self.cells.items():
            if variant not in VARIANTS:
                raise ConfigError(f"cells: expected variants from {VARIANTS}, got {variant!r}")
            unknown = [c for c in conditions if c not in CONDITIONS]
            if unknown or not conditions:
                raise ConfigError(
                    f"cells[{variant!r}]: expected conditions from {tuple(CONDITIONS)}, got {conditions}"
                )
            if variant not in ("base", "in_window") and BASELINE not in conditions:
                raise ConfigError(f"cells[{variant!r}]: expected {BASELINE!r} among {conditions}")
        if self.seeds is not None and self.seeds < 2:
            raise ConfigError(f"seeds: expected ≥ 2 or None, got {self.seeds}")
        if self.stop_at is not None:
            _stop_time(self.stop_at)


# Seconds-long: the quick main run first, then two variants on two seeds.
QUICK = Config(
    main=dataclasses.replace(design.QUICK, conditions=("window_sinks", "matrix", "knn"), variants=()),
    cells={"far": ("window_sinks", "knn", "knn_unbounded"), "in_window": ("window_sinks",)},
    seeds=2,
)


def _stop_time(text: str) -> dt.datetime:
    """Today's UTC datetime at ``HH:MM``."""
    try:
        hour, minute = (int(x) for x in text.split(":"))
        return dt.datetime.now(dt.timezone.utc).replace(hour=hour, minute=minute, second=0, microsecond=0)
    except ValueError as error:
        raise ConfigError(f"stop_at: expected 'HH:MM' (UTC), got {text!r}") from error


# ------------------------------------------------------------------ the main run
@dataclass(frozen=True)
class MainRun:
    """What the study reuses of a finished main run."""

    cfg: design.Config
    lr: dict[str, float]
    d: dict[str, float]  # Cohen's d of each memory vs window+sinks
    rows: list[dict[str, Any]]  # per-model results of the base task


def load_main(path: str | Path) -> MainRun:
    """A finished main run's config, learning rates, effect sizes and per-model results."""
    folder = Path(path)
    for name in ("config.json", "pilot.json", "results.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"main_run: expected {folder / name} (a finished main run)")
    saved = json.loads((folder / "config.json").read_text())["config"]
    cfg = from_mapping(design.Config, saved)
    tables = json.loads((folder / "results.json").read_text())["tables"]
    d = {t["a"]: number(t["cohens_d"]) for t in tables["tests"] if t["b"] == BASELINE}
    rows = [r for r in tables["models"] if r["phase"] == "main"]
    lr = json.loads((folder / "pilot.json").read_text())["lr"]
    return MainRun(cfg, lr, d, rows)


def _main_folder(study: Config, folder: RunFolder) -> Path:
    """The main run's folder: ``main_run``, or ``<folder>/main`` run here from ``main``."""
    if study.main_run:
        return Path(study.main_run)
    path = folder.path / "main"
    if not (path / "results.json").exists():
        path.mkdir(exist_ok=True)
        main_folder = RunFolder(path)
        record = {"name": "streaming.eviction", "seed": study.main.seed,
                  "config": dataclasses.asdict(study.main)}
        main_folder.write_json("config.json", record)
        run_in(experiment("streaming.eviction"), study.main, main_folder)
    return path


def study_config(study: Config, main: MainRun) -> design.Config:
    """The main run's Config with the study's conditions, rates and steps."""
    wanted = {c for cs in study.cells.values() for c in cs} | {BASELINE}
    conditions = tuple(c for c in CONDITIONS if c in wanted)
    lr = {**main.lr, **study.extra_lr}
    missing = [c for c in conditions if c not in lr]
    if missing:
        raise ConfigError(f"extra_lr: expected a learning rate for {missing} (not in the main run)")
    return dataclasses.replace(
        main.cfg,
        conditions=conditions,
        lr_by_condition={c: float(lr[c]) for c in conditions},
        steps=study.steps or main.cfg.steps,
    )


# ------------------------------------------------------------------ plan
def power_plan(study: Config, main: MainRun, family_size: int) -> dict[str, Any]:
    """Seeds per cell: power for the smallest main-run effect among ``power_from`` at the
    strictest Holm step α/m (capped at d = 4, beyond which every rule asks the minimum)."""
    effects = {m: main.d[m] for m in study.power_from if m in main.d}
    if not effects:
        raise ValueError(f"power_from: none of {study.power_from} is in the main run's tests")
    finite = [abs(x) for x in effects.values() if np.isfinite(x) and x != 0]
    d = min([*finite, 4.0])  # an undefined d (no spread at all) counts as beyond the cap
    level = study.alpha / family_size
    need = stats.samples_for_power(d, power=study.power, alpha=level)
    return {
        "main_run_d": effects,
        "powered_for_d": d,
        "alpha_per_test": level,
        "family_size": family_size,
        "n_needed": need,
        "n_seeds": study.seeds if study.seeds is not None else max(2, need),
        "override": study.seeds is not None,
    }


# ------------------------------------------------------------------ run
def _models(study: Config, cfg: design.Config, n_seeds: int) -> list[tuple[ModelSpec, int]]:
    lr = cfg.lr_by_condition or {}
    first = MAIN_SEED0 + SEED_STRIDE * study.seed
    return [
        (ModelSpec(cfg, "variant", c, v, lr[c]), s)
        for s in range(first, first + n_seeds)
        for v, cs in study.cells.items()
        for c in cs
    ]


def _done(folder: RunFolder, model: tuple[ModelSpec, int]) -> bool:
    return cache_path(folder.path, Job.of(train_and_test, *model)).exists()


def _train(study: Config, models: list[tuple[ModelSpec, int]], folder: RunFolder) -> None:
    """Train the models not yet done, in order, starting none after ``stop_at``: one at a
    time in this process, or whole seeds at a time in a pool (which keeps cells balanced)."""
    stop = _stop_time(study.stop_at) if study.stop_at else None
    todo = [m for m in models if not _done(folder, m)]

    def late() -> bool:
        return stop is not None and dt.datetime.now(dt.timezone.utc) >= stop

    one_by_one = current_runner().backend == "local" and current_runner().workers == 1
    groups = [[m] for m in todo] if one_by_one else [
        [m for m in todo if m[1] == seed] for seed in sorted({m[1] for m in todo})
    ]
    for group in groups:
        if late():
            print(f"stop_at {study.stop_at} reached; seed {group[0][1]} {group[0][0].variant} "
                  f"{group[0][0].condition} and later models not started")
            return
        train_models(group, folder.path, f"variants, seed {group[0][1]}")


def run(study: Config, folder: RunFolder) -> Result:
    """Plan (written before any model), train, analyse; each step resumes from the folder."""
    # One torch thread, as in the main run's workers: on a shared CPU, extra intra-op threads
    # only wait for cores that other processes hold.
    torch.set_num_threads(1)
    main_path = _main_folder(study, folder)
    main = load_main(main_path)
    cfg = study_config(study, main)
    family = variant_family(study.cells, cfg)
    if folder.file("power.json").exists():
        plan = json.loads(folder.file("power.json").read_text())
    else:
        plan = power_plan(study, main, len(family))
        folder.write_json("power.json", plan)
    if not folder.file("preregistration-variants.md").exists():
        atomic_write_text(
            folder.file("preregistration-variants.md"),
            variants_preregistration(study, cfg, family, plan),
        )
    models = _models(study, cfg, plan["n_seeds"])
    _train(study, models, folder)
    return analyse(study, cfg, main, folder, models, family)


# ------------------------------------------------------------------ analysis
def _cell_scores(rows: list[dict], variant: str, condition: str, seeds: list[int], score: str) -> list[float]:
    by_seed = {r["seed"]: r for r in rows if r["variant"] == variant and r["condition"] == condition}
    if condition == "projection_frozen":
        by_seed = {r["seed"]: r for r in rows if r["variant"] == variant and r["condition"] == BASELINE}
        return accuracies([by_seed[s] for s in seeds if s in by_seed], "projection_frozen")
    return [float(by_seed[s][score]) for s in seeds if s in by_seed]


def analyse(
    study: Config,
    cfg: design.Config,
    main: MainRun,
    folder: RunFolder,
    models: list[tuple[ModelSpec, int]],
    family: list[dict],
) -> Result:
    """Cells, family V, ranking R and the main run's post-hoc ranking, on the seeds that are
    complete in every cell."""
    done = [m for m in models if _done(folder, m)]
    seeds = [s for s in sorted({m[1] for m in models}) if all(_done(folder, m) for m in models if m[1] == s)]
    if len(seeds) < 2:
        raise RuntimeError(f"variants: fewer than 2 seeds complete in every cell ({seeds}); resume the run")
    rows = [flat(r) for r in train_models(done, folder.path, "variants: cached results")]
    base_seeds = sorted({r["seed"] for r in main.rows})

    def scores(variant: str, condition: str, score: str = "accuracy") -> list[float]:
        if variant == "base" and condition not in study.cells.get("base", ()):
            return _cell_scores(main.rows, "base", condition, base_seeds[: len(seeds)], score)
        return _cell_scores(rows, variant, condition, seeds, score)

    cells = []
    for variant, conditions in study.cells.items():
        task = cfg.task(variant)
        shown = [*conditions, *(["projection_frozen"] if BASELINE in conditions else [])]
        for c in shown:
            acc = scores(variant, c)
            ci = stats.mean_ci(acc)
            boot = stats.bootstrap_ci(acc, n_resamples=1000)
            picked = [r for r in rows if r["variant"] == variant and r["condition"] == c]
            picked = [r for r in picked if r["seed"] in seeds]
            cells.append(
                {
                    "variant": variant,
                    "condition": c,
                    "n": len(acc),
                    "accuracy": ci.estimate,
                    "t_low": ci.low,
                    "t_high": ci.high,
                    "boot_low": boot.low,
                    "boot_high": boot.high,
                    "seeds_at_least_0.75": int(np.sum(np.asarray(acc) >= 0.75)),
                    "overwritten_accuracy": _mean(picked, "overwritten_accuracy"),
                    "stale_rate": _mean(picked, "stale_rate"),
                    "rehearsal_accuracy": _mean(picked, "rehearsal_accuracy"),
                    "n_pairs": task.n_pairs,
                    "min_query_distance": min_query_distance(task),
                    "length": task.length,
                    "chance": task.chance,
                    "per_seed": " ".join(f"{x:.2f}" for x in acc),
                }
            )

    tests = []
    for h in family:
        level = 1 / cfg.task(h["variant"]).n_pairs
        a = scores(h["variant"], h["a"], h["score"])
        b = scores(h["variant"], h["b"], h["score"]) if h["b"] else None
        tests.append({**h, **compare_to(a, b, level, (h["a"], h["b"] or ""))})
    correct_family(tests, study.alpha)

    ranking = []
    for variant, a, b in ranking_pairs(study.cells):
        score = score_name(variant)
        ranking.append(
            {
                "family": "R (variants, pre-registered)",
                "variant": variant,
                "a": a,
                "b": b,
                **compare(scores(variant, a, score), scores(variant, b, score), (a, b)),
                **escapes(scores(variant, a, score), scores(variant, b, score)),
            }
        )
    correct_family(ranking, study.alpha)
    post_hoc = _main_ranking(main, study.alpha)

    costs = _far_costs(cfg, study.cells.get("far", ()))
    tables = {
        "cells": cells,
        "tests": tests,
        "ranking": ranking,
        "main_ranking_post_hoc": post_hoc,
        "far_costs": costs,
        "models": rows,
    }
    setting = f"{len(seeds)} seeds per cell, {cfg.steps} steps, main run {study.main_run or 'main/'}"
    claims = tuple(hypothesis_claim(t, f"{t['variant']}; {setting}") for t in tests)
    figures = plot_variants(cfg, folder, cells, main.rows, scores)
    return Result(
        claims=claims,
        tables=tables,
        figures=figures,
        title="Eviction variants",
        intro="Does recall after eviction hold when the task changes? Pre-registered family V, Holm.",
        sections=variants_sections(tables, seeds, len({m[1] for m in models})),
    )


def _far_costs(cfg: design.Config, conditions: tuple[str, ...]) -> list[dict[str, Any]]:
    """State bytes and tokens/s at the far task's length, where the bounded kNN is full."""
    far = dataclasses.replace(cfg, n_filler=cfg.task("far").n_filler)
    return [throughput(far, c) for c in conditions]


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


def _main_ranking(main: MainRun, alpha: float) -> list[dict]:
    """Every pair of the main run's trained memories and full attention (post hoc: the main
    run's pre-registration had only H7 and H8 between memories)."""
    names = [c for c in main.cfg.conditions if c in MEMORIES or c == "full"]
    by = {c: [float(r["accuracy"]) for r in main.rows if r["condition"] == c] for c in names}
    rows = [
        {
            "family": "main run, post hoc",
            "variant": "base",
            "a": a,
            "b": b,
            **compare(by[a], by[b], (a, b)),
            **escapes(by[a], by[b]),
        }
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    correct_family(rows, alpha)
    return rows


__all__ = ["DEFAULT_CELLS", "QUICK", "Config", "analyse", "load_main", "run", "study_config"]
