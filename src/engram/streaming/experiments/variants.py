"""The eviction experiment's variants at a powered seed count (``engram experiment eviction-variants``).

Distance (with an in-window control), number of pairs, rehearsal, overwrite, and the far task,
whose 26 evicted tokens per layer exceed the equal-state kNN's 16 entries, so that bounded kNN
must drop entries. It builds on a finished main run (``engram experiment eviction``): the main
run's config and learning rates are reused, its per-seed results are the ``base`` task, and its
effect sizes fix the seed count by a power analysis. ``preregistration-variants.md`` is written
before the first model. Jobs run seed by seed over every cell, so a stop (``stop_at``, an
interruption) leaves all cells with the same seeds; ``--resume`` continues.
"""

from __future__ import annotations

import argparse
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
from engram.io import atomic_write_text, number
from engram.runs import RunFolder, progress
from engram.streaming.experiments.costs import throughput
from engram.streaming.experiments.design import BASELINE, CONDITIONS, MAIN_SEED0, MEMORIES, Config
from engram.streaming.experiments.eviction import experiment_group
from engram.streaming.experiments.hypotheses import ranking_pairs, score_name, variant_family
from engram.streaming.experiments.plots import plot_variants
from engram.streaming.experiments.preregistration import variants_preregistration
from engram.streaming.experiments.report import variants_report
from engram.streaming.experiments.statistics import compare, compare_to, correct_family, escapes
from engram.streaming.experiments.training import Job, run_job, run_jobs

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


@dataclass
class VariantConfig:
    """What the variant study runs; the task and model settings come from the main run."""

    main_run: str
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
    workers: int = 1

    def __post_init__(self) -> None:
        for variant, conditions in self.cells.items():
            if variant not in VARIANTS:
                raise ValueError(f"cells: expected variants from {VARIANTS}, got {variant!r}")
            unknown = [c for c in conditions if c not in CONDITIONS]
            if unknown or not conditions:
                raise ValueError(
                    f"cells[{variant!r}]: expected conditions from {tuple(CONDITIONS)}, got {conditions}"
                )
            if variant not in ("base", "in_window") and BASELINE not in conditions:
                raise ValueError(f"cells[{variant!r}]: expected {BASELINE!r} among {conditions}")
        if self.seeds is not None and self.seeds < 2:
            raise ValueError(f"seeds: expected ≥ 2 or None, got {self.seeds}")
        if self.stop_at is not None:
            _stop_time(self.stop_at)
        if self.workers < 1:
            raise ValueError(f"workers: expected ≥ 1, got {self.workers}")


def _stop_time(text: str) -> dt.datetime:
    """Today's UTC datetime at ``HH:MM``."""
    try:
        hour, minute = (int(x) for x in text.split(":"))
        return dt.datetime.now(dt.timezone.utc).replace(hour=hour, minute=minute, second=0, microsecond=0)
    except ValueError as error:
        raise ValueError(f"stop_at: expected 'HH:MM' (UTC), got {text!r}") from error




# ------------------------------------------------------------------ the main run
@dataclass
class MainRun:
    cfg: Config
    lr: dict[str, float]
    d: dict[str, float]  # Cohen's d of each memory vs window+sinks
    rows: list[dict[str, Any]]  # per-model results of the base task


def load_main(path: str | Path) -> MainRun:
    folder = RunFolder(path)
    for name in ("config.json", "pilot.json", "results.json"):
        if not folder.file(name).is_file():
            raise FileNotFoundError(f"main_run: expected {folder.file(name)} (a finished main run)")
    saved = json.loads(folder.file("config.json").read_text())["config"]
    cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    results = json.loads(folder.file("results.json").read_text())
    d = {t["a"]: number(t["d"]) for t in results["tests"] if t["b"] == BASELINE}
    rows = [json.loads(p.read_text()) for p in sorted((folder.path / "jobs").glob("main__*.json"))]
    lr = json.loads(folder.file("pilot.json").read_text())["lr"]
    return MainRun(cfg, lr, d, rows)


