"""Strategy: the hook points of a continual learner, and the training step every strategy shares.

A stream is a sequence of experiences; the caller drives the loop and a strategy consumes it
through three hooks: ``before_experience`` (a new experience starts; ``sample`` draws training
items of it for strategies that need more than the batches they see), ``observe`` (one
optimiser step on a batch) and ``after_experience`` (the experience is over). The model is any
``nn.Module``: ``logits_fn`` turns it and a batch into outputs, ``loss_fn`` into a loss per item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from engram.replay.sleep import LogitsFn, plain_logits

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer]
# n random training items (inputs, targets) of the current experience.
Sampler = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def per_item_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per item: logits [B, C] against labels [B], or [B, T, C] against [B, T]
    (the mean over positions, as a next-token model is trained)."""
    if logits.ndim == 2:
        return F.cross_entropy(logits, targets, reduction="none")
    if logits.ndim != targets.ndim + 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets: expected shape {tuple(logits.shape[:-1])} to match logits "
            f"{tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    flat = F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none")
    return flat.view(targets.shape).flatten(1).mean(1)


def per_item_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Share of each item's outputs whose arg-max is the target (1 or 0 for one label)."""
    correct = (logits.argmax(-1) == targets).float()
    return correct if correct.ndim == 1 else correct.flatten(1).mean(1)


def adam(lr: float = 1e-3) -> OptimizerFactory:
    """An optimiser factory: Adam at ``lr`` over the parameters it is given.

    The multi-tensor (``foreach``) update: the same arithmetic as torch's per-tensor default on
    CPU, bit for bit, with fewer temporaries (×1.8 on the optimiser step alone, no measurable
    change in a whole training step: ``benchmarks/replay_vandeven_step.py``).
    """
    if not lr > 0:
        raise ValueError(f"lr: expected a positive learning rate, got {lr}")
    return lambda params: torch.optim.Adam(params, lr=lr, foreach=True)


class Strategy:
    """Plain training, one optimiser step per :meth:`observe`; subclasses add what they need.

    Args:
        model: the network trained (any ``nn.Module``).
        optimizer: builds the optimiser over ``model.parameters()`` (default Adam, lr 1e-3).
        logits_fn: ``(model, inputs, task) -> outputs``, to apply task heads or masks.
        loss_fn: ``(outputs, targets) -> loss per item`` (default cross-entropy).
    """

    # Whether the loop must feed batches from every experience so far (only the joint bound).
    sees_past_data: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: OptimizerFactory | None = None,
        logits_fn: LogitsFn = plain_logits,
        loss_fn: LossFn = per_item_cross_entropy,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        self.model = model
        self.logits_fn = logits_fn
        self.loss_fn = loss_fn
        self._make_optimizer = optimizer or adam()
        self.optimizer = self._make_optimizer(model.parameters())
        self.experience = -1
        self.sample: Sampler | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The network to test: the trained one here; a pair's slow learner in sleep replay."""
        return self.model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def before_experience(self, index: int, sample: Sampler | None = None) -> None:
        """A new experience starts; ``sample(n)`` draws ``n`` of its training items."""
        self.experience = int(index)
        self.sample = sample

    def after_experience(self) -> None:
        """The current experience is over (nothing to do for plain training)."""

    def observe(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor | None = None
    ) -> float:
        """One optimiser step on a batch; returns its loss."""
        _, per_item = self.forward(self.model, inputs, targets, self.tasks(inputs, task))
        return self.step(per_item.mean())

    # ------------------------------------------------------------ shared pieces
    def tasks(self, inputs: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        """The task of each item: as given, or the current experience's for all."""
        if task is not None:
            return task
        if self.experience < 0:
            raise ValueError("task: call before_experience() first, or pass each item's task")
        return torch.full((inputs.shape[0],), self.experience, device=inputs.device)

    def forward(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs of ``model`` on a batch and the loss of each item."""
        outputs = self.logits_fn(model, inputs, task)
        return outputs, self.loss_fn(outputs, targets)

    def step(self, loss: torch.Tensor) -> float:
        """Back-propagate ``loss`` and take one optimiser step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def reset_optimizer(self) -> None:
        """A fresh optimiser (its moments start again), e.g. after another loop moved the weights."""
        self.optimizer = self._make_optimizer(self.model.parameters())

    def current_sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` training items of the current experience, from the sampler it came with."""
        if self.sample is None:
            raise ValueError(
                f"sample: {type(self).__name__} draws items of the current experience; pass "
                "before_experience(index, sample=...)"
            )
        return self.sample(n)
