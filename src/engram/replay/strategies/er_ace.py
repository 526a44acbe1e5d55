"""ER-ACE: experience replay with an asymmetric cross-entropy (Caccia et al. 2022).

Plain replay trains the incoming batch with a softmax over every output, so each step on new
classes pushes down the logits of the old ones and the representation of old classes drifts
abruptly at a task boundary. ER-ACE keeps the two halves of the loss apart: the incoming
batch's softmax spans only the classes of the current experience, and the replayed batch's
spans every class seen so far, so only replay decides between old and new classes.
"""

from __future__ import annotations

import torch
from torch import nn

from engram.replay.buffer import EpisodicBuffer
from engram.replay.strategies.replay import ExperienceReplay


def mask_outputs(outputs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """``outputs`` [B, C] with the outputs not in ``live`` (bool [C]) set to −∞."""
    return outputs.masked_fill(~live.to(outputs.device), -float("inf"))


class ERACE(ExperienceReplay):
    """Current batch over the current experience's classes, replay over all classes seen.

    Replay starts with the second experience (the first has nothing to protect yet), as in
    the paper; every batch seen is offered to the reservoir buffer.

    Args:
        model: the network trained; its outputs are one logit per class.
        buffer: the store replayed from.
        replay_batch: items replayed per step.
        **options: ``optimizer``, ``logits_fn``, ``loss_fn`` as in ``Strategy``.
    """

    def __init__(
        self, model: nn.Module, buffer: EpisodicBuffer, *, replay_batch: int = 10, **options
    ):
        super().__init__(model, buffer, replay_batch=replay_batch, **options)
        self.current_classes: torch.Tensor | None = None
        self.seen_classes: torch.Tensor | None = None

    def before_experience(self, index: int, sample=None) -> None:
        super().before_experience(index, sample)
        if self.current_classes is not None:
            self.current_classes.zero_()

    def _note_classes(self, targets: torch.Tensor, n_outputs: int) -> None:
        """Add the labels of a batch to the current experience's classes and to those seen."""
        if targets.ndim != 1:
            raise ValueError(
                f"targets: ER-ACE masks classes, expected one label per item, got shape "
                f"{tuple(targets.shape)}"
            )
        if self.current_classes is None:
            self.current_classes = torch.zeros(n_outputs, dtype=torch.bool)
            self.seen_classes = torch.zeros(n_outputs, dtype=torch.bool)
        labels = targets.detach().cpu()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_outputs):
            raise ValueError(
                f"targets: expected labels in [0, {n_outputs}), got {labels.min()}…{labels.max()}"
            )
        self.current_classes[labels] = True
        assert self.seen_classes is not None
        self.seen_classes |= self.current_classes

    def observe(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor | None = None
    ) -> float:
        task = self.tasks(inputs, task)
        outputs = self.logits_fn(self.model, inputs, task)
        self._note_classes(targets, outputs.shape[-1])
        assert self.current_classes is not None and self.seen_classes is not None
        per_item = self.loss_fn(mask_outputs(outputs, self.current_classes), targets)
        loss = per_item.mean()
        if self.experience > 0 and len(self.buffer) > 0:
            batch = self.buffer.sample(self.replay_batch, "uniform", device=self.device)
            replayed = self.logits_fn(self.head, batch.x, batch.task)
            loss = loss + self.loss_fn(mask_outputs(replayed, self.seen_classes), batch.y).mean()
        value = self.step(loss)
        self.remember(inputs, targets, task, outputs, per_item)
        return value
