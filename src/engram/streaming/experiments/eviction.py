"""Memory after eviction: can a trace written when a token leaves the window answer later?

Pipeline (each stage resumable from the run folder): a pilot (learning-rate sweep on a
validation set, then a second pilot seed) → a power analysis from the pilot's effect sizes →
``preregistration.md`` → the main run on fresh seeds, one trained model per seed and condition
in parallel worker processes (one torch thread each) → variants → costs (state bytes, tokens/s,
character-level perplexity on tinyshakespeare) → tests, effect sizes, corrections, plots.
The unit of analysis is the trained model: its accuracy over the test set's final queries.
The pieces live beside it: ``design`` (conditions, Config), ``training`` (one model per job),
``costs``, ``hypotheses``, ``statistics``, ``preregistration``, ``plots``, ``report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from engram import stats
from engram.data.recall_tasks import min_query_distance
from engram.io import atomic_write_text
from engram.runs import RunFolder, progress
from engram.streaming.experiments.costs import perplexity, throughput
from engram.streaming.experiments.design import (
    BASELINE,
    CONDITIONS,
    MAIN_SEED0,
    Config,
    quick_config,
)
from engram.streaming.experiments.hypotheses import main_family
from engram.streaming.experiments.plots import plot_main
from engram.streaming.experiments.preregistration import main_preregistration
from engram.streaming.experiments.report import main_report
from engram.streaming.experiments.statistics import binding, compare, main_power
from engram.streaming.experiments.training import Job, accuracies, run_jobs


# ------------------------------------------------------------------ stages
def _pilot(cfg: Config, out: Path) -> dict[str, Any]:
    """Learning rate per condition on the validation set (seed 0), then a second pilot seed;
    with ``cfg.lr_by_condition`` the sweep is skipped and the pilot seeds use those rates."""
    trained = list(cfg.conditions)
    if cfg.lr_by_condition is not None:
        lr = {c: float(cfg.lr_by_condition[c]) for c in trained}
        results, first = [], 0
    else:
        sweep = [Job("pilot", c, "base", 0, lr) for c in trained for lr in cfg.lrs]
        results = run_jobs(cfg, sweep, out, "pilot: learning-rate sweep")
        lr = {}
        for c in trained:
            rows = [r for r in results if r["condition"] == c]
            lr[c] = max(rows, key=lambda r: (r["valid_accuracy"], -r["final_loss"]))["lr"]
        first = 1
    more = [
        Job("pilot", c, "base", s, lr[c]) for c in trained for s in range(first, cfg.pilot_seeds)
    ]
    results += run_jobs(cfg, more, out, "pilot: more seeds")
    pilot = {
        c: accuracies([r for r in results if r["condition"] == c and r["lr"] == lr[c]])
        for c in trained
    }
    pilot["projection_frozen"] = accuracies(
        [r for r in results if r["condition"] == BASELINE and r["lr"] == lr[BASELINE]],
        "projection_frozen",
    )
    return {"lr": lr, "pilot_accuracy": pilot}



# ------------------------------------------------------------------ the whole run
def run(cfg: Config, folder: RunFolder) -> dict[str, Any]:
    """Every stage in order; a stage whose output exists in the folder is not repeated."""
    torch.set_num_threads(1)  # as in the workers, so tokens/s compare like with like
    out = folder.path
    pilot_path, power_path = out / "pilot.json", out / "power.json"
    if pilot_path.exists():
        pilot = json.loads(pilot_path.read_text())
    else:
        pilot = _pilot(cfg, out)
        folder.write_json("pilot.json", pilot)
    if power_path.exists():
        power = json.loads(power_path.read_text())
    else:
        power = main_power(cfg, pilot)
        folder.write_json("power.json", power)
    if not (out / "preregistration.md").exists():
        atomic_write_text(out / "preregistration.md", main_preregistration(cfg, pilot, power))

    seeds = range(MAIN_SEED0, MAIN_SEED0 + power["n_seeds"])
    lr = pilot["lr"]
    main_jobs = [Job("main", c, "base", s, lr[c]) for s in seeds for c in cfg.conditions]
    variant_jobs = [
        Job("variant", c, v, MAIN_SEED0 + s, lr[c])
        for s in range(cfg.variant_seeds)
        for v in cfg.variants
        for c in cfg.variant_conditions
        if c in lr
    ]
    results = run_jobs(cfg, main_jobs + variant_jobs, out, "main run and variants")
    folder.write_csv(
        "results.csv",
        [
            {k: v for k, v in r.items() if k != "projection_frozen"}
            | (
                {
                    "projection_frozen_accuracy": r["projection_frozen"]["accuracy"],
                    "projection_frozen_rate": r["projection_frozen"]["rate"],
                }
                if "projection_frozen" in r
                else {}
            )
            for r in results
        ],
    )
    main = [r for r in results if r["phase"] == "main"]
    by_condition = {c: accuracies([r for r in main if r["condition"] == c]) for c in cfg.conditions}
    by_condition["projection_frozen"] = accuracies(
        [r for r in main if r["condition"] == BASELINE], "projection_frozen"
    )

    chance = cfg.task().chance
    table = []
    for c, acc in by_condition.items():
        ci = stats.mean_ci(acc)
        boot = stats.bootstrap_ci(acc, n_resamples=1000) if len(acc) > 1 else ci
        table.append(
            {
                "condition": c,
                "n": len(acc),
                "accuracy": ci.estimate,
                "t_low": ci.low,
                "t_high": ci.high,
                "boot_low": boot.low,
                "boot_high": boot.high,
                "chance": chance,
            }
        )
    family = main_family(cfg)
    tests = [{**h, **compare(by_condition[h["a"]], by_condition[h["b"]])} for h in family]
    holm_reject, holm_p = stats.correct([t["welch_p"] for t in tests], "holm", cfg.alpha)
    _, bh_p = stats.correct([t["welch_p"] for t in tests], "fdr_bh", cfg.alpha)
    for t, rej, hp, bp in zip(tests, holm_reject, holm_p, bh_p, strict=True):
        directional = t["b"] == BASELINE
        t.update(
            holm_p=float(hp),
            bh_p=float(bp),
            supported=bool(rej and (t["diff"] > 0 or not directional)),
        )
    costs = [throughput(cfg, c) for c in [*cfg.conditions, "projection_frozen"]]
    window_speed = (
        next(c for c in costs if c["condition"] == "window")["parallel_tokens_per_s"]
        if "window" in cfg.conditions
        else costs[0]["parallel_tokens_per_s"]
    )
    for c in costs:
        c["parallel_speed_vs_window"] = c["parallel_tokens_per_s"] / window_speed
    lm_path = out / "perplexity.json"
    if lm_path.exists():
        lm = json.loads(lm_path.read_text())
    else:
        lm = [perplexity(cfg, c) for c in progress(cfg.lm_conditions, "perplexity")]
        folder.write_json("perplexity.json", lm)
    variants = _variant_table(cfg, [r for r in results if r["phase"] == "variant"], main)
    binding_rows = binding(cfg, by_condition)
    summary = {
        "accuracy": table,
        "tests": tests,
        "costs": costs,
        "perplexity": lm,
        "variants": variants,
        "binding": binding_rows,
        "power": power,
        "lr": lr,
    }
    folder.write_json("results.json", summary)
    folder.write_csv("accuracy.csv", table)
    folder.write_csv("tests.csv", tests)
    folder.write_csv("costs.csv", costs)
    folder.write_csv("variants.csv", variants)
    folder.write_csv("binding.csv", binding_rows)
    plot_main(cfg, folder, table, variants, costs, by_condition)
    folder.write_report(main_report(summary))
    return summary


def _variant_table(cfg: Config, rows: list[dict], main: list[dict]) -> list[dict]:
    table = []
    base = [r for r in main if r["condition"] in cfg.variant_conditions]
    for r in [*base, *rows]:
        variant = r["variant"]
        task = cfg.task(variant)
        table.append(
            {
                "variant": variant,
                "condition": r["condition"],
                "seed": r["seed"],
                "accuracy": r["accuracy"],
                "rehearsal_accuracy": r["rehearsal_accuracy"],
                "overwritten_accuracy": r["overwritten_accuracy"],
                "n_pairs": task.n_pairs,
                "min_query_distance": min_query_distance(task),
                "chance": task.chance,
            }
        )
    return table



# ------------------------------------------------------------------ command line
def _settings(pairs: list[str]) -> dict[str, Any]:
    """``KEY=JSON`` overrides of Config fields (lists become tuples, as the fields expect)."""
    fields = {f.name for f in dataclasses.fields(Config)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set: expected KEY=JSON with KEY a Config field, got {pair!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--set {key}: expected a JSON value, got {text!r}") from error
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _command(args: argparse.Namespace) -> int:
    if args.resume:
        folder = RunFolder(args.resume)
        saved = json.loads(folder.file("config.json").read_text())["config"]
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
        cfg = Config(**saved)
    else:
        cfg = quick_config() if args.quick else Config()
        overrides = {
            k: getattr(args, k)
            for k in ("steps", "workers", "max_seeds", "seed")
            if getattr(args, k) is not None
        }
        cfg = dataclasses.replace(cfg, **overrides, **_settings(args.set or []))
        folder = RunFolder.create(args.out, "eviction", config=cfg, seed=cfg.seed)
    print(f"run folder: {folder.path}")
    run(cfg, folder)
    print(f"report: {folder.file('report.md')}")
    return 0


def experiment_group(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subparsers of the ``experiment`` command group, created if it is not there yet."""
    group = subparsers.choices.get("experiment")
    if group is None:
        group = subparsers.add_parser("experiment", help="run a registered experiment")
        group.set_defaults(experiments=group.add_subparsers(dest="experiment", metavar="NAME"))
        group._engram_experiments = group.get_default("experiments")
    experiments = group._engram_experiments
    experiments.required = True
    return experiments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``experiment eviction`` (creating the ``experiment`` group if it is not there)."""
    experiments = experiment_group(subparsers)
    parser = experiments.add_parser(
        "eviction", help="recall after eviction: streaming attention with eviction memories"
    )
    parser.add_argument("--out", default="runs", help="folder for the run folder (default runs)")
    parser.add_argument("--resume", default=None, help="continue the run in this run folder")
    parser.add_argument("--quick", action="store_true", help="a minutes-long smoke version")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model")
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    parser.add_argument("--max-seeds", dest="max_seeds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=JSON",
        help="override a Config field, e.g. --set min_seeds=9 (repeatable)",
    )
    parser.set_defaults(func=_command)


__all__ = ["CONDITIONS", "Config", "Job", "experiment_group", "quick_config", "register", "run"]
