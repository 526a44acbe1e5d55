"""One run of the mammoth protocol (Buzzega et al. 2020): a method trained once through a stream.

What the protocol fixes, as the aimagelab/mammoth repository runs it: an MLP 784-100-100-10
with Xavier-uniform weights and zero biases, plain SGD (no momentum, no weight decay), one
epoch over each task's shuffled training set, a reservoir buffer, and every output live during
training (class-IL and task-IL are two readings of the same run: arg-max over all ten outputs,
or over the task's own two). What each method adds is ``build`` below; an ``Arm`` holds its
hyper-parameters.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engram.data.streams import Stream, Task, permuted_mnist, split_mnist
from engram.errors import ConfigError
from engram.replay import EWC, EpisodicBuffer, PrioritySignals, Sleep, SleepPhaseConfig
from engram.replay.ewc import FISHERS
from engram.replay.experiments.continual_train import mlp
from engram.replay.sleep import response_distance
from engram.replay.strategies import (
    AGEM,
    ERACE,
    ExperienceReplay,
    FineTune,
    LwF,
    OnlineEWC,
    SleepReplay,
    Strategy,
)
from engram.replay.strategies.base import OptimizerFactory

BENCHMARKS = ("seq-mnist", "perm-mnist")
METHODS = ("sgd", "ewc_on", "er", "derpp", "er_ace", "sleep", "sleep_response", "er_rehearse",
           "lwf", "agem")
# Methods that sleep at every task boundary (Engram's, and the equal-compute control).
SLEEPING = ("sleep", "sleep_response", "er_rehearse")
REPLAYING = ("er", "derpp", "er_ace", "agem", *SLEEPING)
# LwF as mammoth's best_args run it on Seq-MNIST: the paper's temperature, SGD with weight decay.
LWF_TEMPERATURE = 2.0
LWF_WEIGHT_DECAY = 5e-4


@dataclass(frozen=True)
class Arm:
    """One method and every hyper-parameter it runs with (resolved; see ``mammoth.resolve_arm``).

    ``lr``: SGD's learning rate; ``minibatch``: items drawn from the buffer per draw;
    ``alpha``/``beta``: DER++'s logit and label weights (``alpha`` is the response-replay
    weight of ``sleep_response`` and the distillation weight of ``lwf``);
    ``e_lambda``/``gamma``: online EWC as mammoth defines it
    (penalty λ·Σ F (θ − θ*)², F ← γF + F_new); ``fisher_items``: items per Fisher estimate;
    ``fisher``: its kind (``engram.replay.ewc.FISHERS``; mammoth's is ``"weighted"``, each
    squared gradient times p(y|x));
    ``sleep_steps``/``sleep_batch``/``sleep_lr``: each boundary sleep (Adam, Engram's).
    """

    name: str
    method: str
    buffer: int = 0
    lr: float = 0.03
    minibatch: int = 10
    alpha: float = 0.0
    beta: float = 1.0
    e_lambda: float = 0.0
    gamma: float = 1.0
    fisher_items: int = 0
    fisher: str = "empirical"
    sleep_steps: int = 0
    sleep_batch: int = 128
    sleep_lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"arms: expected a method from {list(METHODS)}, got {self.method!r}")
        if (self.buffer > 0) != (self.method in REPLAYING):
            raise ConfigError(f"arms: {self.name}: a buffer size goes with the replaying methods "
                              f"{list(REPLAYING)} and only with them, got {self.buffer}")
        for key in ("lr", "sleep_lr"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"arms: {self.name}: {key} expected > 0, got {getattr(self, key)}")
        for key in ("minibatch", "sleep_batch"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"arms: {self.name}: {key} expected a positive integer, "
                                  f"got {getattr(self, key)}")
        if self.method in SLEEPING and self.sleep_steps <= 0:
            raise ConfigError(f"arms: {self.name}: sleep_steps expected > 0, got {self.sleep_steps}")
        if self.fisher not in FISHERS:
            raise ConfigError(f"arms: {self.name}: fisher expected one of {list(FISHERS)}, "
                              f"got {self.fisher!r}")
        if self.method == "ewc_on" and self.fisher_items <= 0:
            raise ConfigError(f"arms: {self.name}: fisher_items expected > 0, "
                              f"got {self.fisher_items}")


@dataclass(frozen=True)
class Cell:
    """One job: the stream, how much of it a quick form reads, and one arm (the seed comes apart)."""

    benchmark: str
    n_tasks: int
    batch: int
    data_path: str
    validation: bool
    train_items: int
    test_items: int
    arm: Arm


def sgd(lr: float, weight_decay: float = 0.0) -> OptimizerFactory:
    """Plain SGD at ``lr`` (mammoth's optimiser: no momentum; weight decay only where its
    best_args set one)."""
    return lambda params: torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


def mammoth_mlp(n_in: int, n_out: int, hidden: int = 100) -> nn.Sequential:
    """The MNIST backbone of mammoth: two hidden ReLU layers, Xavier-uniform weights, zero biases."""
    net = mlp(n_in, hidden, n_out)
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return net


class TwoDrawDERPP(ExperienceReplay):
    """DER++ as mammoth runs it: two independent buffer draws per step, one for the stored
    logits (mean squared error, weight α) and one for the labels (cross-entropy, weight β).

    ``ExperienceReplay(distill=α)`` uses one draw for both and a label weight of 1, which is not
    the published method when β ≠ 1 (mammoth's Seq-MNIST 500 and 5,120 use β = 0.5).
    """

    def __init__(self, model: nn.Module, buffer: EpisodicBuffer, *, replay_batch: int,
                 alpha: float, beta: float, **options):
        if not alpha > 0 or not beta >= 0:
            raise ValueError(f"alpha, beta: expected α > 0 and β ≥ 0, got {alpha}, {beta}")
        super().__init__(model, buffer, replay_batch=replay_batch, distill=alpha, **options)
        self.beta = float(beta)

    def observe(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor | None = None
    ) -> float:
        task = self.tasks(inputs, task)
        outputs, per_item = self.forward(self.model, inputs, targets, task)
        loss = per_item.mean()
        if len(self.buffer) > 0:
            dark = self.buffer.sample(self.replay_batch, device=self.device)
            replayed = self.logits_fn(self.model, dark.x, dark.task)
            assert dark.response is not None
            loss = loss + self.distill * response_distance(replayed, dark.response).mean()
            labelled = self.buffer.sample(self.replay_batch, device=self.device)
            _, label_loss = self.forward(self.model, labelled.x, labelled.y, labelled.task)
            loss = loss + self.beta * label_loss.mean()
        value = self.step(loss)
        self.remember(inputs, targets, task, outputs, per_item)
        return value


def mlp_fisher(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, fisher: str = "weighted",
    logit_mask: torch.Tensor | None = None, chunk: int = 4096,
) -> dict[str, torch.Tensor]:
    """``engram.replay.ewc.fisher_diagonal`` in closed form for a network whose parameters are
    all in ``nn.Linear`` layers, each applied once to a batch of vectors (the protocol's MLP).

    A linear layer's per-item weight gradient is δ aᵀ (δ: the gradient at its output, a: its
    input), so the sum of its squares over items is (δ²)ᵀ a²: one matrix product per chunk
    instead of a gradient per item. ``fisher``: ``"empirical"`` or ``"weighted"`` (by p(y|x)).
    """
    if fisher not in ("empirical", "weighted"):
        raise ValueError(f"fisher: expected 'empirical' or 'weighted', got {fisher!r}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"y: expected {x.shape[0]} labels matching x, got {y.shape[0]}")
    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    owned = {f"{name}.{p}" for name, m in layers.items() for p, _ in m.named_parameters()}
    params = {k for k, v in model.named_parameters() if v.requires_grad}
    if not params <= owned:
        raise ValueError("model: expected every parameter in an nn.Linear, got "
                         f"{sorted(params - owned)}")
    seen: dict[str, list[torch.Tensor]] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            seen.setdefault(name, []).extend((args[0], out))
        return hook

    handles = [m.register_forward_hook(keep(name)) for name, m in layers.items()]
    total = {k: torch.zeros_like(v) for k, v in model.named_parameters() if k in params}
    try:
        for start in range(0, x.shape[0], chunk):
            seen.clear()
            logits = model(x[start:start + chunk])
            if logit_mask is not None:
                logits = logits.masked_fill(~logit_mask, -float("inf"))
            log_p = F.log_softmax(logits, dim=-1).gather(1, y[start:start + chunk, None])[:, 0]
            used = {k.rpartition(".")[0] for k in params}
            if not used <= set(seen) or any(len(v) != 2 or v[0].dim() != 2 for v in seen.values()):
                raise ValueError("model: expected each nn.Linear applied once to a batch of vectors")
            deltas = torch.autograd.grad(log_p.sum(), [seen[name][1] for name in seen])
            weight = log_p.detach().exp() if fisher == "weighted" else torch.ones_like(log_p)
            for name, delta in zip(seen, deltas, strict=True):
                a, d2 = seen[name][0].detach(), delta.detach() ** 2 * weight[:, None]
                if f"{name}.weight" in total:
                    total[f"{name}.weight"] += d2.T @ a**2
                if f"{name}.bias" in total:
                    total[f"{name}.bias"] += d2.sum(0)
    finally:
        for handle in handles:
            handle.remove()
    return {k: v / x.shape[0] for k, v in total.items()}


class MLPFisherEWC(EWC):
    """Online EWC whose Fisher is ``mlp_fisher`` (the same estimate as ``EWC``'s, in closed
    form: mammoth's Fisher over every training item costs about one more epoch, not 60,000
    per-item gradients)."""

    def estimate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 logit_mask: torch.Tensor | None,
                 generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        return mlp_fisher(model, x, y, self.fisher_kind, logit_mask)


def build(arm: Arm, model: nn.Module, n_outputs: int, steps: int, seed: int,
          n_tasks: int = 5) -> Strategy:
    """``arm.method`` around ``model`` (every output live: the logits are the model's own)."""
    if arm.method == "sgd":
        return FineTune(model, optimizer=sgd(arm.lr))
    if arm.method == "ewc_on":
        # EWC's penalty is λ/2·Σ F(θ − θ*)²; mammoth's is e_lambda·Σ F(θ − θ*)².
        # The closed form of the per-item estimate (equal to float rounding), except for the
        # sampled Fisher, which it does not compute.
        kind = EWC if arm.fisher == "sampled" else MLPFisherEWC
        ewc = kind(2 * arm.e_lambda, decay=arm.gamma, fisher=arm.fisher, samples=arm.fisher_items)
        return OnlineEWC(model, ewc, optimizer=sgd(arm.lr))
    if arm.method == "lwf":
        return LwF(model, alpha=arm.alpha, temperature=LWF_TEMPERATURE,
                   optimizer=sgd(arm.lr, LWF_WEIGHT_DECAY))
    buffer = EpisodicBuffer(arm.buffer, seed=seed)
    if arm.method == "agem":
        # An equal share of the memory per task, stored when the task ends (mammoth's A-GEM;
        # its agem_r is the reservoir variant).
        return AGEM(model, buffer, replay_batch=arm.minibatch,
                    per_experience=max(1, arm.buffer // n_tasks), seed=seed, optimizer=sgd(arm.lr))
    if arm.method == "er":
        # ExperienceReplay adds the mean losses of the two batches; mammoth's ER takes the mean
        # over their concatenation, half as much when both hold the same number of items: at
        # half the rate the SGD steps are the same.
        return ExperienceReplay(model, buffer, replay_batch=arm.minibatch,
                                optimizer=sgd(arm.lr / 2))
    if arm.method == "derpp":
        return TwoDrawDERPP(model, buffer, replay_batch=arm.minibatch, alpha=arm.alpha,
                            beta=arm.beta, optimizer=sgd(arm.lr))
    if arm.method == "er_ace":
        return ERACE(model, buffer, replay_batch=arm.minibatch, optimizer=sgd(arm.lr))
    uniform = arm.method == "er_rehearse"
    sleep = Sleep(
        SleepPhaseConfig(schedule="boundary", steps=arm.sleep_steps, lr=arm.sleep_lr,
                         batch=arm.sleep_batch, sampling="uniform", current_fraction=0.0,
                         dream_fraction=0.0 if uniform else 0.25,
                         distill=arm.alpha if arm.method == "sleep_response" else 0.0),
        buffer, n_outputs, signals=None if uniform else PrioritySignals(), recombine=not uniform,
        seed=seed,
    )
    # Awake, the sleeping arms are ER (halved rate, as above) or DER++-like response replay.
    lr = arm.lr if arm.method == "sleep_response" else arm.lr / 2
    return SleepReplay(model, sleep, replay_batch=arm.minibatch, anneal_steps=steps,
                       optimizer=sgd(lr))


class SampleCounter:
    """Counts the items that pass through a network with gradients on (each is one forward and
    one backward pass: the protocol's unit of training compute)."""

    def __init__(self, model: nn.Module):
        self.items = 0
        first = next(m for m in model.modules() if isinstance(m, nn.Linear))
        self._handle = first.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if torch.is_grad_enabled():
            self.items += int(args[0].shape[0])

    def close(self) -> None:
        self._handle.remove()


# --------------------------------------------------------------------------- streams
_BASE: dict[tuple[str, int, str, bool], Stream] = {}


def base_stream(benchmark: str, n_tasks: int, path: str, validation: bool) -> Stream:
    """Seq-MNIST (5 tasks of 2 digits, digit labels) or Permuted MNIST (``n_tasks``), cached."""
    key = (benchmark, n_tasks, path, validation)
    if key not in _BASE:
        if benchmark == "seq-mnist":
            _BASE[key] = split_mnist(path, "class", validation=validation)
        else:
            _BASE[key] = permuted_mnist(path, n_tasks=n_tasks, validation=validation)
    return _BASE[key]


def stream_for(cell: Cell, seed: int) -> Stream:
    """The cell's stream; Permuted MNIST draws a fresh permutation for every task from ``seed``
    (mammoth permutes every task, the first included, anew in each run)."""
    stream = base_stream(cell.benchmark, cell.n_tasks, cell.data_path, cell.validation)
    tasks = stream.tasks
    if cell.benchmark == "perm-mnist":
        gen = torch.Generator().manual_seed(10_000 + seed)
        tasks = tuple(dataclasses.replace(t, perm=torch.randperm(stream.n_inputs, generator=gen))
                      for t in tasks)
    if cell.train_items or cell.test_items:
        tasks = tuple(_cut(t, cell.train_items, cell.test_items) for t in tasks)
    return dataclasses.replace(stream, tasks=tasks)


def _cut(task: Task, train: int, test: int) -> Task:
    """The first ``train``/``test`` items of a task (0 = all): the quick forms."""
    tr = slice(None, train or None)
    te = slice(None, test or None)
    return dataclasses.replace(task, x_train=task.x_train[tr], y_train=task.y_train[tr],
                               x_test=task.x_test[te], y_test=task.y_test[te])


@torch.no_grad()
def accuracies(model: nn.Module, stream: Stream, upto: int) -> tuple[list[float], list[float]]:
    """Accuracy on tasks 0…``upto``: arg-max over every output, and over the task's own classes."""
    model.eval()
    every, own = [], []
    for task in stream.tasks[: upto + 1]:
        x, y = task.test_set()
        logits = torch.cat([model(x[i:i + 4096]) for i in range(0, x.shape[0], 4096)])
        every.append(float((logits.argmax(-1) == y).float().mean()))
        live = torch.zeros(logits.shape[-1], dtype=torch.bool)
        live[list(task.classes)] = True
        masked = logits.masked_fill(~live, -float("inf"))
        own.append(float((masked.argmax(-1) == y).float().mean()))
    model.train()
    return every, own


def steps_per_task(n_train: int, batch: int) -> int:
    """Batches in one epoch over ``n_train`` items (the last one may be short)."""
    return math.ceil(n_train / batch)


def train_one(cell: Cell, seed: int) -> dict[str, Any]:
    """Train ``cell.arm`` once through the stream with ``seed`` on one torch thread.

    Returns the accuracy after each task on each task seen so far (row i has i + 1 entries),
    under both readings, with the training compute it took.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(cell, seed)
    finally:
        torch.set_num_threads(threads)


def _train(cell: Cell, seed: int) -> dict[str, Any]:
    stream = stream_for(cell, seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = mammoth_mlp(stream.n_inputs, stream.n_outputs)
    total = sum(steps_per_task(t.n_train, cell.batch) for t in stream.tasks)
    learner = build(cell.arm, model, stream.n_outputs, total, seed, len(stream.tasks))
    counter = SampleCounter(model)
    start = time.perf_counter()
    every, own, steps = [], [], 0
    for task in stream.tasks:
        def sample(n: int, task: Task = task) -> tuple[torch.Tensor, torch.Tensor]:
            # min(n, all) items of the task without repeats (mammoth's Fisher reads them all).
            return task.train_batch(torch.randperm(task.n_train, generator=gen)[:n])

        learner.before_experience(task.index, sample)
        order = torch.randperm(task.n_train, generator=gen)
        for first in range(0, task.n_train, cell.batch):
            x, y = task.train_batch(order[first:first + cell.batch])
            learner.observe(x, y, torch.full((y.shape[0],), task.index))
            steps += 1
        learner.after_experience()
        a, b = accuracies(model, stream, task.index)
        every.append(a)
        own.append(b)
    counter.close()
    sleep_steps = (sum(r.steps for r in learner.sleep.history)
                   if isinstance(learner, SleepReplay) else 0)
    return {"accuracy": every, "task_accuracy": own, "steps": steps,
            "sleep_steps": sleep_steps, "trained_items": counter.items,
            "wall_s": time.perf_counter() - start}


def final_accuracy(rows: list[list[float]]) -> float:
    """Mean over tasks of the accuracy after the last task (mammoth's reported figure)."""
    return float(np.mean(rows[-1]))


def mean_forgetting(rows: list[list[float]]) -> float:
    """Mean over all but the last task of its best accuracy before the end minus its final one."""
    t = len(rows)
    if t < 2:
        return 0.0
    return float(np.mean([max(rows[i][j] for i in range(j, t - 1)) - rows[-1][j]
                          for j in range(t - 1)]))
