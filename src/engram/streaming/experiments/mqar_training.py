"""One MQAR model per job: its conditions, training until solved or out of steps, the test
accuracy (all queries, and those whose key the window has evicted) and the bytes of state it
holds after streaming one test sequence."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engram.streaming import StreamingConfig, StreamingTransformer
from engram.streaming.mqar import MQARBatch, MQARTask, make_mqar

# Each condition's model settings on top of the shared sizes: the window conditions attend to
# n_sink sinks + `window` recent tokens and read their memory; the others see the whole
# sequence (full softmax attention, or one matrix per head: linear attention, DeltaNet).
CONDITIONS: dict[str, dict[str, Any]] = {
    "full": {"window": None, "n_sink": 0},
    "window": {"memory": "none"},
    "matrix_ones": {"memory": "matrix_ones"},
    "matrix": {"memory": "matrix"},
    "matrix_delta": {"memory": "matrix_delta"},
    "association": {"memory": "association"},
    "knn": {"memory": "knn"},
    "linear": {"window": None, "n_sink": 0, "mixer": "linear"},
    "delta": {"window": None, "n_sink": 0, "mixer": "delta"},
}
TEST_SEED, VALIDATION_SEED = 10_000, 20_000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One model to train: task sizes, model sizes, condition and training budget."""

    condition: str
    n_pairs: int
    length: int
    vocab_size: int
    power_a: float
    random_fillers: bool
    d_model: int
    n_heads: int
    n_layers: int
    conv_kernel: int
    window: int
    n_sink: int
    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    eval_every: int
    solve_at: float
    valid_size: int
    test_size: int
    device: str = "cpu"

    def task(self) -> MQARTask:
        return MQARTask(self.n_pairs, self.length, self.vocab_size, self.power_a, self.random_fillers)

    def model(self) -> StreamingConfig:
        settings = {"window": self.window, "n_sink": self.n_sink, **CONDITIONS[self.condition]}
        return StreamingConfig(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            conv_kernel=self.conv_kernel,
            mlp=False,
            **settings,
        )

    def receptive_field(self) -> int | None:
        """How far back the window model's stacked layers see (None: the whole sequence)."""
        if self.model().window is None:
            return None
        return self.n_layers * (self.window - 1 + self.conv_kernel - 1)


def _on(batch: MQARBatch, device: torch.device) -> MQARBatch:
    return MQARBatch(batch.tokens.to(device), batch.targets.to(device), batch.distance.to(device))


def _loss(model: StreamingTransformer, batch: MQARBatch) -> torch.Tensor:
    where = batch.queries
    return F.cross_entropy(model.scored_logits(batch.tokens, where), batch.targets[where])


def predictions(model: StreamingTransformer, batch: MQARBatch, chunk: int = 64) -> torch.Tensor:
    """The model's answers at every query of ``batch``, in row order (chunks bound memory)."""
    out = []
    with torch.no_grad():
        for s in range(0, batch.tokens.shape[0], chunk):
            tokens, where = batch.tokens[s : s + chunk], batch.queries[s : s + chunk]
            out.append(model.scored_logits(tokens, where).argmax(-1))
    return torch.cat(out)


def _accuracy(model: StreamingTransformer, batch: MQARBatch) -> float:
    return float((predictions(model, batch) == batch.targets[batch.queries]).float().mean())


def _schedule(step: int, steps: int) -> float:
    """Linear warm-up over the first 10 % of steps, then a cosine to 0."""
    warm = max(1, steps // 10)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def train_cell(cell: Cell, seed: int) -> dict[str, Any]:
    """Train one model on fresh batches until its validation accuracy reaches ``solve_at`` or
    the steps run out; then score it on the fixed test set (a toolkit job)."""
    task = cell.task()
    torch.manual_seed(seed)
    device = torch.device(cell.device)
    model = StreamingTransformer(cell.model()).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=cell.lr, weight_decay=cell.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _schedule(s, cell.steps))
    data = np.random.default_rng(1_000_000 + seed)
    valid = _on(make_mqar(task, cell.valid_size, VALIDATION_SEED), device)
    start, cpu = time.perf_counter(), time.process_time()
    curve: list[tuple[int, float]] = []
    solved_step, losses = None, []
    for step in range(1, cell.steps + 1):
        model.train()
        loss = _loss(model, _on(make_mqar(task, cell.batch_size, data), device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if step % cell.eval_every == 0 or step == cell.steps:
            model.eval()
            curve.append((step, _accuracy(model, valid)))
            log.info("%s seed %d step %d: loss %.3f, validation accuracy %.3f",
                     cell.condition, seed, step, np.mean(losses[-cell.eval_every:]), curve[-1][1])
            if curve[-1][1] >= cell.solve_at:
                solved_step = step
                break
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    model.eval()
    test = _on(make_mqar(task, cell.test_size, TEST_SEED), device)
    hits = (predictions(model, test) == test.targets[test.queries]).float()
    reach = cell.receptive_field()
    beyond = test.distance[test.queries] > (reach if reach is not None else cell.length)
    return {
        "condition": cell.condition,
        "n_pairs": cell.n_pairs,
        "length": cell.length,
        "d_model": cell.d_model,
        "seed": seed,
        "lr": cell.lr,
        "accuracy": float(hits.mean()),
        "beyond_window_accuracy": float(hits[beyond].mean()) if beyond.any() else None,
        "beyond_window_share": float(beyond.float().mean()),
        "valid_accuracy": curve[-1][1],
        "solved": solved_step is not None,
        "steps": step,
        "solved_step": solved_step,
        "curve": curve,
        "final_loss": float(np.mean(losses[-20:])),
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "device": cell.device,
        "state_bytes": state_bytes(model, test),
        "chance": task.chance,
    }


def state_bytes(model: StreamingTransformer, batch: MQARBatch) -> int:
    """Bytes of inference state after streaming the first test sequence token by token."""
    caches = model.init_caches(1)
    with torch.no_grad():
        model.stream(batch.tokens[:1], caches=caches)
    return int(model.state_bytes(caches))
