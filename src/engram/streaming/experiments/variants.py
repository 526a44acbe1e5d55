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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch

from engram import stats
from engram.data.recall_tasks import min_query_distance
from engram.io import atomic_write_text, number
from engram.runs import RunFolder, markdown_table, progress
from engram.streaming.experiments import eviction as ev

BASELINE = ev.BASELINE
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
            unknown = [c for c in conditions if c not in ev.CONDITIONS]
            if unknown or not conditions:
                raise ValueError(
                    f"cells[{variant!r}]: expected conditions from {tuple(ev.CONDITIONS)}, got {conditions}"
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


def score_name(variant: str) -> str:
    """The score a variant's hypotheses use: recall of the new value for overwritten keys."""
    return "overwritten_accuracy" if variant == "overwrite" else "accuracy"


# ------------------------------------------------------------------ the main run
@dataclass
class MainRun:
    cfg: ev.Config
    lr: dict[str, float]
    d: dict[str, float]  # Cohen's d of each memory vs window+sinks
    rows: list[dict[str, Any]]  # per-model results of the base task


def load_main(path: str | Path) -> MainRun:
    folder = RunFolder(path)
    for name in ("config.json", "pilot.json", "results.json"):
        if not folder.file(name).is_file():
            raise FileNotFoundError(f"main_run: expected {folder.file(name)} (a finished main run)")
    saved = json.loads(folder.file("config.json").read_text())["config"]
    cfg = ev.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    results = json.loads(folder.file("results.json").read_text())
    d = {t["a"]: number(t["d"]) for t in results["tests"] if t["b"] == BASELINE}
    rows = [json.loads(p.read_text()) for p in sorted((folder.path / "jobs").glob("main__*.json"))]
    lr = json.loads(folder.file("pilot.json").read_text())["lr"]
    return MainRun(cfg, lr, d, rows)


def study_config(study: VariantConfig, main: MainRun) -> ev.Config:
    """The main run's Config with the study's conditions, rates, steps and workers."""
    wanted = {c for cs in study.cells.values() for c in cs} | {BASELINE}
    conditions = tuple(c for c in ev.CONDITIONS if c in wanted)
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
def hypotheses(study: VariantConfig, cfg: ev.Config) -> list[dict[str, Any]]:
    """The confirmatory family over all variants (Holm across all of it)."""
    family: list[dict[str, Any]] = []

    def add(variant: str, a: str, b: str | None, claim: str, directional: bool) -> None:
        family.append(
            {
                "id": f"V{len(family) + 1}",
                "variant": variant,
                "a": a,
                "b": b,
                "score": score_name(variant),
                "directional": directional,
                "claim": claim,
            }
        )

    for variant, conditions in study.cells.items():
        if variant == "in_window":
            if BASELINE in conditions:
                level = 1 / cfg.task(variant).n_pairs
                add(
                    variant,
                    BASELINE,
                    None,
                    f"with every pair inside the window, {BASELINE} recalls bindings "
                    f"(mean > 1/N = {level:g}; one-sided one-sample t-test)",
                    True,
                )
            continue
        for m in conditions:
            if m in ev.MEMORIES:
                what = "new values of overwritten keys" if variant == "overwrite" else "bindings"
                add(variant, m, BASELINE, f"{m} recalls evicted {what} better than {BASELINE}", True)
        pairs = {
            "far": [
                (
                    "knn",
                    "knn_unbounded",
                    "the bounded kNN, which must drop entries, differs from the unbounded one",
                ),
                ("knn", "matrix", "at equal state size, kNN and the matrix differ"),
            ],
            "overwrite": [
                (
                    "matrix_delta",
                    "matrix",
                    "on overwritten keys the delta rule and the additive matrix differ",
                ),
            ],
        }.get(variant, [])
        for a, b, claim in pairs:
            if a in conditions and b in conditions:
                add(variant, a, b, f"{claim} (two-sided)", False)
    return family


def ranking_pairs(study: VariantConfig) -> list[tuple[str, str, str]]:
    """Secondary family: every pair of memories within each variant (two-sided)."""
    out = []
    for variant, conditions in study.cells.items():
        memories = [c for c in conditions if c in ev.MEMORIES]
        out += [(variant, a, b) for i, a in enumerate(memories) for b in memories[i + 1 :]]
    return out


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


def _preregistration(study: VariantConfig, cfg: ev.Config, family: list[dict], plan: dict[str, Any]) -> str:
    cells = "\n".join(f"- `{v}` ({_task_line(cfg, v)}): {', '.join(cs)}" for v, cs in study.cells.items())
    hyp = "\n".join(f"- **{h['id']}** [{h['variant']}, score `{h['score']}`]: {h['claim']}" for h in family)
    last = ev.MAIN_SEED0 + plan["n_seeds"] - 1
    lrs = ", ".join(f"`{c}` {lr:g}" for c, lr in cfg.lr_by_condition.items())
    stop = f"no model starts after {study.stop_at} UTC" if study.stop_at else "none"
    return f"""# Preregistration — eviction variants

Written {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, before the first model of this
study. Nothing below changes once a model has been trained.

## Design
- Main run: `{study.main_run}` (its config, learning rates and `base`-task results are reused).
- Model and training as in the main run: {cfg.n_layers} layers, d_model {cfg.d_model}, window
  {cfg.window}, {cfg.n_sink} sink, {cfg.steps} steps of {cfg.batch_size} fresh sequences; test
  set of {cfg.test_size} sequences (seed {ev.TEST_SEED}). Learning rates (no sweep): {lrs}.
- Cells (variant: conditions):
{cells}
- Seeds {ev.MAIN_SEED0}–{last} in every cell. Unit of analysis: one trained model; its score is its
  accuracy on the test set's final queries (for `overwrite`: on the final queries of the
  overwritten keys, the new value being the target).

## Hypotheses (confirmatory family V, Holm across all of it at α = {study.alpha})
{hyp}

## Tests and success criteria
- Two-condition hypotheses: Welch's t-test (primary; permutation test reported), two-sided;
  Cohen's d with a bootstrap 95% interval, Cohen's h. A hypothesis marked "better than" is
  **supported** when its Holm-adjusted p < {study.alpha} and the difference is positive; a
  two-sided one when its Holm-adjusted p < {study.alpha}.
- The in-window control: one-sided one-sample t-test of the mean against 1/N, in the same
  Holm family.
- Secondary family R (ranking): every pair of memories within each variant, Welch two-sided,
  Holm within R. Reported with the same statistics; it was not powered (see below).
- Descriptive, outside the families: full attention per variant (upper bound), projection
  writes into each frozen window+sinks model (the source's method, rate chosen on validation),
  the share of overwritten keys answered with their old value, seeds at ≥ 0.75.

## Sample size
Power {study.power} for the smallest main-run effect among {list(plan["main_run_d"])}
(d = {", ".join(f"{k} {v:.2f}" for k, v in plan["main_run_d"].items())}; capped at 4), at the
strictest Holm step α/m = {study.alpha}/{plan["family_size"]} = {plan["alpha_per_test"]:.4f}:
**{plan["n_needed"]} seeds** per cell{_override(plan)}.
The comparisons between memories (far: kNN vs kNN-unbounded and kNN vs matrix; overwrite:
delta vs matrix; family R) are not powered by this rule: the main run's differences between
memories were d ≤ 0.3, which would need ≥ 175 seeds per cell. A null there is not evidence of
no difference.

## Stopping rule
Jobs run seed by seed over all cells. Deadline: {stop}. If it stops the run, the analysis uses
the seeds that are complete in every cell (the same n everywhere) and says so; nothing else
is dropped.
"""


def _override(plan: dict[str, Any]) -> str:
    return f" (overridden: {plan['n_seeds']})" if plan["override"] else ""


def _task_line(cfg: ev.Config, variant: str) -> str:
    task = cfg.task(variant)
    extra = ", rehearsal" if task.rehearsal else ""
    extra += f", {task.n_overwrite} overwrite" if task.n_overwrite else ""
    return (
        f"{task.n_pairs} pairs, filler {task.n_filler}{extra}, length {task.length}, "
        f"min. distance {min_query_distance(task)}"
    )


# ------------------------------------------------------------------ run
def _jobs(study: VariantConfig, cfg: ev.Config, n_seeds: int) -> list[ev.Job]:
    lr = cfg.lr_by_condition or {}
    return [
        ev.Job("variant", c, v, s, lr[c])
        for s in range(ev.MAIN_SEED0, ev.MAIN_SEED0 + n_seeds)
        for v, cs in study.cells.items()
        for c in cs
    ]


def _train(study: VariantConfig, cfg: ev.Config, jobs: list[ev.Job], out: Path) -> None:
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
            ev._run_job(cfg, job, str(out))
        return
    for seed in sorted({j.seed for j in todo}):  # whole seeds at a time keep cells balanced
        if late():
            print(f"stop_at {study.stop_at} reached; seeds from {seed} not started")
            return
        ev.run_jobs(cfg, [j for j in todo if j.seed == seed], out, f"variants, seed {seed}")


def run(study: VariantConfig, folder: RunFolder) -> dict[str, Any]:
    """Plan (written before any model), train, analyse; each step resumes from the folder."""
    # One torch thread, as in the main run's workers: on a shared CPU, extra intra-op threads
    # only wait for cores that other processes hold.
    torch.set_num_threads(1)
    main = load_main(study.main_run)
    cfg = study_config(study, main)
    family = hypotheses(study, cfg)
    out = folder.path
    if folder.file("power.json").exists():
        plan = json.loads(folder.file("power.json").read_text())
    else:
        plan = power_plan(study, main, len(family))
        folder.write_json("power.json", plan)
    if not folder.file("preregistration-variants.md").exists():
        atomic_write_text(
            folder.file("preregistration-variants.md"),
            _preregistration(study, cfg, family, plan),
        )
    jobs = _jobs(study, cfg, plan["n_seeds"])
    _train(study, cfg, jobs, out)
    return analyse(study, cfg, main, folder, jobs, family)


# ------------------------------------------------------------------ analysis
def _complete_seeds(jobs: list[ev.Job], done: dict[str, dict]) -> list[int]:
    seeds = sorted({j.seed for j in jobs})
    return [s for s in seeds if all(j.key in done for j in jobs if j.seed == s)]


def _cell_scores(rows: list[dict], variant: str, condition: str, seeds: list[int], score: str) -> list[float]:
    by_seed = {r["seed"]: r for r in rows if r["variant"] == variant and r["condition"] == condition}
    if condition == "projection_frozen":
        by_seed = {r["seed"]: r for r in rows if r["variant"] == variant and r["condition"] == BASELINE}
        return [by_seed[s]["projection_frozen"]["accuracy"] for s in seeds if s in by_seed]
    return [float(by_seed[s][score]) for s in seeds if s in by_seed]


def _test(h: dict[str, Any], a: list[float], b: list[float] | None, level: float) -> dict:
    if b is None:  # one-sample, one-sided against the value-set level
        x = np.asarray(a, dtype=float)
        if np.ptp(x) > 0:
            p = float(scipy.stats.ttest_1samp(x, level, alternative="greater").pvalue)
        else:
            p = 0.0 if x.mean() > level else 1.0
        return {
            "mean_a": float(x.mean()),
            "mean_b": level,
            "diff": float(x.mean() - level),
            "welch_p": p,
            "perm_p": float("nan"),
            "d": float((x.mean() - level) / x.std(ddof=1)) if np.ptp(x) > 0 else float("inf"),
            "d_low": float("nan"),
            "d_high": float("nan"),
            "h": stats.cohens_h(float(x.mean()), level),
        }
    return ev._compare(a, b)


def _corrected(rows: list[dict], alpha: float) -> None:
    if not rows:
        return
    reject, holm = stats.correct([r["welch_p"] for r in rows], "holm", alpha)
    _, bh = stats.correct([r["welch_p"] for r in rows], "fdr_bh", alpha)
    for r, rej, hp, bp in zip(rows, reject, holm, bh, strict=True):
        r.update(
            holm_p=float(hp),
            bh_p=float(bp),
            supported=bool(rej and (r["diff"] > 0 or not r.get("directional", False))),
        )


def analyse(
    study: VariantConfig,
    cfg: ev.Config,
    main: MainRun,
    folder: RunFolder,
    jobs: list[ev.Job],
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
        tests.append({**h, "n_a": len(a), "n_b": len(b) if b else 0, **_test(h, a, b, level)})
    _corrected(tests, study.alpha)

    ranking = []
    for variant, a, b in ranking_pairs(study):
        score = score_name(variant)
        ranking.append(
            {
                "family": "R (variants, pre-registered)",
                "variant": variant,
                "a": a,
                "b": b,
                **ev._compare(scores(variant, a, score), scores(variant, b, score)),
                **_escapes(scores(variant, a, score), scores(variant, b, score)),
            }
        )
    _corrected(ranking, study.alpha)
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
    _plots(cfg, folder, cells, main, scores)
    folder.write_report(_report(summary))
    return summary


def _far_costs(cfg: ev.Config, conditions: tuple[str, ...]) -> list[dict[str, Any]]:
    """State bytes and tokens/s at the far task's length, where the bounded kNN is full."""
    far = dataclasses.replace(cfg, n_filler=cfg.task("far").n_filler)
    return [ev._throughput(far, c) for c in conditions]


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


def _main_ranking(main: MainRun, alpha: float) -> list[dict]:
    """Every pair of the main run's trained memories and full attention (post hoc: the main
    run's pre-registration had only H7 and H8 between memories)."""
    names = [c for c in main.cfg.conditions if c in ev.MEMORIES or c == "full"]
    by = {c: [float(r["accuracy"]) for r in main.rows if r["condition"] == c] for c in names}
    rows = [
        {
            "family": "main run, post hoc",
            "variant": "base",
            "a": a,
            "b": b,
            **ev._compare(by[a], by[b]),
            **_escapes(by[a], by[b]),
        }
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    _corrected(rows, alpha)
    return rows


def _escapes(a: list[float], b: list[float], threshold: float = 0.75) -> dict[str, Any]:
    """Seeds at ≥ ``threshold`` in each group and Fisher's exact test on those counts: with
    bimodal seeds, how often a memory escapes the 1/N plateau is the quantity that differs."""
    ka, kb = int(np.sum(np.asarray(a) >= threshold)), int(np.sum(np.asarray(b) >= threshold))
    table = [[ka, len(a) - ka], [kb, len(b) - kb]]
    return {
        "escaped_a": f"{ka}/{len(a)}",
        "escaped_b": f"{kb}/{len(b)}",
        "fisher_p": float(scipy.stats.fisher_exact(table).pvalue),
    }


def _plots(cfg: ev.Config, folder: RunFolder, cells: list[dict], main: MainRun, scores) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base_n = len({r["seed"] for r in main.rows})
    for axis, variants, name in (
        ("min_query_distance", ("in_window", "base", "far"), "accuracy_vs_distance.png"),
        ("n_pairs", ("pairs_1", "base", "pairs_4"), "accuracy_vs_pairs.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        conditions = [c for c in ev.CONDITIONS if any(x["condition"] == c for x in cells)]
        for k, c in enumerate(conditions):
            xs, ys, lo, hi = [], [], [], []
            for v in variants:
                if v == "base":
                    acc = [float(r["accuracy"]) for r in main.rows if r["condition"] == c]
                else:
                    acc = (
                        [x for x in scores(v, c)]
                        if any(x["variant"] == v and x["condition"] == c for x in cells)
                        else []
                    )
                if not acc:
                    continue
                ci = stats.mean_ci(acc)
                task = cfg.task(v)
                x = min_query_distance(task) if axis == "min_query_distance" else task.n_pairs
                offset = (k - len(conditions) / 2) * (0.35 if axis == "min_query_distance" else 0.04)
                xs.append(x + offset if axis == "min_query_distance" else x * (1 + offset))
                ys.append(ci.estimate)
                lo.append(ci.estimate - ci.low)
                hi.append(ci.high - ci.estimate)
                ax.scatter(np.full(len(acc), xs[-1]), acc, s=5, color=f"C{k}", alpha=0.5)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=3, color=f"C{k}", label=c)
        ax.axhline(cfg.task().chance, color="grey", ls="--", lw=0.8, label="chance")
        if axis == "n_pairs":
            ax.set_xscale("log", base=2)
            ax.plot([1, 2, 4], [1, 0.5, 0.25], ":", color="tab:red", lw=0.8, label="1/N")
        else:
            ax.axvline(cfg.receptive_field() + 0.5, color="k", lw=0.6, ls=":")
            ax.axhline(0.5, color="tab:red", ls=":", lw=0.8, label="1/N")
        ax.set_xlabel(axis.replace("_", " "))
        ax.set_ylabel("final-query accuracy")
        ax.set_title(
            f"mean, 95% t-interval; base: main run (n = {base_n}); shared 2-core CPU",
            fontsize=8,
        )
        ax.legend(fontsize=7)
        folder.save_figure(name, fig)


def _report(summary: dict[str, Any]) -> str:
    keep = ("id", "variant", "a", "b", "score", "n_a", "mean_a", "mean_b", *ev.EFFECT_COLUMNS)
    rank = ("family", "variant", "a", "b", "mean_a", "mean_b", "diff", "d", "d_low", "d_high",
            "welch_p", "holm_p", "supported", "escaped_a", "escaped_b", "fisher_p")
    return (
        "# Eviction variants — report\n\n"
        f"Measured on a shared 2-core CPU. Seeds complete in every cell: {summary['seeds']} "
        f"(planned {summary['n_seeds_planned']}); see preregistration-variants.md.\n\n"
        "## Cells\n\n"
        + markdown_table(summary["cells"])
        + "\n## Confirmatory family V (Holm)\n\n"
        + markdown_table([{k: t[k] for k in keep} for t in summary["tests"]])
        + "\n## Ranking (family R, Holm within)\n\n"
        + markdown_table([{k: t[k] for k in rank} for t in summary["ranking"]])
        + "\n## Main run ranking (post hoc, Holm within)\n\n"
        + markdown_table([{k: t[k] for k in rank} for t in summary["main_ranking_post_hoc"]])
        + "\n## Costs at the far task's length\n\n"
        + markdown_table(summary["far_costs"])
    )


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
        folder = RunFolder.create(args.out, "eviction-variants", config=study, seed=ev.MAIN_SEED0)
    print(f"run folder: {folder.path}")
    run(study, folder)
    print(f"report: {folder.file('report.md')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``experiment eviction-variants``."""
    parser = ev.experiment_group(subparsers).add_parser(
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


__all__ = ["DEFAULT_CELLS", "VariantConfig", "analyse", "hypotheses", "load_main", "register", "run"]
