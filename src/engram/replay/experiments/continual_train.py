"""One continual-learning run: a strategy trained on a stream, giving its task × task accuracies.

Every strategy shares the network (an MLP), the optimiser (Adam), the batch and the number of
steps per task; they differ only in what else each step sees:

- ``finetune``: the current task alone (the lower bound).
- ``ewc``: plus an online-EWC penalty, its Fisher taken after each task.
- ``replay``: plus a uniform batch from a reservoir buffer of the stream (experience replay).
- ``joint``: batches from every task so far (the upper bound; it breaks the sequential rule).
- ``replay`` with ``distill`` > 0: each stored item also keeps the network's output at storage
  time, and replay pulls today's output toward it (dark experience replay, DER++).
- ``ours``: plus a prioritized, importance-weighted replay batch, priorities from the replay
  signals; and sleep phases that interleave replay, recombined dreams and current data at a
  low learning rate. ``ours+ewc`` adds online EWC, consolidated in each sleep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engram.data.streams import Stream
from engram.replay import (
    EWC,
    EpisodicBuffer,
    FastSlowPair,
    PrioritySignals,
    Sleep,
    SleepConfig,
    anneal_beta,
    normalise_weights,
    response_distance,
)

STRATEGIES = ("finetune", "ewc", "replay", "joint", "ours", "ours+ewc")
_REPLAYING = ("replay", "ours", "ours+ewc")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a single run depends on besides the stream and the seed."""

    strategy: str = "ours"
    hidden: int = 400
    iters: int = 500
    batch: int = 128
    lr: float = 1e-3
    buffer_size: int = 1000
    replay_batch: int = 128
    ewc_lambda: float = 1000.0
    storage: str = "float32"
    sampling: str = "prioritized"
    signals_off: tuple[str, ...] = ()
    recombine: bool = True
    schedule: str = "boundary"
    sleep_every: int = 250
    sleep_steps: int = 300
    sleep_lr: float = 3e-4
    sleep_current: float = 0.0
    pair: bool = False
    pair_decay: float = 0.999
    reset_optimizer: bool = True
    weight_norm: str = "max"
    # Response replay: weight of the distance between a replayed item's logits and those the
    # network gave it when it was stored (0 = off; replay strategies only).
    distill: float = 0.0
    # Compressed replay: store the output of the first ``latent`` hidden blocks instead of the
    # input, and replay it through the layers above; those blocks freeze after the first task
    # so the stored codes stay valid (latent replay, Pellegrini et al. 2020).
    latent: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: expected one of {list(STRATEGIES)}, got {self.strategy!r}")
        if self.sampling not in ("prioritized", "uniform"):
            raise ValueError(
                f"sampling: expected 'prioritized' or 'uniform', got {self.sampling!r}"
            )
        for name in ("hidden", "iters", "batch", "buffer_size", "replay_batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.distill < 0:
            raise ValueError(f"distill: expected a weight ≥ 0, got {self.distill}")
        if self.distill and self.strategy not in _REPLAYING:
            raise ValueError(f"distill: needs a replaying strategy, got {self.strategy!r}")
        if self.latent not in (0, 1, 2):
            raise ValueError(f"latent: expected 0, 1 or 2 hidden blocks, got {self.latent}")
        if self.latent and (self.pair or self.strategy == "ours+ewc"):
            raise ValueError("latent: compressed replay is not combined with --pair or EWC")
        if self.latent and self.storage == "uint8":
            raise ValueError("storage: uint8 assumes inputs in [0, 1]; hidden codes need float16")


@dataclass
class RunResult:
    """Accuracy matrix (row i: after training task i; column j: tested on task j) and costs."""

    accuracy: np.ndarray
    wall_s: float
    buffer_bytes: int
    buffer_items: int
    sleeps: int = 0


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """The shared network: two hidden ReLU layers of ``hidden`` units."""
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, n_out),
    )


