"""Memory after eviction: which trace written when a token leaves the window recalls it later.

Stages, each resumable from the run folder: a pilot (learning-rate sweep on a validation set,
then more pilot seeds) → a power analysis from the pilot's effect sizes → ``preregistration.md``
→ the main run on fresh seeds, one trained model per seed and condition (the toolkit's job
runner; ``--workers`` runs them in parallel) → exploratory variants → costs (state bytes,
tokens/s, character-level perplexity on tinyshakespeare) → tests, effect sizes, Holm, plots.
The unit of analysis is the trained model: its accuracy over the test set's final queries.
The pieces live beside it: ``design`` (conditions, Config), ``training`` (one model per job),
``costs``, ``hypotheses``, ``statistics``, ``preregistration``, ``plots``, ``report``, ``claims``.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from engram import stats
from engram.data.recall_tasks import min_query_distance
from engram.io import atomic_write_text
from engram.runs import Result, RunFolder, progress
from engram.streaming.experiments.claims import binding_claim, hypothesis_claim
from engram.streaming.experiments.costs import perplexity, throughput
from engram.streaming.experiments.design import BASELINE, MAIN_SEED0, QUICK, Config
from engram.streaming.experiments.hypotheses import main_family
from engram.streaming.experiments.plots import plot_main
from engram.streaming.experiments.preregistration import main_preregistration
from engram.streaming.experiments.report import main_sections
from engram.streaming.experiments.statistics import binding, compare, correct_family, main_power
from engram.streaming.experiments.training import ModelSpec, accuracies, flat, train_models

SEED_STRIDE = 1000  # model seeds of run seed s: pilot 1000·s + i, main 100 + 1000·s + i


def _pilot(cfg: Config, folder: RunFolder) -> dict[str, Any]:
    """Learning rate per condition on the validation set (first pilot seed), then the other
    pilot seeds; with ``cfg.lr_by_condition`` the sweep is skipped."""
    trained = list(cfg.conditions)
    first_seed = SEED_STRIDE * cfg.seed
    results: list[dict[str, Any]] = []
    if cfg.lr_by_condition is not None:
        lr = {c: float(cfg.lr_by_condition[c]) for c in trained}
        first = 0
    else:
        sweep = [(ModelSpec(cfg, "pilot", c, "base", x), first_seed) for c in trained for x in cfg.lrs]
        results = train_models(sweep, folder.path, "pilot: learning-rate sweep")
        lr = {}
        for c in trained:
            rows = [r for r in results if r["condition"] == c]
            lr[c] = max(rows, key=lambda r: (r["valid_accuracy"], -r["final_loss"]))["lr"]
        first = 1
    more = [
        (ModelSpec(cfg, "pilot", c, "base", lr[c]), first_seed + s)
        for c in trained
        for s in range(first, cfg.pilot_seeds)
    ]
    results += train_models(more, folder.path, "pilot: more seeds")
    results = [flat(r) for r in results]
    pilot = {
        c: accuracies([r for r in results if r["condition"] == c and r["lr"] == lr[c]])
        for c in trained
    }
    pilot["projection_frozen"] = accuracies(
        [r for r in results if r["condition"] == BASELINE and r["lr"] == lr[BASELINE]],
        "projection_frozen",
    )
    return {"lr": lr, "pilot_accuracy": pilot}


def _stage(folder: RunFolder, name: str, make) -> Any:
    """A stage's JSON output, computed once and read back on resume."""
    path = folder.file(name)
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    folder.write_json(name, value)
    return json.loads(folder.file(name).read_text())


def _accuracy_table(cfg: Config, by_condition: dict[str, list[float]]) -> list[dict[str, Any]]:
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
                "per_seed": " ".join(f"{x:.4f}" for x in acc),
            }
        )
    return table


def _variant_table(cfg: Config, rows: list[dict], main: list[dict]) -> list[dict]:
    table = []
    base = [r for r in main if r["condition"] in cfg.variant_conditions]
    for r in [*base, *rows]:
        task = cfg.task(r["variant"])
        table.append(
            {
                "variant": r["variant"],
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


def _costs(cfg: Config) -> list[dict[str, Any]]:
    costs = [throughput(cfg, c) for c in [*cfg.conditions, "projection_frozen"]]
    reference = next((c for c in costs if c["condition"] == "window"), costs[0])
    for c in costs:
        c["parallel_speed_vs_window"] = c["parallel_tokens_per_s"] / reference["parallel_tokens_per_s"]
    return costs


def run(cfg: Config, folder: RunFolder) -> Result:
    """Every stage in order; a stage whose output exists in the folder is not repeated."""
    torch.set_num_threads(1)  # as in the workers, so tokens/s compare like with like
    pilot = _stage(folder, "pilot.json", lambda: _pilot(cfg, folder))
    power = _stage(folder, "power.json", lambda: main_power(cfg, pilot))
    if not folder.file("preregistration.md").exists():
        atomic_write_text(folder.file("preregistration.md"), main_preregistration(cfg, pilot, power))

    first = MAIN_SEED0 + SEED_STRIDE * cfg.seed
    lr = pilot["lr"]
    main_jobs = [
        (ModelSpec(cfg, "main", c, "base", lr[c]), s)
        for s in range(first, first + power["n_seeds"])
        for c in cfg.conditions
    ]
    variant_jobs = [
        (ModelSpec(cfg, "variant", c, v, lr[c]), first + s)
        for s in range(cfg.variant_seeds)
        for v in cfg.variants
        for c in cfg.variant_conditions
        if c in lr
    ]
    results = [flat(r) for r in train_models(main_jobs + variant_jobs, folder.path, "main run and variants")]
    main = [r for r in results if r["phase"] == "main"]
    by_condition = {c: accuracies([r for r in main if r["condition"] == c]) for c in cfg.conditions}
    by_condition["projection_frozen"] = accuracies(
        [r for r in main if r["condition"] == BASELINE], "projection_frozen"
    )

    tests = [
        {**h, **compare(by_condition[h["a"]], by_condition[h["b"]], (h["a"], h["b"]))}
        for h in main_family(cfg)
    ]
    correct_family(tests, cfg.alpha)
    binding_rows = binding(cfg, by_condition)
    accuracy = _accuracy_table(cfg, by_condition)
    variants = _variant_table(cfg, [r for r in results if r["phase"] == "variant"], main)
    costs = _costs(cfg)
    lm = _stage(
        folder,
        "perplexity.json",
        lambda: [perplexity(cfg, c) for c in progress(cfg.lm_conditions, "perplexity")],
    )
    figures = plot_main(cfg, folder, accuracy, variants, costs, by_condition)
    setting = (
        f"{power['n_seeds']} seeds, {cfg.steps} steps, {cfg.n_pairs} pairs, filler {cfg.n_filler}, "
        f"window {cfg.window} + {cfg.n_sink} sink, d_model {cfg.d_model}"
    )
    claims = [hypothesis_claim(t, setting) for t in tests]
    claims += [binding_claim(b, setting) for b in binding_rows if b["in_family"]]
    tables = {
        "accuracy": accuracy,
        "tests": tests,
        "binding": binding_rows,
        "costs": costs,
        "perplexity": lm,
        "variants": variants,
        "power": power["rows"],
        "models": results,
    }
    return Result(
        claims=tuple(claims),
        tables=tables,
        figures=figures,
        title="Memory after eviction",
        intro=(
            "Recall of key–value bindings evicted from a sliding window, per eviction memory; "
            f"pre-registered (preregistration.md), seeds from the power rule: {power['rule']}."
        ),
        sections=main_sections(tables),
    )


__all__ = ["QUICK", "Config", "run"]
