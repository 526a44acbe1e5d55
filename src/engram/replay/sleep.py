"""Sleep: the consolidation loop that replays the fast store into a slow learner.

A sleep phase runs a few hundred low-learning-rate steps on the slow learner, each on a batch
that interleaves prioritized replay from the ``EpisodicBuffer``, "dreams" recombined along the
``MemoryGraph``, and a slice of the current task's data — so new learning is rehearsed together
with what is already known instead of overwriting it (McClelland, McNaughton & O'Reilly 1995).
When to sleep is a schedule (every n steps, at task boundaries) or an adaptive trigger: sleep
when a small probe set drawn from the buffer shows forgetting beyond a threshold.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engram.replay.buffer import EpisodicBuffer
from engram.replay.ewc import EWC
from engram.replay.graph import MemoryGraph
from engram.replay.priority import PrioritySignals

SCHEDULES = ("boundary", "every", "adaptive")
WEIGHT_NORMS = ("max", "mean")
LogitsFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def plain_logits(model: nn.Module, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    """Logits of ``model(x)``, ignoring the task (class- and domain-incremental heads)."""
    return model(x)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against hard labels [B] or soft targets [B, C].

    Sequences (logits [B, T, C] against labels [B, T] or soft targets [B, T, C]) give each
    sample its mean over positions, so a next-token model sleeps like a classifier.
    """
    log_p = F.log_softmax(logits, dim=-1)
    if target.ndim == 1:
        return -log_p.gather(1, target[:, None])[:, 0]
    if not torch.is_floating_point(target):
        return -log_p.gather(-1, target[..., None])[..., 0].flatten(1).mean(1)
    # Masked (−inf) logits meet zero target mass; keep them out of the sum.
    per_position = -(target * log_p.masked_fill(~torch.isfinite(log_p), 0.0)).sum(-1)
    return per_position if per_position.ndim == 1 else per_position.flatten(1).mean(1)


def _finite_squared_difference(
    a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a − b)² with 0 where either side is masked (±inf), and the mask of finite pairs."""
    finite = torch.isfinite(a) & torch.isfinite(b)
    return (a - b).masked_fill(~finite, 0.0) ** 2, finite


def response_distance(logits: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared difference between logits and a stored response [B, C].

    Masked (−inf) outputs on either side are left out, so a class-incremental response
    stored before later classes were live compares only the outputs it had.
    """
    squared, finite = _finite_squared_difference(logits, stored)
    return squared.sum(-1) / finite.sum(-1).clamp_min(1)


def normalise_weights(weights: torch.Tensor, how: str = "max") -> torch.Tensor:
    """Importance weights scaled to batch max 1 (``"max"``) or to batch mean 1 (``"mean"``).

    Dividing by the max (Schaul et al. 2016) shrinks the whole replay term as priorities
    spread — with β near 1 the mean weight falls to a fraction — so against an unweighted
    current-task or dream loss, replay loses its share; the mean keeps its share fixed.
    """
    if how == "max":
        return weights / weights.max()
    if how == "mean":
        return weights / weights.mean()
    raise ValueError(f"how: expected one of {list(WEIGHT_NORMS)}, got {how!r}")


@dataclass(frozen=True)
class SleepPhaseConfig:
    """How and when to consolidate.

    ``schedule``: ``"boundary"`` (after each task), ``"every"`` (every ``every`` wake steps,
    and at boundaries), or ``"adaptive"`` (when probe accuracy falls ``threshold`` below its
    level after the last sleep; checked every ``probe_every`` steps, and at boundaries).
    ``weight_norm``: importance weights divided by their batch maximum (Schaul et al.) or by
    their batch mean (see :func:`normalise_weights`). ``distill``: weight of the distance to
    each replayed item's stored response (see :func:`response_distance`), when the buffer
    keeps one.
    """

    schedule: str = "boundary"
    every: int = 200
    steps: int = 200
    lr: float = 1e-3
    batch: int = 128
    sampling: str = "prioritized"
    dream_fraction: float = 0.25
    current_fraction: float = 0.25
    dream_length: int = 3
    dream_mode: str = "blend"
    graph_k: int = 5
    probe_size: int = 128
    probe_every: int = 50
    threshold: float = 0.05
    unfinished_threshold: float = 0.5
    beta: float = 0.4
    weight_norm: str = "max"
    distill: float = 0.0

    def __post_init__(self) -> None:
        if self.distill < 0:
            raise ValueError(f"distill: expected a weight ≥ 0, got {self.distill}")
        if self.weight_norm not in WEIGHT_NORMS:
            raise ValueError(
                f"weight_norm: expected one of {list(WEIGHT_NORMS)}, got {self.weight_norm!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {list(SCHEDULES)}, got {self.schedule!r}")
        for name in ("every", "steps", "batch", "probe_size", "probe_every", "graph_k"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        for name in ("dream_fraction", "current_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a fraction in [0, 1], got {value}")
        if self.dream_fraction + self.current_fraction >= 1.0:
            raise ValueError(
                "dream_fraction + current_fraction: expected < 1 to leave room for replay"
            )
        if self.lr <= 0:
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr}")


