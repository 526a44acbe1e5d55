"""Memory after eviction: can a trace written when a token leaves the window answer later?

Pipeline (each stage resumable from the run folder): a pilot (learning-rate sweep on a
validation set, then a second pilot seed) → a power analysis from the pilot's effect sizes →
``preregistration.md`` → the main run on fresh seeds, one trained model per seed and condition
in parallel worker processes (one torch thread each) → variants → costs (state bytes, tokens/s,
character-level perplexity on tinyshakespeare) → tests, effect sizes, corrections, plots.
The unit of analysis is the trained model: its accuracy over the test set's final queries.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch

from engram import stats
from engram.data.location import data_root
from engram.data.recall_tasks import RecallTaskConfig, make_batch, min_query_distance
from engram.io import atomic_write_text, to_json
from engram.runs import RunFolder, markdown_table, progress
from engram.streaming import StreamingConfig, StreamingTransformer

# Trained conditions and the model settings that make them; "projection_frozen" is not
# trained: it is the window+sinks model with rank-1 projection writes switched on at test.
CONDITIONS: dict[str, dict[str, Any]] = {
    "window": {"n_sink": 0, "memory": "none"},
    "window_sinks": {"memory": "none"},
    "matrix": {"memory": "matrix"},
    "matrix_ones": {"memory": "matrix_ones"},
    "matrix_delta": {"memory": "matrix_delta"},
    "association": {"memory": "association"},
    "knn": {"memory": "knn"},
    "knn_unbounded": {"memory": "knn_unbounded"},
    "projection_trained": {"memory": "projection", "projection_trainable": True},
    "full": {"window": None, "n_sink": 0, "memory": "none"},
}
MEMORIES = (
    "matrix",
    "matrix_ones",
    "matrix_delta",
    "association",
    "knn",
    "knn_unbounded",
    "projection_trained",
    "projection_frozen",
)
BASELINE = "window_sinks"
TEST_SEED, VALIDATION_SEED, MAIN_SEED0 = 10_000, 20_000, 100


@dataclass
class Config:
    """Everything that fixes the experiment; the defaults are the run reported in
    docs/eviction/README.md (reduced to fit a shared 2-core CPU; see there)."""

    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    conv_kernel: int = 3
    window: int = 4
    n_sink: int = 1
    n_pairs: int = 2
    n_filler: int = 12
    key_vocab: int = 16
    value_vocab: int = 16
    filler_vocab: int = 8
    steps: int = 400
    batch_size: int = 32
    lrs: tuple[float, ...] = (3e-3, 1e-2)
    # Learning rates fixed in advance (e.g. by an earlier run's sweep): the pilot then runs no
    # sweep, only its seeds, which buys main-run seeds or steps when the budget is tight.
    lr_by_condition: dict[str, float] | None = None
    test_size: int = 512
    conditions: tuple[str, ...] = tuple(c for c in CONDITIONS if c != "projection_trained")
    projection_rates: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    pilot_seeds: int = 2
    min_seeds: int = 3
    max_seeds: int = 4
    smallest_effect: float = 1.5
    power: float = 0.8
    alpha: float = 0.05
    variant_conditions: tuple[str, ...] = ("window_sinks", "matrix", "full")
    variant_seeds: int = 1
    variants: tuple[str, ...] = ("in_window", "far", "pairs_1", "pairs_4", "rehearsal", "overwrite")
    lm_steps: int = 200
    lm_length: int = 64
    lm_conditions: tuple[str, ...] = (
        "window_sinks",
        "matrix",
        "matrix_delta",
        "knn",
        "full",
    )
    cost_batch: int = 32
    workers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown or BASELINE not in self.conditions:
            raise ValueError(
                f"conditions: expected names from {tuple(CONDITIONS)} including "
                f"{BASELINE!r}, got {self.conditions}"
            )
        if not self.lrs:
            raise ValueError("lrs: expected at least one learning rate, got none")
        if self.lr_by_condition is not None:
            missing = [c for c in self.conditions if c not in self.lr_by_condition]
            if missing:
                raise ValueError(
                    f"lr_by_condition: expected a learning rate for every condition, "
                    f"missing {missing}"
                )
        if self.pilot_seeds < 2:
            raise ValueError(
                f"pilot_seeds: expected ≥ 2 (a variance is needed), got {self.pilot_seeds}"
            )
        if not 2 <= self.min_seeds <= self.max_seeds:
            raise ValueError(
                f"min_seeds/max_seeds: expected 2 ≤ min ≤ max, got "
                f"{self.min_seeds}, {self.max_seeds}"
            )

    def task(self, variant: str = "base") -> RecallTaskConfig:
        base = {
            "n_pairs": self.n_pairs,
            "n_filler": self.n_filler,
            "key_vocab": self.key_vocab,
            "value_vocab": self.value_vocab,
            "filler_vocab": self.filler_vocab,
        }
        change = {
            "base": {},
            "in_window": {"n_filler": 0},
            "far": {"n_filler": 2 * self.n_filler},
            "pairs_1": {"n_pairs": 1},
            "pairs_4": {"n_pairs": 4},
            "rehearsal": {"rehearsal": True},
            "overwrite": {"n_overwrite": max(1, self.n_pairs // 2)},
        }
        if variant not in change:
            raise ValueError(f"variant: expected one of {tuple(change)}, got {variant!r}")
        return RecallTaskConfig(**{**base, **change[variant]})

    def model(self, condition: str, vocab_size: int) -> StreamingConfig:
        settings = {"window": self.window, "n_sink": self.n_sink, **CONDITIONS[condition]}
        return StreamingConfig(
            vocab_size=vocab_size,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            conv_kernel=self.conv_kernel,
            **settings,
        )

    def receptive_field(self) -> int:
        """How far back a window-only model can see through its stacked layers."""
        return self.n_layers * (self.window - 1 + self.conv_kernel - 1)


def quick_config() -> Config:
    """A minutes-long version for smoke tests and the CI-sized check."""
    return Config(
        steps=60,
        batch_size=16,
        lrs=(1e-2,),
        test_size=64,
        conditions=("window", "window_sinks", "matrix", "full"),
        projection_rates=(1e-2,),
        pilot_seeds=2,
        min_seeds=2,
        max_seeds=2,
        variant_conditions=("window_sinks",),
        variants=("in_window",),
        lm_steps=10,
        lm_length=32,
        lm_conditions=("window_sinks", "matrix"),
        workers=1,
    )


# ------------------------------------------------------------------ one trained model
@dataclass(frozen=True)
class Job:
    """One model to train and test: its key is its file name in ``jobs/``."""

    phase: str
    condition: str
    variant: str
    seed: int
    lr: float

    @property
    def key(self) -> str:
        return f"{self.phase}__{self.condition}__{self.variant}__s{self.seed}__lr{self.lr:g}"


def _predict(model: StreamingTransformer, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(batch.tokens).argmax(-1)


def _accuracy(pred: torch.Tensor, batch, mask: torch.Tensor, targets=None) -> float:
    """Share of positions under ``mask`` where ``pred`` equals the targets (nan if none)."""
    hits = (pred == (batch.targets if targets is None else targets))[mask]
    return float(hits.float().mean()) if hits.numel() else float("nan")


def _set_projection(model: StreamingTransformer, rate: float | None) -> StreamingTransformer:
    """A copy of a trained window+sinks model with projection writes at ``rate`` (or none)."""
    cfg = dataclasses.replace(
        model.cfg, memory="projection" if rate else "none", projection_rate=rate or 1e-2
    )
    copy = StreamingTransformer(cfg)
    copy.load_state_dict(model.state_dict(), strict=False)
    return copy.eval()


def train_and_test(cfg: Config, job: Job) -> dict[str, Any]:
    """Train one model on fresh batches, then score it on the fixed test set."""
    task = cfg.task(job.variant)
    torch.manual_seed(job.seed)
    model = StreamingTransformer(cfg.model(job.condition, task.vocab_size))
    optimiser = torch.optim.AdamW(model.parameters(), lr=job.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=job.lr, total_steps=cfg.steps, pct_start=0.1
    )
    data = torch.Generator().manual_seed(1_000_000 + job.seed)
    start = time.perf_counter()
    losses = []
    for _ in range(cfg.steps):
        batch = make_batch(task, cfg.batch_size, data)
        loss = model.cross_entropy(batch.tokens, batch.targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    train_seconds = time.perf_counter() - start
    model.eval()
    test = make_batch(task, cfg.test_size, torch.Generator().manual_seed(TEST_SEED))
    valid = make_batch(task, cfg.test_size, torch.Generator().manual_seed(VALIDATION_SEED))
    # One forward pass per model and set; every score below reads the same predictions.
    pred, pred_valid = _predict(model, test), _predict(model, valid)
    result: dict[str, Any] = {
        **dataclasses.asdict(job),
        "key": job.key,
        "accuracy": _accuracy(pred, test, test.final_queries),
        "valid_accuracy": _accuracy(pred_valid, valid, valid.final_queries),
        "rehearsal_accuracy": _accuracy(pred, test, test.rehearsal_queries),
        "overwritten_accuracy": _accuracy(pred, test, test.overwritten_queries),
        # overwritten keys answered with their first (old) value instead of the new one
        "stale_rate": _accuracy(pred, test, test.overwritten_queries, test.stale_targets),
        "final_loss": float(np.mean(losses[-20:])),
        "train_seconds": train_seconds,
        "chance": task.chance,
        "min_query_distance": min_query_distance(task),
    }
    if job.condition == BASELINE:
        # The source's method: rank-1 writes into the frozen model's projections at test,
        # with the rate chosen on the validation set (0 = no writes, always a candidate).
        scores, at_rates = {0.0: result["valid_accuracy"]}, {0.0: result["accuracy"]}
        for rate in cfg.projection_rates:
            written = _set_projection(model, rate)
            scores[rate] = _accuracy(_predict(written, valid), valid, valid.final_queries)
            at_rates[rate] = _accuracy(_predict(written, test), test, test.final_queries)
        best = max(scores, key=lambda r: (scores[r], r == 0))  # ties: no writes
        result["projection_frozen"] = {
            "rate": best,
            "valid_by_rate": {str(k): v for k, v in scores.items()},
            "accuracy": at_rates[best],
            "accuracy_at_rates": {str(r): at_rates[r] for r in cfg.projection_rates},
        }
    return result


def _worker_init() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("ENGRAM_QUIET", "1")


def _run_job(cfg: Config, job: Job, out: str) -> dict[str, Any]:
    path = Path(out) / "jobs" / f"{job.key}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = train_and_test(cfg, job)
    atomic_write_text(path, to_json(result))
    return result


def run_jobs(cfg: Config, jobs: list[Job], out: Path, description: str) -> list[dict]:
    """Run the jobs not yet in ``out/jobs`` in worker processes; return all their results."""
    (out / "jobs").mkdir(exist_ok=True)
    done = {
        j.key: json.loads((out / "jobs" / f"{j.key}.json").read_text())
        for j in jobs
        if (out / "jobs" / f"{j.key}.json").exists()
    }
    todo = [j for j in jobs if j.key not in done]
    if todo and cfg.workers > 1:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(cfg.workers, mp_context=context, initializer=_worker_init) as pool:
            futures = [pool.submit(_run_job, cfg, j, str(out)) for j in todo]
            for future in progress(as_completed(futures), description, total=len(futures)):
                result = future.result()
                done[result["key"]] = result
    else:
        for j in progress(todo, description):
            done[j.key] = _run_job(cfg, j, str(out))
    return [done[j.key] for j in jobs]


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
        c: _scores([r for r in results if r["condition"] == c and r["lr"] == lr[c]])
        for c in trained
    }
    pilot["projection_frozen"] = _scores(
        [r for r in results if r["condition"] == BASELINE and r["lr"] == lr[BASELINE]],
        "projection_frozen",
    )
    return {"lr": lr, "pilot_accuracy": pilot}


def _scores(rows: list[dict], condition: str | None = None) -> list[float]:
    if condition == "projection_frozen":
        return [r["projection_frozen"]["accuracy"] for r in rows]
    return [r["accuracy"] for r in rows]


def _hypotheses(cfg: Config) -> list[dict[str, str]]:
    """The confirmatory family: each memory against window+sinks, plus two comparisons."""
    present = set(cfg.conditions) | {"projection_frozen"}
    family = [
        {
            "id": f"H{i + 1}",
            "a": m,
            "b": BASELINE,
            "claim": f"{m} recalls evicted bindings better than {BASELINE}",
        }
        for i, m in enumerate(m for m in MEMORIES if m in present)
    ]
    extra = [
        ("matrix", "matrix_ones", "importance weighting changes recall (two-sided)"),
        ("knn", "matrix", "at equal state size, kNN and the matrix differ (two-sided)"),
    ]
    for a, b, claim in extra:
        if a in present and b in present:
            family.append({"id": f"H{len(family) + 1}", "a": a, "b": b, "claim": claim})
    return family


def _power(cfg: Config, pilot: dict[str, Any]) -> dict[str, Any]:
    """Seeds per condition from the pilot's Cohen's d, floored at the smallest effect of
    interest and capped by the budget (both stated before the main run)."""
    rows = []
    for h in _hypotheses(cfg):
        a, b = pilot["pilot_accuracy"][h["a"]], pilot["pilot_accuracy"][h["b"]]
        with warnings.catch_warnings():  # 2-seed bootstraps are degenerate; only d is used
            warnings.simplefilter("ignore")
            d = stats.cohens_d(a, b, n_resamples=200).estimate
        # Effects beyond d = 4 need the minimum anyway (and statsmodels' solver fails there).
        target = min(max(abs(d), cfg.smallest_effect), 4.0) if np.isfinite(d) else 4.0
        need = stats.samples_for_power(target, power=cfg.power, alpha=cfg.alpha)
        rows.append(
            {"hypothesis": h["id"], "pilot_d": d, "powered_for_d": target, "n_needed": need}
        )
    needed = max(r["n_needed"] for r in rows)
    return {
        "rows": rows,
        "n_needed": needed,
        "n_seeds": int(min(cfg.max_seeds, max(cfg.min_seeds, needed))),
        "rule": (
            f"n = clip(max over hypotheses of samples_for_power(max(|pilot d|, "
            f"{cfg.smallest_effect})), {cfg.min_seeds}, {cfg.max_seeds}) at power "
            f"{cfg.power}, alpha {cfg.alpha}"
        ),
    }


def _preregistration(cfg: Config, pilot: dict[str, Any], power: dict[str, Any]) -> str:
    hyp = "\n".join(
        f"- **{h['id']}**: {h['claim']} (a = `{h['a']}`, b = `{h['b']}`)" for h in _hypotheses(cfg)
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


def _compare(a: list[float], b: list[float]) -> dict[str, Any]:
    same = np.allclose(a, a[0]) and np.allclose(b, b[0]) and np.isclose(a[0], b[0])
    welch = stats.welch_test(a, b) if not same else stats.TestResult("welch", 0.0, 1.0)
    perm = stats.permutation_test(a, b, n_resamples=2000)
    d = stats.cohens_d(a, b, n_resamples=1000)
    return {
        "mean_a": float(np.mean(a)),
        "mean_b": float(np.mean(b)),
        "diff": float(np.mean(a) - np.mean(b)),
        "welch_p": welch.p_value,
        "perm_p": perm.p_value,
        "d": d.estimate,
        "d_low": d.low,
        "d_high": d.high,
        "h": stats.cohens_h(float(np.mean(a)), float(np.mean(b))),
    }


def _binding(cfg: Config, by_condition: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Secondary family: does each trained memory beat the value-set level 1/n_pairs (what a
    model gets by knowing which values appeared, not their keys)? Above it, evicted *bindings*
    come back, not only evicted tokens. One-sided one-sample t-tests, Holm over the memories;
    full attention is tested the same way as a reference, outside the family."""
    level = 1.0 / cfg.n_pairs
    family = [m for m in MEMORIES if m in cfg.conditions]
    reference = ["full"] if "full" in cfg.conditions else []
    rows = []
    for c in [*family, *reference]:
        acc = np.asarray(by_condition[c], dtype=float)
        ci = stats.mean_ci(acc)
        if len(acc) > 1 and np.ptp(acc) > 0:
            p = float(scipy.stats.ttest_1samp(acc, level, alternative="greater").pvalue)
        else:  # no spread: the t statistic is undefined, the answer is not
            p = 0.0 if acc.mean() > level else 1.0
        rows.append(
            {
                "condition": c,
                "n": len(acc),
                "accuracy": ci.estimate,
                "t_low": ci.low,
                "t_high": ci.high,
                "value_set_level": level,
                "p_greater": p,
                "seeds_at_least_0.75": int((acc >= 0.75).sum()),
                "in_family": c in family,
            }
        )
    if family:
        reject, holm = stats.correct(
            [r["p_greater"] for r in rows[: len(family)]], "holm", cfg.alpha
        )
        for r, rej, hp in zip(rows, reject, holm, strict=False):
            r.update(holm_p=float(hp), binding_shown=bool(rej))
    return rows


