"""One run of the van de Ven protocol: a method trained through split MNIST, tested after each task.

The protocol (van de Ven, Tuytelaars & Tolias 2022, "Three types of incremental learning"; its
code, GMvandeVen/continual-learning, ``params/param_values.py`` and ``train/train_task_based.py``):
an MLP with two hidden layers of 400 ReLU units, Adam (lr 1e-3, β 0.9/0.999, not reset between
tasks), batches of 128, 2,000 iterations per task; replay adds 128 replayed items per step and
weighs the current batch by 1/k and the replay by 1 − 1/k in task k; task-IL replays each past
task through its own head and averages the losses. The methods:

- ``none``: fine-tuning; ``joint``: one run of ``iters`` steps on the union of all tasks.
- ``ewc``: EWC with one penalty per past task (λ/2 · F (θ − θ*_t)² each, "offline" EWC);
  ``online-ewc``: one running Fisher (γ) anchored at the last task's weights.
- ``si``: synaptic intelligence (c, ξ = 0.1).
- ``er``: experience replay from 100 items per class drawn at random at the end of each task.
- ``dgr`` / ``dgr+distill``: generative replay from a VAE, hard / soft (T = 2) targets.
- ``sleep-replay`` / ``response-replay``: Engram's sleep method (``SleepReplay``) without / with
  response replay, its store as large as ER's when full (budget × classes), its wake steps cut
  so that it back-propagates as many items as ER (see :func:`wake_iters`).
- ``replay-equal-compute``: the equal-compute control of sleep replay — the same store, wake
  steps and boundary steps, but uniform replay while awake and asleep, no priorities, no
  dreams: what the sleep method earns beyond its extra low-rate rehearsal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engram.data.streams import Stream
from engram.errors import ConfigError
from engram.replay import EWC, EpisodicBuffer, PrioritySignals, Sleep, SleepPhaseConfig
from engram.replay.experiments.continual_train import Heads, evaluate, mlp
from engram.replay.strategies import (
    FineTune,
    GenerativeReplay,
    Joint,
    OnlineEWC,
    SleepReplay,
    Strategy,
    SynapticIntelligence,
    adam,
)
from engram.replay.vae import VAE

METHODS = ("none", "joint", "ewc", "online-ewc", "si", "er", "dgr", "dgr+distill",
           "sleep-replay", "response-replay", "replay-equal-compute")
SLEEPING = ("sleep-replay", "response-replay", "replay-equal-compute")


@dataclass(frozen=True)
class ProtocolConfig:
    """Everything one run depends on besides the stream and the seed (defaults: the protocol's)."""

    method: str = "none"
    hidden: int = 400
    iters: int = 2000
    batch: int = 128
    lr: float = 1e-3
    budget: int = 100
    ewc_lambda: float = 1e9
    ewc_gamma: float = 1.0
    fisher_samples: int = 1000
    si_c: float = 5000.0
    si_damping: float = 0.1
    z_dim: int = 100
    temperature: float = 2.0
    sleep_steps: int = 1200
    sleep_lr: float = 3e-4
    distill: float = 0.5
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method: expected one of {list(METHODS)}, got {self.method!r}")
        for name in ("hidden", "iters", "batch", "budget", "fisher_samples", "z_dim",
                     "sleep_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("lr", "si_damping", "temperature", "sleep_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name}: expected a positive number, got {getattr(self, name)}")
        for name in ("ewc_lambda", "si_c", "distill"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}: expected a number ≥ 0, got {getattr(self, name)}")
        if not 0.0 <= self.ewc_gamma <= 1.0:
            raise ConfigError(f"ewc_gamma: expected γ in [0, 1], got {self.ewc_gamma}")


def replay_items(cfg: ProtocolConfig, n_tasks: int) -> int:
    """Items ER back-propagates over a stream: 1 batch in task 1, batch + replay after."""
    return cfg.iters * cfg.batch + (n_tasks - 1) * cfg.iters * 2 * cfg.batch


def wake_iters(cfg: ProtocolConfig, n_tasks: int) -> int:
    """Wake steps per task that give sleep replay ER's item count.

    Sleep replay back-propagates batch + replay items per wake step from the first task on
    (its store fills as it goes) and ``sleep_steps`` replay batches at each of the
    ``n_tasks`` boundaries; ``w`` solves n·w·2B + n·S·B = ER's items.
    """
    sleep_items = n_tasks * cfg.sleep_steps * cfg.batch
    w = (replay_items(cfg, n_tasks) - sleep_items) / (n_tasks * 2 * cfg.batch)
    if w < 1:
        raise ConfigError(f"sleep_steps: {cfg.sleep_steps} sleep steps leave no wake steps at "
                          f"equal compute with {cfg.iters} iterations per task")
    return round(w)


class OfflineEWC(Strategy):
    """EWC as first published: one quadratic penalty per past experience, each with its Fisher."""

    def __init__(self, model: nn.Module, strength: float, samples: int,
                 output_mask: Callable[[int], torch.Tensor | None], **options):
        super().__init__(model, **options)
        self.strength, self.samples, self.output_mask = strength, samples, output_mask
        self.penalties: list[EWC] = []

    def observe(self, inputs: torch.Tensor, targets: torch.Tensor,
                task: torch.Tensor | None = None) -> float:
        _, per_item = self.forward(self.model, inputs, targets, self.tasks(inputs, task))
        loss = per_item.mean()
        for ewc in self.penalties:
            loss = loss + ewc.penalty(self.model)
        return self.step(loss)

    def after_experience(self) -> None:
        """A new penalty: the Fisher of this experience (labels drawn from the model) at θ* now."""
        ewc = EWC(self.strength, fisher="sampled", samples=self.samples)
        x, y = self.current_sample(self.samples)
        ewc.consolidate(self.model, x.to(self.device), y.to(self.device),
                        logit_mask=self.output_mask(self.experience))
        self.penalties.append(ewc)


class ExemplarReplay(Strategy):
    """Experience replay as the protocol runs it: ``budget`` random items per class, kept per task.

    At the end of each experience ``budget`` distinct items of each of its labels are stored
    (drawn with ``generator``); each later step adds a replayed batch — from the union of the
    store, or (``per_task``) an equal share from each past experience — weighted 1 − 1/k.
    """

    def __init__(self, model: nn.Module, budget: int, train_set: Callable[[int], tuple],
                 *, replay_batch: int, per_task: bool, generator: torch.Generator, **options):
        super().__init__(model, **options)
        self.budget, self.train_set, self.replay_batch = budget, train_set, replay_batch
        self.per_task, self.generator = per_task, generator
        self.stored: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._union = (torch.empty(0), torch.empty(0), torch.empty(0))

    def after_experience(self) -> None:
        x, y = self.train_set(self.experience)
        keep = []
        for label in torch.unique(y):
            idx = torch.nonzero(y == label)[:, 0]
            keep.append(idx[torch.randperm(len(idx), generator=self.generator)[: self.budget]])
        keep = torch.cat(keep)
        self.stored.append((x[keep], y[keep]))
        self._union = self._join(range(len(self.stored)))

    def _join(self, tasks: range | list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stored items of ``tasks`` in one tensor each, with the task of every item."""
        xs = torch.cat([self.stored[t][0] for t in tasks])
        ys = torch.cat([self.stored[t][1] for t in tasks])
        ts = torch.cat([torch.full((len(self.stored[t][1]),), t) for t in tasks])
        return xs, ys, ts

    @property
    def stored_items(self) -> int:
        return sum(len(y) for _, y in self.stored)

    def _draw(self, tasks: list[int], n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` items drawn with replacement from the store of ``tasks`` (all of them: the
        union joined once per experience, not once per step)."""
        xs, ys, ts = self._union if len(tasks) == len(self.stored) else self._join(tasks)
        pick = torch.randint(len(ys), (n,), generator=self.generator)
        return xs[pick].to(self.device), ys[pick].to(self.device), ts[pick].to(self.device)

    def observe(self, inputs: torch.Tensor, targets: torch.Tensor,
                task: torch.Tensor | None = None) -> float:
        _, per_item = self.forward(self.model, inputs, targets, self.tasks(inputs, task))
        if not self.stored:
            return self.step(per_item.mean())
        past = list(range(len(self.stored)))
        if self.per_task:
            share = math.ceil(self.replay_batch / len(past))
            losses = [self.forward(self.model, *self._draw([t], share))[1].mean() for t in past]
            replayed = torch.stack(losses).mean()
        else:
            x, y, t = self._draw(past, self.replay_batch)
            replayed = self.forward(self.model, x, y, t)[1].mean()
        new = 1.0 / (self.experience + 1)
        return self.step(new * per_item.mean() + (1 - new) * replayed)


def _previous_classes(stream: Stream, device: torch.device) -> Callable[[int], torch.Tensor]:
    """Class-IL: the outputs of the tasks before ``k`` (what a frozen model may label with)."""
    masks = torch.zeros(len(stream) + 1, stream.n_outputs, dtype=torch.bool)
    for task in stream.tasks:
        masks[task.index + 1:, list(task.classes)] = True
    masks = masks.to(device)
    return lambda k: masks[k]


def build(stream: Stream, cfg: ProtocolConfig, heads: Heads, seed: int) -> Strategy:
    """The network (seeded by the caller) and ``cfg.method`` around it."""
    device = torch.device(cfg.device)
    model = mlp(stream.n_inputs, cfg.hidden, stream.n_outputs).to(device)
    options = dict(optimizer=adam(cfg.lr), logits_fn=heads)
    per_task = stream.scenario == "task"
    if cfg.method == "none":
        return FineTune(model, **options)
    if cfg.method == "joint":
        return Joint(model, **options)
    if cfg.method == "ewc":
        return OfflineEWC(model, cfg.ewc_lambda, cfg.fisher_samples, heads.mask, **options)
    if cfg.method == "online-ewc":
        ewc = EWC(cfg.ewc_lambda, decay=cfg.ewc_gamma, fisher="sampled",
                  samples=cfg.fisher_samples)
        return OnlineEWC(model, ewc, output_mask=heads.mask, **options)
    if cfg.method == "si":
        return SynapticIntelligence(model, cfg.si_c, damping=cfg.si_damping, **options)
    if cfg.method == "er":
        def train_set(k: int) -> tuple[torch.Tensor, torch.Tensor]:
            return stream.tasks[k].x_train, stream.tasks[k].y_train
        return ExemplarReplay(model, cfg.budget, train_set, replay_batch=cfg.batch,
                              per_task=per_task, generator=torch.Generator().manual_seed(seed),
                              **options)
    if cfg.method in ("dgr", "dgr+distill"):
        vae = VAE(stream.n_inputs, cfg.hidden, cfg.z_dim).to(device)
        mask = _previous_classes(stream, device) if stream.scenario == "class" else None
        return GenerativeReplay(
            model, vae, replay_batch=cfg.batch,
            targets="soft" if cfg.method == "dgr+distill" else "hard",
            temperature=cfg.temperature, per_task=per_task, target_mask=mask,
            generator_optimizer=adam(cfg.lr), **options)
    n_classes = sum(len(set(t.y_train.tolist())) for t in stream.tasks)
    buffer = EpisodicBuffer(cfg.budget * n_classes, seed=seed)
    phase = SleepPhaseConfig(steps=cfg.sleep_steps, lr=cfg.sleep_lr, batch=cfg.batch,
                             sampling="uniform", current_fraction=0.0,
                             distill=cfg.distill if cfg.method == "response-replay" else 0.0)
    control = cfg.method == "replay-equal-compute"
    sleep = Sleep(phase, buffer, stream.n_outputs, signals=None if control else PrioritySignals(),
                  logits_fn=heads, recombine=not control, seed=seed)
    return SleepReplay(model, sleep, replay_batch=cfg.batch,
                       anneal_steps=len(stream) * wake_iters(cfg, len(stream)), **options)


def _union_batch(stream: Stream, n: int, gen: torch.Generator):
    """``n`` items drawn uniformly from the union of every task's training items."""
    sizes = torch.tensor([t.n_train for t in stream.tasks], dtype=torch.float)
    which = torch.multinomial(sizes, n, replacement=True, generator=gen)
    xs, ys, ts = [], [], []
    for task in stream.tasks:
        k = int((which == task.index).sum())
        if k:
            x, y = task.train_batch(torch.randint(task.n_train, (k,), generator=gen))
            xs.append(x), ys.append(y), ts.append(torch.full((k,), task.index))
    return torch.cat(xs), torch.cat(ys), torch.cat(ts)


def train_protocol(stream: Stream, cfg: ProtocolConfig, seed: int) -> dict:
    """Train ``cfg.method`` through ``stream`` with ``seed``; test after every task (joint: once).

    Returns the accuracy rows (row i: after task i; joint has only the final row), the final
    per-task accuracies, the items back-propagated, the items stored, the wall and CPU time.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = torch.device(cfg.device)
    start, cpu = time.perf_counter(), time.process_time()
    heads = Heads(stream, device)
    learner = build(stream, cfg, heads, seed)
    rows: list[list[float]] = []
    items = 0
    if cfg.method == "joint":
        for task in stream.tasks:
            heads.see(task.index)
        learner.before_experience(len(stream) - 1)
        for _ in range(cfg.iters):
            x, y, t = _union_batch(stream, cfg.batch, gen)
            learner.observe(x.to(device), y.to(device), t.to(device))
        items = cfg.iters * cfg.batch
        rows.append(evaluate(learner.evaluated, heads, stream, device).tolist())
    else:
        steps = wake_iters(cfg, len(stream)) if cfg.method in SLEEPING else cfg.iters
        for task in stream.tasks:
            heads.see(task.index)

            def sample(n: int, task=task) -> tuple[torch.Tensor, torch.Tensor]:
                return task.train_batch(torch.randint(task.n_train, (n,), generator=gen))

            learner.before_experience(task.index, sample)
            for _ in range(steps):
                x, y = sample(cfg.batch)
                learner.observe(x.to(device), y.to(device),
                                torch.full((cfg.batch,), task.index, device=device))
            learner.after_experience()
            rows.append(evaluate(learner.evaluated, heads, stream, device).tolist())
        items = _items(cfg, learner, steps, len(stream))
    stored = (learner.stored_items if isinstance(learner, ExemplarReplay)
              else len(learner.buffer) if isinstance(learner, SleepReplay) else 0)
    return {"accuracy": rows, "final": rows[-1], "final_mean": float(np.mean(rows[-1])),
            "items": items, "stored": stored, "wall_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu}


def _items(cfg: ProtocolConfig, learner: Strategy, steps: int, n_tasks: int) -> int:
    """Classifier items back-propagated (replay included; the generator's own training not)."""
    if isinstance(learner, SleepReplay):
        return n_tasks * steps * 2 * cfg.batch + sum(r.steps for r in learner.sleep.history) \
            * cfg.batch
    if isinstance(learner, (ExemplarReplay, GenerativeReplay)):
        return replay_items(cfg, n_tasks)
    return n_tasks * steps * cfg.batch