@dataclass(frozen=True)
class SleepPhaseReport:
    """What one sleep phase did: steps, replayed/dreamed/current counts, mean loss."""

    steps: int
    replayed: int
    dreamed: int
    current: int
    mean_loss: float


class Sleep:
    """The consolidation loop; call :meth:`tick` every wake step and :meth:`sleep` when it says.

    Args:
        config: a ``SleepPhaseConfig``.
        buffer: the fast store to replay from.
        n_classes: width of the soft targets of dreams.
        signals: replay-priority weights; ``None`` replays uniformly.
        ewc: optional online EWC, consolidated at the end of each sleep on the buffer.
        logits_fn: ``(model, x, task) -> logits``, to apply task heads or masks.
        recombine: whether to add dreams from the ``MemoryGraph``.
        seed: seeds this loop's generator.
    """

    def __init__(
        self,
        config: SleepPhaseConfig,
        buffer: EpisodicBuffer,
        n_classes: int,
        signals: PrioritySignals | None = None,
        ewc: EWC | None = None,
        logits_fn: LogitsFn = plain_logits,
        recombine: bool = True,
        seed: int = 0,
    ):
        self.config = config
        self.buffer = buffer
        self.n_classes = int(n_classes)
        self.signals = signals
        self.ewc = ewc
        self.logits_fn = logits_fn
        self.recombine = bool(recombine)
        self.generator = torch.Generator().manual_seed(seed)
        self.graph = MemoryGraph(k=config.graph_k)
        self.steps_since = 0
        self.probe: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.probe_baseline = 0.0
        self.history: list[SleepPhaseReport] = []

    # ---------------------------------------------------------------- triggers
    def probe_accuracy(self, model: nn.Module) -> float:
        """Accuracy of ``model`` on the probe set (1.0 when there is none yet)."""
        if self.probe is None:
            return 1.0
        x, y, task = self.probe
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = self.logits_fn(model, x.to(device), task.to(device))
        model.train(was_training)
        return float((logits.argmax(-1).cpu() == y).float().mean())

    def tick(self, model: nn.Module, boundary: bool = False) -> bool:
        """Count one wake step; True when the schedule or the trigger calls for sleep now."""
        self.steps_since += 1
        if len(self.buffer) == 0:
            return False
        cfg = self.config
        if boundary:
            return True
        if cfg.schedule == "every":
            return self.steps_since >= cfg.every
        if cfg.schedule == "adaptive" and self.steps_since % cfg.probe_every == 0:
            return self.probe_accuracy(model) < self.probe_baseline - cfg.threshold
        return False

    # ------------------------------------------------------------ consolidation
    def _dreams(
        self, n: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.graph.dream(
            self._graph_x, self._graph_y, self.n_classes, n, self.config.dream_length,
            self.config.dream_mode, generator=self.generator,
        )
        # A dream belongs to the task of the episode its walk started from.
        task = self.buffer.task[d.walks[:, 0]]
        return d.x.to(device), d.target.to(device), task.to(device)

    def sleep(
        self,
        model: nn.Module,
        current: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        teacher: nn.Module | None = None,
    ) -> SleepPhaseReport:
        """One sleep phase on ``model`` (the slow learner); ``current`` = (x, y, task) of now.

        With a ``teacher`` (the fast learner of a pair) the replayed items' targets mix the
        true label with the teacher's softened prediction, distilling what it has learned.
        """
        cfg = self.config
        device = next(model.parameters()).device
        if len(self.buffer) < 2:
            raise ValueError("buffer: need at least 2 stored items to sleep")
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        if self.recombine:
            self._graph_x = self.buffer.x
            self._graph_y = self.buffer.y[: len(self.buffer)]
            self.graph.build(self._graph_x.reshape(len(self.buffer), -1), self._graph_y,
                             self.buffer.step[: len(self.buffer)])
        n_dream = round(cfg.batch * cfg.dream_fraction) if self.recombine else 0
        n_now = round(cfg.batch * cfg.current_fraction) if current is not None else 0
        n_replay = cfg.batch - n_dream - n_now
        sampling = "prioritized" if self.signals is not None else cfg.sampling
        if self.signals is None and sampling == "prioritized":
            sampling = "uniform"
        losses = []
        model.train()
        for _ in range(cfg.steps):
            batch = self.buffer.sample(n_replay, sampling, beta=cfg.beta, device=device)
            logits = self.logits_fn(model, batch.x, batch.task)
            target: torch.Tensor = batch.y
            if teacher is not None:
                with torch.no_grad():
                    soft = self.logits_fn(teacher, batch.x, batch.task).softmax(-1)
                target = 0.5 * F.one_hot(batch.y, logits.shape[-1]).float() + 0.5 * soft
            per_item = soft_cross_entropy(logits, target)
            if cfg.distill and batch.response is not None:
                per_item = per_item + cfg.distill * response_distance(logits, batch.response)
            weights = normalise_weights(batch.weights, cfg.weight_norm)
            loss = (weights * per_item).mean() * n_replay
            if n_dream:
                dx, dy, dtask = self._dreams(n_dream, device)
                loss = loss + soft_cross_entropy(self.logits_fn(model, dx, dtask), dy).sum()
            if n_now:
                cx, cy, ct = current
                pick = torch.randint(cx.shape[0], (n_now,), generator=self.generator)
                cx, cy, ct = cx[pick].to(device), cy[pick].to(device), ct[pick].to(device)
                loss = loss + soft_cross_entropy(self.logits_fn(model, cx, ct), cy).sum()
            loss = loss / cfg.batch
            if self.ewc is not None:
                loss = loss + self.ewc.penalty(model)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if self.signals is not None:
                with torch.no_grad():
                    hard = soft_cross_entropy(self.logits_fn(model, batch.x, batch.task), batch.y)
                self.buffer.update_losses(batch.indices, hard.cpu(), cfg.unfinished_threshold)
        if self.signals is not None:
            self.signals.refresh(self.buffer)
        if self.ewc is not None:
            x = self.buffer.x.to(device)
            self.ewc.consolidate(model, x, self.buffer.y[: len(self.buffer)].to(device))
        self._reset_probe(model)
        report = SleepPhaseReport(cfg.steps, cfg.steps * n_replay, cfg.steps * n_dream,
                             cfg.steps * n_now, sum(losses) / len(losses))
        self.history.append(report)
        return report

    def _reset_probe(self, model: nn.Module) -> None:
        n = min(self.config.probe_size, len(self.buffer))
        pick = torch.randperm(len(self.buffer), generator=self.generator)[:n]
        self.probe = (self.buffer.x[pick], self.buffer.y[pick], self.buffer.task[pick])
        self.probe_baseline = self.probe_accuracy(model)
        self.steps_since = 0


class FastSlowPair(nn.Module):
    """A complementary pair: a plastic fast learner and a stable slow one that tracks it.

    The slow learner's weights follow an exponential moving average of the fast learner's
    (the slow cortical integration of CLS-ER, Arani et al. 2022) and are also trained directly
    in sleep phases; the fast learner is pulled toward the slow one's predictions on replayed
    items (``consistency``), so it does not drift away from consolidated knowledge.
    """

    def __init__(self, fast: nn.Module, decay: float = 0.999, consistency: float = 0.1):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay: expected a value in (0, 1), got {decay}")
        if consistency < 0:
            raise ValueError(f"consistency: expected ≥ 0, got {consistency}")
        self.fast = fast
        self.slow = copy.deepcopy(fast)
        self.decay = float(decay)
        self.consistency = float(consistency)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The slow learner answers: it is the one that keeps what was learned."""
        return self.slow(x)

    @torch.no_grad()
    def track(self) -> None:
        """Move the slow weights a step toward the fast ones."""
        for s, f in zip(self.slow.parameters(), self.fast.parameters(), strict=True):
            s.mul_(self.decay).add_(f.detach(), alpha=1 - self.decay)

    def consistency_loss(
        self, fast_logits: torch.Tensor, slow_logits: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared difference of logits (masked outputs count 0), times ``consistency``."""
        squared, _ = _finite_squared_difference(fast_logits, slow_logits)
        return self.consistency * squared.mean()
