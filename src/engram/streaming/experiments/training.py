"""One trained model per job: train on fresh recall batches, score on fixed test and validation
sets, and the source's projection writes into the frozen window+sinks model at test time."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engram.data.recall_tasks import make_batch, min_query_distance
from engram.runs import Job, run_jobs
from engram.streaming import StreamingTransformer
from engram.streaming.experiments.design import BASELINE, TEST_SEED, VALIDATION_SEED, Config


@dataclass(frozen=True)
class ModelSpec:
    """One model to train and test, given a seed: the experiment's design, which stage asks
    for it (pilot, main, variant), the condition, the task variant and the learning rate."""

    design: Config
    phase: str
    condition: str
    variant: str
    lr: float


def _predict(model: StreamingTransformer, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(batch.tokens).argmax(-1)


def _accuracy(pred: torch.Tensor, batch, mask: torch.Tensor, targets=None) -> float:
    """Share of positions under ``mask`` where ``pred`` equals the targets (nan if none)."""
    hits = (pred == (batch.targets if targets is None else targets))[mask]
    return float(hits.float().mean()) if hits.numel() else float("nan")


def with_projection_writes(model: StreamingTransformer, rate: float | None) -> StreamingTransformer:
    """A copy of a trained window+sinks model with projection writes at ``rate`` (or none)."""
    cfg = dataclasses.replace(
        model.cfg, memory="projection" if rate else "none", projection_rate=rate or 1e-2
    )
    copy = StreamingTransformer(cfg)
    copy.load_state_dict(model.state_dict(), strict=False)
    return copy.eval()


def train_and_test(spec: ModelSpec, seed: int) -> dict[str, Any]:
    """Train one model on fresh batches, then score it on the fixed test set (a toolkit job)."""
    cfg = spec.design
    task = cfg.task(spec.variant)
    torch.manual_seed(seed)
    model = StreamingTransformer(cfg.model(spec.condition, task.vocab_size))
    optimiser = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=spec.lr, total_steps=cfg.steps, pct_start=0.1
    )
    data = torch.Generator().manual_seed(1_000_000 + seed)
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
        "phase": spec.phase,
        "condition": spec.condition,
        "variant": spec.variant,
        "seed": seed,
        "lr": spec.lr,
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
    if spec.condition == BASELINE:
        # The source's method: rank-1 writes into the frozen model's projections at test,
        # with the rate chosen on the validation set (0 = no writes, always a candidate).
        scores, at_rates = {0.0: result["valid_accuracy"]}, {0.0: result["accuracy"]}
        for rate in cfg.projection_rates:
            written = with_projection_writes(model, rate)
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


def flat(row: dict[str, Any]) -> dict[str, Any]:
    """A job's result as one table row: the projection writes' nested record becomes columns."""
    out = {k: v for k, v in row.items() if k != "projection_frozen"}
    if "projection_frozen" in row:
        written = row["projection_frozen"]
        out["projection_frozen_accuracy"] = written["accuracy"]
        out["projection_frozen_rate"] = written["rate"]
        out["projection_frozen_valid_by_rate"] = json.dumps(written["valid_by_rate"])
    return out


def accuracies(rows: list[dict], condition: str | None = None) -> list[float]:
    """Per-model accuracy of (flat) result rows; ``projection_frozen`` reads the writes at test."""
    if condition == "projection_frozen":
        return [r["projection_frozen_accuracy"] for r in rows]
    return [r["accuracy"] for r in rows]


def train_models(
    models: Sequence[tuple[ModelSpec, int]], folder: Path | None, description: str
) -> list[dict[str, Any]]:
    """Results of (spec, seed) pairs in order, through the toolkit's resumable job runner
    (cached in ``folder/jobs``; ``--workers`` on the command line sets the pool)."""
    return run_jobs([Job.of(train_and_test, m, s) for m, s in models], folder, description=description)