def study_config(study: VariantConfig, main: MainRun) -> Config:
    """The main run's Config with the study's conditions, rates, steps and workers."""
    wanted = {c for cs in study.cells.values() for c in cs} | {BASELINE}
    conditions = tuple(c for c in CONDITIONS if c in wanted)
    lr = {**main.lr, **study.extra_lr}
    missing = [c for c in conditions if c not in lr]
    if missing:
        raise ValueError(f"extra_lr: expected a learning rate for {missing} (not in the main run)")
    return dataclasses.replace(
        main.cfg,
        conditions=conditions,
        lr_by_condition={c: float(lr[c]) for c in conditions},
        steps=study.steps or main.cfg.steps,
        workers=study.workers,
    )


# ------------------------------------------------------------------ plan




def power_plan(study: VariantConfig, main: MainRun, family_size: int) -> dict[str, Any]:
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
def _jobs(study: VariantConfig, cfg: Config, n_seeds: int) -> list[Job]:
    lr = cfg.lr_by_condition or {}
    return [
        Job("variant", c, v, s, lr[c])
        for s in range(MAIN_SEED0, MAIN_SEED0 + n_seeds)
        for v, cs in study.cells.items()
        for c in cs
    ]


def _train(study: VariantConfig, cfg: Config, jobs: list[Job], out: Path) -> None:
    """Train the jobs not yet done, in order, starting none after ``stop_at``."""
    (out / "jobs").mkdir(exist_ok=True)
    stop = _stop_time(study.stop_at) if study.stop_at else None
    todo = [j for j in jobs if not (out / "jobs" / f"{j.key}.json").exists()]

    def late() -> bool:
        return stop is not None and dt.datetime.now(dt.timezone.utc) >= stop

    if study.workers == 1:
        for job in progress(todo, "variants"):
            if late():
                print(f"stop_at {study.stop_at} reached; {job.key} and later jobs not started")
                return
            run_job(cfg, job, str(out))
        return
    for seed in sorted({j.seed for j in todo}):  # whole seeds at a time keep cells balanced
        if late():
            print(f"stop_at {study.stop_at} reached; seeds from {seed} not started")
            return
        run_jobs(cfg, [j for j in todo if j.seed == seed], out, f"variants, seed {seed}")


def run(study: VariantConfig, folder: RunFolder) -> dict[str, Any]:
    """Plan (written before any model), train, analyse; each step resumes from the folder."""
    # One torch thread, as in the main run's workers: on a shared CPU, extra intra-op threads
    # only wait for cores that other processes hold.
    torch.set_num_threads(1)
    main = load_main(study.main_run)
    cfg = study_config(study, main)
    family = variant_family(study.cells, cfg)
    out = folder.path
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
    jobs = _jobs(study, cfg, plan["n_seeds"])
    _train(study, cfg, jobs, out)
    return analyse(study, cfg, main, folder, jobs, family)


# ------------------------------------------------------------------ analysis
def _complete_seeds(jobs: list[Job], done: dict[str, dict]) -> list[int]:
    seeds = sorted({j.seed for j in jobs})
    return [s for s in seeds if all(j.key in done for j in jobs if j.seed == s)]


def _cell_scores(rows: list[dict], variant: str, condition: str, seeds: list[int], score: str) -> list[float]:
    by_seed = {r["seed"]: r for r in rows if r["variant"] == variant and r["condition"] == condition}
    if condition == "projection_frozen":
        by_seed = {r["seed"]: r for r in rows if r["variant"] == variant and r["condition"] == BASELINE}
        return [by_seed[s]["projection_frozen"]["accuracy"] for s in seeds if s in by_seed]
    return [float(by_seed[s][score]) for s in seeds if s in by_seed]






