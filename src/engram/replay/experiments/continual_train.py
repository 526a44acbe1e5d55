"""One continual-learning run: a strategy trained on a stream, giving its task × task accuracies.

Every strategy shares the network (an MLP), the optimiser (Adam), the batch and the number of
steps per task; they differ only in what else each step sees (``engram.replay.strategies``):

- ``finetune``: the current task alone (the lower bound).
- ``ewc``: plus an online-EWC penalty, its Fisher taken after each task.
- ``replay``: plus a uniform batch from a reservoir buffer of the stream (experience replay).
- ``joint``: batches from every task so far (the upper bound; it breaks the sequential rule).
- ``replay`` with ``distill`` > 0: each stored item also keeps the network's output at storage
  time, and replay pulls today's output toward it (dark experience replay, DER++).
- ``sleep-replay``: plus a prioritized, importance-weighted replay batch, priorities from the
  replay signals; and sleep phases that interleave replay, recombined dreams and current data
  at a low learning rate. ``sleep-replay+ewc`` adds online EWC, consolidated in each sleep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engram.data.streams import Stream
from engram.errors import ConfigError
from engram.replay import (
    EWC,
    EpisodicBuffer,
    FastSlowPair,
    PrioritySignals,
    Sleep,
    SleepPhaseConfig,
)
from engram.replay.strategies import (
    ExperienceReplay,
    FineTune,
    Joint,
    OnlineEWC,
    SleepReplay,
    Strategy,
    adam,
)

STRATEGIES = ("finetune", "ewc", "replay", "joint", "sleep-replay", "sleep-replay+ewc")
_REPLAYING = ("replay", "sleep-replay", "sleep-replay+ewc")


@dataclass(frozen=True)
class LearnerConfig:
    """Everything a single run depends on besides the stream and the seed."""

    strategy: str = "sleep-replay"
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
            raise ConfigError(f"strategy: expected one of {list(STRATEGIES)}, got {self.strategy!r}")
        if self.storage not in ("float32", "float16", "uint8"):
            raise ConfigError(
                f"storage: expected 'float32', 'float16' or 'uint8', got {self.storage!r}"
            )
        if self.sampling not in ("prioritized", "uniform"):
            raise ConfigError(
                f"sampling: expected 'prioritized' or 'uniform', got {self.sampling!r}"
            )
        for name in ("hidden", "iters", "batch", "buffer_size", "replay_batch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.distill < 0:
            raise ConfigError(f"distill: expected a weight ≥ 0, got {self.distill}")
        if self.distill and self.strategy not in _REPLAYING:
            raise ConfigError(f"distill: needs a replaying strategy, got {self.strategy!r}")
        if self.latent not in (0, 1, 2):
            raise ConfigError(f"latent: expected 0, 1 or 2 hidden blocks, got {self.latent}")
        if self.latent and (self.pair or self.strategy == "sleep-replay+ewc"):
            raise ConfigError("latent: compressed replay is not combined with pair or EWC")
        if self.latent and self.storage == "uint8":
            raise ConfigError("storage: uint8 assumes inputs in [0, 1]; hidden codes need float16")
        try:
            self.sleep_config()
        except ValueError as error:
            raise ConfigError(f"sleep: {error}") from None

    def sleep_config(self) -> SleepPhaseConfig:
        """The sleep phases of ``sleep-replay`` this config asks for."""
        return SleepPhaseConfig(
            schedule=self.schedule, every=self.sleep_every, steps=self.sleep_steps,
            lr=self.sleep_lr, batch=self.replay_batch, sampling="uniform",
            current_fraction=self.sleep_current, weight_norm=self.weight_norm,
            distill=self.distill,
        )


@dataclass(frozen=True)
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

    def mask(self, task_index: int) -> torch.Tensor | None:
        """The outputs live now for ``task_index``: its own (task-IL), those seen (class-IL)."""
        if self.scenario == "task":
            return self.task_masks[task_index]
        return self.seen if self.scenario == "class" else None

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


def build_strategy(stream: Stream, cfg: LearnerConfig, heads: Heads, seed: int) -> Strategy:
    """The network (seeded by the caller) and ``cfg.strategy`` around it."""
    device = torch.device(cfg.device)
    fast = mlp(stream.n_inputs, cfg.hidden, stream.n_outputs).to(device)
    options = dict(optimizer=adam(cfg.lr), logits_fn=heads)
    if cfg.strategy in ("finetune", "joint"):
        return (Joint if cfg.strategy == "joint" else FineTune)(fast, **options)
    if cfg.strategy == "ewc":
        return OnlineEWC(fast, cfg.ewc_lambda, output_mask=heads.mask, **options)
    if cfg.latent:
        # Below the replayed codes and above them.
        options.update(encoder=fast[: 2 * cfg.latent], head=fast[2 * cfg.latent :])
    buffer = EpisodicBuffer(cfg.buffer_size, storage=cfg.storage, seed=seed)
    if cfg.strategy == "replay":
        return ExperienceReplay(fast, buffer, replay_batch=cfg.replay_batch, distill=cfg.distill,
                                **options)
    signals = None
    if cfg.sampling == "prioritized":
        signals = PrioritySignals()
        for name in cfg.signals_off:
            signals = signals.without(name)
    sleep = Sleep(
        cfg.sleep_config(), buffer, stream.n_outputs, signals=signals,
        ewc=EWC(cfg.ewc_lambda) if cfg.strategy == "sleep-replay+ewc" else None,
        logits_fn=heads, recombine=cfg.recombine, seed=seed,
    )
    return SleepReplay(
        fast, sleep, replay_batch=cfg.replay_batch, anneal_steps=len(stream) * cfg.iters,
        pair=FastSlowPair(fast, decay=cfg.pair_decay) if cfg.pair else None,
        reset_optimizer=cfg.reset_optimizer, **options,
    )


def train_stream(stream: Stream, cfg: LearnerConfig, seed: int) -> RunResult:
    """Train ``cfg.strategy`` through ``stream`` with ``seed``; test after every task."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(cfg.device)
    start = time.perf_counter()
    heads = Heads(stream, device)
    learner = build_strategy(stream, cfg, heads, seed)
    n_tasks = len(stream)
    accuracy = np.zeros((n_tasks, n_tasks))
    for task in stream.tasks:
        heads.see(task.index)

        def sample(n: int, task=task) -> tuple[torch.Tensor, torch.Tensor]:
            return task.train_batch(torch.randint(task.n_train, (n,), generator=gen))

        learner.before_experience(task.index, sample)
        for _ in range(cfg.iters):
            if learner.sees_past_data:
                x, y, t = _union_batch(stream, task.index, cfg.batch, gen)
            else:
                x, y = sample(cfg.batch)
                t = torch.full((cfg.batch,), task.index)
            learner.observe(x.to(device), y.to(device), t.to(device))
        learner.after_experience()
        accuracy[task.index] = evaluate(learner.evaluated, heads, stream, device)
    buffer = learner.buffer if isinstance(learner, ExperienceReplay) else None
    return RunResult(
        accuracy=accuracy,
        wall_s=time.perf_counter() - start,
        buffer_bytes=buffer.memory_bytes if buffer is not None else 0,
        buffer_items=len(buffer) if buffer is not None else 0,
        sleeps=len(learner.sleep.history) if isinstance(learner, SleepReplay) else 0,
    )