# ------------------------------------------------------------------ costs
def _throughput(cfg: Config, condition: str, repeats: int = 3) -> dict[str, float]:
    """Tokens/s of the parallel and streaming forms and the state bytes after one sequence."""
    task = cfg.task()
    torch.manual_seed(0)
    model = StreamingTransformer(
        cfg.model(
            "window_sinks" if condition == "projection_frozen" else condition, task.vocab_size
        )
    ).eval()
    if condition == "projection_frozen":
        model = _set_projection(model, 1e-2)
    batch = make_batch(task, cfg.cost_batch, torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(batch.tokens)
        start = time.perf_counter()
        for _ in range(repeats):
            model(batch.tokens)
        parallel = repeats * batch.tokens.numel() / (time.perf_counter() - start)
        caches = model.init_caches(min(4, cfg.cost_batch))
        start = time.perf_counter()
        model.stream(batch.tokens[: min(4, cfg.cost_batch)], caches=caches)
        streaming = batch.tokens[: min(4, cfg.cost_batch)].numel() / (time.perf_counter() - start)
    return {
        "condition": condition,
        "parallel_tokens_per_s": parallel,
        "stream_tokens_per_s": streaming,
        "state_bytes": model.state_bytes(caches),
        "sequence_length": task.length,
    }


def _shakespeare() -> tuple[torch.Tensor, torch.Tensor, int]:
    path = data_root() / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        raise FileNotFoundError(f"tinyshakespeare: expected {path} (set ENGRAM_DATA)")
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(data))
    return data[:split], data[split:], len(chars)


