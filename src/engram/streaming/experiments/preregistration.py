"""The preregistration texts, written after the pilot (main run) or before the first model
(variants) and never changed afterwards."""

from __future__ import annotations

import time
from typing import Any

from engram.data.recall_tasks import min_query_distance
from engram.runs import markdown_table
from engram.streaming.experiments.design import BASELINE, MAIN_SEED0, TEST_SEED, VALIDATION_SEED, Config
from engram.streaming.experiments.hypotheses import main_family


def main_preregistration(cfg: Config, pilot: dict[str, Any], power: dict[str, Any]) -> str:
    """The main run's plan: design, hypotheses, tests and the seed count from the pilot."""
    hyp = "\n".join(
        f"- **{h['id']}**: {h['claim']} (a = `{h['a']}`, b = `{h['b']}`)" for h in main_family(cfg)
    )
    lrs = "\n".join(f"- `{c}`: {lr:g}" for c, lr in pilot["lr"].items())
    lr_rule = (
        "fixed in advance (`lr_by_condition`, no sweep in this run):"
        if cfg.lr_by_condition is not None
        else f"chosen on a validation set (seed {VALIDATION_SEED}) from {list(cfg.lrs)}:"
    )
    task = cfg.task()
    last_seed = MAIN_SEED0 + power["n_seeds"] - 1
    return f"""# Preregistration — memory after eviction

Written {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, after the pilot and before
the main run. Nothing below is changed after the main run starts.

## Design
- Task: `[sink] k1 v1 … k{task.n_pairs} v{task.n_pairs} | filler × {task.n_filler} | queries`,
  keys/values/filler from disjoint vocabularies ({task.key_vocab}/{task.value_vocab}/
  {task.filler_vocab}); chance = 1/{task.value_vocab} = {task.chance:.4f}. Smallest key-to-query
  distance {min_query_distance(task)} tokens > the stacked receptive field of a window-only
  model ({cfg.receptive_field()} tokens = layers × (window − 1 + conv − 1)), so nothing can be
  answered from the window, through any layer.
- Model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, causal conv
  {cfg.conv_kernel}, window {cfg.window}, {cfg.n_sink} sink; {cfg.steps} AdamW steps of
  {cfg.batch_size} fresh sequences, one-cycle schedule; test set of {cfg.test_size} sequences
  (seed {TEST_SEED}); learning rate per condition {lr_rule}
{lrs}
- `projection_frozen` (the source's method): the trained `window_sinks` model of each seed with
  rank-1 writes into W_K, W_V at test time, the rate chosen on the validation set from
  {[0.0, *cfg.projection_rates]}.
- Unit of analysis: one trained model (seed); its score is its accuracy on the test set's
  final queries.

## Hypotheses (confirmatory family)
{hyp}

## Tests and success criteria
- Each hypothesis: Welch's t-test (primary) and a permutation test (reported), two-sided,
  Holm correction across the family at α = {cfg.alpha} (Benjamini–Hochberg also reported).
- A memory hypothesis (a vs {BASELINE}) is **supported** when the Holm-adjusted Welch p < α and
  the mean difference is positive; effect sizes: Cohen's d with a bootstrap 95% interval and
  Cohen's h on the mean accuracies.
- Sanity checks (not in the family): `full` above chance; `window` and `window_sinks` within
  their 95% interval of chance.
- Variants ({", ".join(cfg.variants)}) on {", ".join(cfg.variant_conditions)} with
  {cfg.variant_seeds} seed(s) each are exploratory.

## Sample size
{power["rule"]}. Pilot (seeds 0–{cfg.pilot_seeds - 1}, excluded from the main analysis):

{markdown_table(power["rows"])}
→ **{power["n_seeds"]} seeds per condition** (seeds {MAIN_SEED0}–{last_seed}).
"""


def variants_preregistration(study: Any, cfg: Config, family: list[dict], plan: dict[str, Any]) -> str:
    """The variant study's plan (``study`` a ``VariantConfig``): cells, family V, seeds, stopping rule."""
    cells = "\n".join(f"- `{v}` ({_task_line(cfg, v)}): {', '.join(cs)}" for v, cs in study.cells.items())
    hyp = "\n".join(f"- **{h['id']}** [{h['variant']}, score `{h['score']}`]: {h['claim']}" for h in family)
    last = MAIN_SEED0 + plan["n_seeds"] - 1
    lrs = ", ".join(f"`{c}` {lr:g}" for c, lr in cfg.lr_by_condition.items())
    stop = f"no model starts after {study.stop_at} UTC" if study.stop_at else "none"
    return f"""# Preregistration — eviction variants

Written {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}, before the first model of this
study. Nothing below changes once a model has been trained.

## Design
- Main run: `{study.main_run}` (its config, learning rates and `base`-task results are reused).
- Model and training as in the main run: {cfg.n_layers} layers, d_model {cfg.d_model}, window
  {cfg.window}, {cfg.n_sink} sink, {cfg.steps} steps of {cfg.batch_size} fresh sequences; test
  set of {cfg.test_size} sequences (seed {TEST_SEED}). Learning rates (no sweep): {lrs}.
- Cells (variant: conditions):
{cells}
- Seeds {MAIN_SEED0}–{last} in every cell. Unit of analysis: one trained model; its score is its
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


def _task_line(cfg: Config, variant: str) -> str:
    task = cfg.task(variant)
    extra = ", rehearsal" if task.rehearsal else ""
    extra += f", {task.n_overwrite} overwrite" if task.n_overwrite else ""
    return (
        f"{task.n_pairs} pairs, filler {task.n_filler}{extra}, length {task.length}, "
        f"min. distance {min_query_distance(task)}"
    )