class Heads:
    """Which outputs are live: a task's own pair (task-IL), classes seen so far (class-IL), all."""

    def __init__(self, stream: Stream, device: torch.device):
        self.scenario = stream.scenario
        self.task_masks = torch.zeros(len(stream), stream.n_outputs, dtype=torch.bool)
        for task in stream.tasks:
            self.task_masks[task.index, list(task.classes)] = True
        self.task_masks = self.task_masks.to(device)
        self.seen = torch.zeros(stream.n_outputs, dtype=torch.bool, device=device)

    def see(self, task_index: int) -> None:
        self.seen |= self.task_masks[task_index]

    def __call__(self, model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        if self.scenario == "task":
            return logits.masked_fill(~self.task_masks[task], -float("inf"))
        if self.scenario == "class":
            return logits.masked_fill(~self.seen, -float("inf"))
        return logits


def _union_batch(stream: Stream, upto: int, n: int, gen: torch.Generator):
    """A batch drawn from the union of tasks 0..``upto`` in proportion to their sizes."""
    sizes = torch.tensor([stream.tasks[t].n_train for t in range(upto + 1)], dtype=torch.float)
    which = torch.multinomial(sizes, n, replacement=True, generator=gen)
    xs, ys, ts = [], [], []
    for t in range(upto + 1):
        k = int((which == t).sum())
        if k:
            x, y = stream.tasks[t].train_batch(
                torch.randint(stream.tasks[t].n_train, (k,), generator=gen)
            )
            xs.append(x), ys.append(y), ts.append(torch.full((k,), t))
    return torch.cat(xs), torch.cat(ys), torch.cat(ts)


def _atypicality(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Salience proxy: distance of each input from its class's mean within the batch."""
    out = torch.zeros(x.shape[0], device=x.device)
    for c in torch.unique(y):
        m = y == c
        out[m] = (x[m] - x[m].mean(0)).norm(dim=1)
    return out


@torch.no_grad()
def evaluate(model: nn.Module, heads: Heads, stream: Stream, device: torch.device) -> np.ndarray:
    """Accuracy on each task's test set."""
    model.eval()
    accs = []
    for task in stream.tasks:
        x, y = task.test_set()
        correct = 0
        for start in range(0, x.shape[0], 4096):
            xb, yb = x[start : start + 4096].to(device), y[start : start + 4096].to(device)
            t = torch.full((xb.shape[0],), task.index, device=device)
            correct += int((heads(model, xb, t).argmax(-1) == yb).sum())
        accs.append(correct / x.shape[0])
    model.train()
    return np.array(accs)


def train_stream(stream: Stream, cfg: TrainConfig, seed: int) -> RunResult:
    """Train ``cfg.strategy`` through ``stream`` with ``seed``; test after every task."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(cfg.device)
    start = time.perf_counter()
    fast = mlp(stream.n_inputs, cfg.hidden, stream.n_outputs).to(device)
    pair = FastSlowPair(fast, decay=cfg.pair_decay) if cfg.pair else None
    evaluated: nn.Module = pair.slow if pair is not None else fast
    # Below the replayed representation (empty = the raw input is stored) and above it.
    encoder, upper = fast[: 2 * cfg.latent], fast[2 * cfg.latent :]
    replayed: nn.Module = upper if cfg.latent else evaluated
    optimizer = torch.optim.Adam(fast.parameters(), lr=cfg.lr)
    heads = Heads(stream, device)
    n_tasks = len(stream)
    accuracy = np.zeros((n_tasks, n_tasks))

    ours = cfg.strategy.startswith("ours")
    ewc = EWC(cfg.ewc_lambda) if cfg.strategy in ("ewc", "ours+ewc") else None
    buffer = (
        EpisodicBuffer(cfg.buffer_size, storage=cfg.storage, seed=seed)
        if cfg.strategy in _REPLAYING else None
    )
    signals = None
    if ours and cfg.sampling == "prioritized":
        signals = PrioritySignals()
        for name in cfg.signals_off:
            signals = signals.without(name)
    sleep = None
    if ours:
        assert buffer is not None
        sleep = Sleep(
            SleepConfig(schedule=cfg.schedule, every=cfg.sleep_every, steps=cfg.sleep_steps,
                        lr=cfg.sleep_lr, batch=cfg.replay_batch, sampling="uniform",
                        current_fraction=cfg.sleep_current, weight_norm=cfg.weight_norm,
                        distill=cfg.distill),
            buffer, stream.n_outputs, signals=signals, ewc=ewc, logits_fn=heads,
            recombine=cfg.recombine, seed=seed,
        )
    total_steps = n_tasks * cfg.iters
    step = 0
    for task in stream.tasks:
        heads.see(task.index)
        for it in range(cfg.iters):
            if cfg.strategy == "joint":
                x, y, t = _union_batch(stream, task.index, cfg.batch, gen)
            else:
                x, y = task.train_batch(torch.randint(task.n_train, (cfg.batch,), generator=gen))
                t = torch.full((cfg.batch,), task.index)
            x, y, t = x.to(device), y.to(device), t.to(device)
            logits = heads(fast, x, t)
            per_item = F.cross_entropy(logits, y, reduction="none")
            loss = per_item.mean()
            if buffer is not None and len(buffer) > 0:
                mode = "prioritized" if signals is not None else "uniform"
                beta = anneal_beta(step / total_steps)
                rb = buffer.sample(cfg.replay_batch, mode, beta=beta, device=device)
                r_logits = heads(upper, rb.x, rb.task)
                r_loss = F.cross_entropy(r_logits, rb.y, reduction="none")
                r_total = r_loss
                if cfg.distill and rb.response is not None:
                    r_total = r_loss + cfg.distill * response_distance(r_logits, rb.response)
                loss = loss + (normalise_weights(rb.weights, cfg.weight_norm) * r_total).mean()
                if pair is not None:
                    with torch.no_grad():
                        s_logits = heads(pair.slow, rb.x, rb.task)
                    loss = loss + pair.consistency_loss(r_logits, s_logits)
                if signals is not None:
                    buffer.update_losses(rb.indices, r_loss.detach().cpu(), 0.5)
                    signals.refresh(buffer)
            if ewc is not None:
                loss = loss + ewc.penalty(fast)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if pair is not None:
                pair.track()
            if buffer is not None:
                with torch.no_grad():
                    correct = (logits.argmax(-1) == y).float()
                    stored = encoder(x)
                meta = {}
                if ours:
                    meta = dict(novelty=per_item.detach().cpu(), reward=correct.cpu(),
                                salience=_atypicality(stored, y).cpu())
                if cfg.distill:
                    meta["response"] = logits.detach().cpu()
                buffer.add(stored.cpu(), y.cpu(), t.cpu(), **meta)
            step += 1
            boundary = it == cfg.iters - 1
            if sleep is not None and sleep.tick(replayed, boundary=boundary):
                pick = torch.randint(task.n_train, (2048,), generator=gen)
                cx, cy = task.train_batch(pick)
                with torch.no_grad():
                    cx = encoder(cx.to(device)).cpu()
                current = (cx, cy, torch.full((cx.shape[0],), task.index))
                sleep.sleep(replayed, current, teacher=fast if pair is not None else None)
                if pair is None and cfg.reset_optimizer:
                    # The sleep optimiser moved the weights; wake Adam's moments are stale.
                    optimizer = torch.optim.Adam(fast.parameters(), lr=cfg.lr)
        if cfg.latent and task.index == 0:
            encoder.requires_grad_(False)
        if cfg.strategy == "ewc":
            assert ewc is not None
            pick = torch.randint(task.n_train, (ewc.samples,), generator=gen)
            ex, ey = task.train_batch(pick)
            mask = heads.task_masks[task.index] if stream.scenario == "task" else (
                heads.seen if stream.scenario == "class" else None)
            ewc.consolidate(fast, ex.to(device), ey.to(device), logit_mask=mask)
        accuracy[task.index] = evaluate(evaluated, heads, stream, device)
    return RunResult(
        accuracy=accuracy,
        wall_s=time.perf_counter() - start,
        buffer_bytes=buffer.memory_bytes if buffer is not None else 0,
        buffer_items=len(buffer) if buffer is not None else 0,
        sleeps=len(sleep.history) if sleep is not None else 0,
    )