def _perplexity(cfg: Config, condition: str) -> dict[str, Any]:
    """Train a character LM of the condition's architecture briefly; validation perplexity."""
    torch.set_num_threads(1)
    train, valid, vocab = _shakespeare()
    torch.manual_seed(cfg.seed)
    model = StreamingTransformer(cfg.model(condition, vocab))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(cfg.seed)
    L = cfg.lm_length
    for _ in range(cfg.lm_steps):
        starts = torch.randint(len(train) - L - 1, (16,), generator=gen)
        x = torch.stack([train[s : s + L + 1] for s in starts.tolist()])
        loss = model.cross_entropy(x[:, :-1], x[:, 1:])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    model.eval()
    n = (len(valid) - 1) // L
    chunks = valid[: n * L + 1]
    xs = torch.stack([chunks[i * L : i * L + L + 1] for i in range(min(n, 256))])
    with torch.no_grad():
        loss = model.cross_entropy(xs[:, :-1], xs[:, 1:])
        late = torch.nn.functional.cross_entropy(
            model(xs[:, :-1])[:, cfg.window + cfg.n_sink :].flatten(0, 1),
            xs[:, 1 + cfg.window + cfg.n_sink :].flatten(),
        )
    return {
        "condition": condition,
        "val_perplexity": math.exp(float(loss)),
        "val_perplexity_after_first_eviction": math.exp(float(late)),
        "lm_steps": cfg.lm_steps,
        "lm_length": L,
    }


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
        power = _power(cfg, pilot)
        folder.write_json("power.json", power)
    if not (out / "preregistration.md").exists():
        atomic_write_text(out / "preregistration.md", _preregistration(cfg, pilot, power))

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
    by_condition = {c: _scores([r for r in main if r["condition"] == c]) for c in cfg.conditions}
    by_condition["projection_frozen"] = _scores(
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
    family = _hypotheses(cfg)
    tests = [{**h, **_compare(by_condition[h["a"]], by_condition[h["b"]])} for h in family]
    holm_reject, holm_p = stats.correct([t["welch_p"] for t in tests], "holm", cfg.alpha)
    _, bh_p = stats.correct([t["welch_p"] for t in tests], "fdr_bh", cfg.alpha)
    for t, rej, hp, bp in zip(tests, holm_reject, holm_p, bh_p, strict=True):
        directional = t["b"] == BASELINE
        t.update(
            holm_p=float(hp),
            bh_p=float(bp),
            supported=bool(rej and (t["diff"] > 0 or not directional)),
        )
    costs = [_throughput(cfg, c) for c in [*cfg.conditions, "projection_frozen"]]
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
        lm = [_perplexity(cfg, c) for c in progress(cfg.lm_conditions, "perplexity")]
        folder.write_json("perplexity.json", lm)
    variants = _variant_table(cfg, [r for r in results if r["phase"] == "variant"], main)
    binding = _binding(cfg, by_condition)
    summary = {
        "accuracy": table,
        "tests": tests,
        "costs": costs,
        "perplexity": lm,
        "variants": variants,
        "binding": binding,
        "power": power,
        "lr": lr,
    }
    folder.write_json("results.json", summary)
    folder.write_csv("accuracy.csv", table)
    folder.write_csv("tests.csv", tests)
    folder.write_csv("costs.csv", costs)
    folder.write_csv("variants.csv", variants)
    folder.write_csv("binding.csv", binding)
    _plots(cfg, folder, table, variants, costs, by_condition)
    folder.write_report(_report(cfg, summary))
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


def _plots(
    cfg: Config,
    folder: RunFolder,
    table: list[dict],
    variants: list[dict],
    costs: list[dict],
    by_condition: dict[str, list[float]],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    note = "shared 2-core CPU"
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = [r["condition"] for r in table]
    means = np.array([r["accuracy"] for r in table])
    err = np.array(
        [[r["accuracy"] - r["t_low"] for r in table], [r["t_high"] - r["accuracy"] for r in table]]
    )
    ax.bar(names, means, yerr=err, capsize=3, color="tab:blue", alpha=0.6)
    for i, name in enumerate(names):  # every model, to show how the seeds spread
        ys = by_condition[name]
        ax.scatter(np.full(len(ys), i) + np.linspace(-0.2, 0.2, len(ys)), ys, s=6, c="k")
    ax.axhline(table[0]["chance"], color="grey", ls="--", label="chance")
    ax.axhline(1 / cfg.n_pairs, color="tab:red", ls=":", label="value-set level 1/N")
    ax.set_ylabel("final-query accuracy")
    ax.set_title(f"Recall after eviction (mean, 95% t-interval over seeds; {note})")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    folder.save_figure("accuracy_by_condition.png", fig)

    for axis, variants_on_axis, name in (
        ("min_query_distance", ("in_window", "base", "far"), "accuracy_vs_distance.png"),
        ("n_pairs", ("pairs_1", "base", "pairs_4"), "accuracy_vs_pairs.png"),
    ):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for condition in cfg.variant_conditions:
            pts = {}
            for r in variants:
                if r["condition"] == condition and r["variant"] in variants_on_axis:
                    pts.setdefault(r[axis], []).append(r["accuracy"])
            if pts:
                xs = sorted(pts)
                ax.plot(xs, [np.mean(pts[x]) for x in xs], "o-", label=condition)
        ax.axhline(cfg.task().chance, color="grey", ls="--")
        ax.set_xlabel(axis.replace("_", " "))
        ax.set_ylabel("final-query accuracy")
        ax.set_title(f"({note})")
        ax.legend(fontsize=7)
        folder.save_figure(name, fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    acc = {r["condition"]: r["accuracy"] for r in table}
    for c in costs:
        if c["condition"] in acc:
            ax.scatter(c["state_bytes"], acc[c["condition"]])
            ax.annotate(c["condition"], (c["state_bytes"], acc[c["condition"]]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("inference state after one sequence (bytes)")
    ax.set_ylabel("final-query accuracy")
    ax.set_title(f"Accuracy vs state size ({note})")
    folder.save_figure("accuracy_vs_state.png", fig)


# the effect-size and test columns every hypothesis table reports, in this order
EFFECT_COLUMNS = ("diff", "d", "d_low", "d_high", "h", "welch_p", "perm_p", "holm_p", "bh_p", "supported")


def _report(cfg: Config, summary: dict[str, Any]) -> str:
    tests = [{k: t[k] for k in ("id", "a", "b", *EFFECT_COLUMNS)} for t in summary["tests"]]
    return (
        "# Memory after eviction — report\n\n"
        "Measured on a shared 2-core CPU; see preregistration.md for the plan.\n\n"
        "## Accuracy on final queries (per trained model, mean and 95% intervals)\n\n"
        + markdown_table(summary["accuracy"])
        + "\n## Hypotheses\n\n"
        + markdown_table(tests)
        + "\n## Binding recall (secondary family: above the value-set level 1/N)\n\n"
        + markdown_table(summary["binding"])
        + "\n## Costs\n\n"
        + markdown_table(summary["costs"])
        + "\n## Perplexity (tinyshakespeare validation, char-level)\n\n"
        + markdown_table(summary["perplexity"])
        + "\n## Variants (exploratory)\n\n"
        + markdown_table(summary["variants"])
    )


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


__all__ = [
    "CONDITIONS",
    "Config",
    "Job",
    "experiment_group",
    "quick_config",
    "register",
    "run",
    "train_and_test",
]