def analyse(
    study: VariantConfig,
    cfg: Config,
    main: MainRun,
    folder: RunFolder,
    jobs: list[Job],
    family: list[dict],
) -> dict[str, Any]:
    out = folder.path
    done = {
        j.key: json.loads((out / "jobs" / f"{j.key}.json").read_text())
        for j in jobs
        if (out / "jobs" / f"{j.key}.json").exists()
    }
    seeds = _complete_seeds(jobs, done)
    if len(seeds) < 2:
        raise RuntimeError(f"variants: fewer than 2 seeds complete in every cell ({seeds}); resume the run")
    rows = list(done.values())
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
        tests.append({**h, "n_a": len(a), "n_b": len(b) if b else 0, **compare_to(a, b, level)})
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
                **compare(scores(variant, a, score), scores(variant, b, score)),
                **escapes(scores(variant, a, score), scores(variant, b, score)),
            }
        )
    correct_family(ranking, study.alpha)
    post_hoc = _main_ranking(main, study.alpha)

    costs = _far_costs(cfg, study.cells.get("far", ()))
    summary = {
        "seeds": seeds,
        "far_costs": costs,
        "n_seeds_planned": len({j.seed for j in jobs}),
        "cells": cells,
        "tests": tests,
        "ranking": ranking,
        "main_ranking_post_hoc": post_hoc,
        "lr": cfg.lr_by_condition,
    }
    folder.write_json("results.json", summary)
    folder.write_csv("cells.csv", cells)
    folder.write_csv("tests.csv", tests)
    folder.write_csv("ranking.csv", ranking + post_hoc)
    folder.write_csv("far_costs.csv", costs)
    folder.write_csv(
        "models.csv",
        [{k: v for k, v in r.items() if k != "projection_frozen"} for r in rows],
    )
    plot_variants(cfg, folder, cells, main.rows, scores)
    folder.write_report(variants_report(summary))
    return summary


def _far_costs(cfg: Config, conditions: tuple[str, ...]) -> list[dict[str, Any]]:
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
            **compare(by[a], by[b]),
            **escapes(by[a], by[b]),
        }
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    correct_family(rows, alpha)
    return rows








# ------------------------------------------------------------------ command line
def _command(args: argparse.Namespace) -> int:
    if args.resume:
        folder = RunFolder(args.resume)
        saved = json.loads(folder.file("config.json").read_text())["config"]
        saved["cells"] = {k: tuple(v) for k, v in saved["cells"].items()}
        saved["power_from"] = tuple(saved["power_from"])
        if args.stop_at is not None:  # a new deadline for the resumed part (printed, not saved)
            print(f"stop_at for this resume: {args.stop_at} (saved: {saved['stop_at']})")
            saved["stop_at"] = args.stop_at
        study = VariantConfig(**saved)
    else:
        if not args.main:
            raise ValueError("--main: expected the folder of a finished main run, got none")
        overrides = {
            k: getattr(args, k)
            for k in ("seeds", "steps", "workers", "stop_at")
            if getattr(args, k) is not None
        }
        for pair in args.set or []:
            key, _, text = pair.partition("=")
            if key not in {f.name for f in dataclasses.fields(VariantConfig)}:
                raise ValueError(f"--set: expected KEY=JSON with KEY a VariantConfig field, got {pair!r}")
            value = json.loads(text)
            if key == "cells":
                value = {k: tuple(v) for k, v in value.items()}
            overrides[key] = tuple(value) if isinstance(value, list) else value
        study = VariantConfig(main_run=args.main, **overrides)
        folder = RunFolder.create(args.out, "eviction-variants", config=study, seed=MAIN_SEED0)
    print(f"run folder: {folder.path}")
    run(study, folder)
    print(f"report: {folder.file('report.md')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``experiment eviction-variants``."""
    parser = experiment_group(subparsers).add_parser(
        "eviction-variants", help="the eviction experiment's variants at a powered seed count"
    )
    parser.add_argument("--main", default=None, help="folder of a finished main run")
    parser.add_argument("--out", default="runs", help="folder for the run folder (default runs)")
    parser.add_argument("--resume", default=None, help="continue the study in this run folder")
    parser.add_argument("--seeds", type=int, default=None, help="override the power analysis")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    parser.add_argument("--stop-at", dest="stop_at", default=None, help="HH:MM UTC deadline")
    parser.add_argument("--set", action="append", metavar="KEY=JSON", help="override a field")
    parser.set_defaults(func=_command)


__all__ = ["DEFAULT_CELLS", "VariantConfig", "analyse", "load_main", "register", "run"]
