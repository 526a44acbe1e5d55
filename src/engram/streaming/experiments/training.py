"""One trained model per job: train on fresh recall batches, score on fixed test and validation
sets, and the source's projection writes into the frozen window+sinks model at test time."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engram.data.recall_tasks import make_batch, min_query_distance
from engram.io import atomic_write_text, to_json
from engram.runs import progress
from engram.streaming import StreamingTransformer
from engram.streaming.experiments.design import BASELINE, TEST_SEED, VALIDATION_SEED, Config


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


def with_projection_writes(model: StreamingTransformer, rate: float | None) -> StreamingTransformer:
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


def accuracies(rows: list[dict], condition: str | None = None) -> list[float]:
    """Per-model accuracy of result rows; ``projection_frozen`` reads the writes at test."""
    if condition == "projection_frozen":
        return [r["projection_frozen"]["accuracy"] for r in rows]
    return [r["accuracy"] for r in rows]


def _worker_init() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("ENGRAM_QUIET", "1")


def run_job(cfg: Config, job: Job, out: str) -> dict[str, Any]:
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
            futures = [pool.submit(run_job, cfg, j, str(out)) for j in todo]
            for future in progress(as_completed(futures), description, total=len(futures)):
                result = future.result()
                done[result["key"]] = result
    else:
        for j in progress(todo, description):
            done[j.key] = run_job(cfg, j, str(out))
    return [done[j.key] for j in jobs]

