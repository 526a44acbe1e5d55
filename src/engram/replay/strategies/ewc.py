"""Online EWC as a strategy: a quadratic pull toward the weights that mattered for past experiences."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from engram.replay.ewc import EWC
from engram.replay.strategies.base import Strategy

# The outputs live for an experience (bool [C]), or None for all.
OutputMask = Callable[[int], torch.Tensor | None]


class OnlineEWC(Strategy):
    """Adds ``ewc.penalty`` to every step; after each experience folds in its Fisher.

    Args:
        model: the network trained.
        ewc: the running Fisher and anchors (``EWC``), or λ for a new one.
        output_mask: the outputs live for an experience (task heads, classes seen so far),
            so the Fisher is taken over the softmax the network was trained with.
        **options: ``optimizer``, ``logits_fn``, ``loss_fn`` as in ``Strategy``.
    """

    def __init__(
        self, model: nn.Module, ewc: EWC | float, *, output_mask: OutputMask | None = None,
        **options,
    ):
        super().__init__(model, **options)
        self.ewc = ewc if isinstance(ewc, EWC) else EWC(float(ewc))
        self.output_mask = output_mask

    def observe(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor | None = None
    ) -> float:
        _, per_item = self.forward(self.model, inputs, targets, self.tasks(inputs, task))
        return self.step(per_item.mean() + self.ewc.penalty(self.model))

    def after_experience(self) -> None:
        """Consolidate on ``ewc.samples`` items of the experience that just ended."""
        x, y = self.current_sample(self.ewc.samples)
        mask = self.output_mask(self.experience) if self.output_mask is not None else None
        self.ewc.consolidate(self.model, x.to(self.device), y.to(self.device), logit_mask=mask)
