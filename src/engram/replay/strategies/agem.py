"""Averaged GEM (Chaudhry et al. 2019): replay constrains the direction of a step, not its loss.

Every step computes two gradients: g on the incoming batch and g_ref on a random sample of an
episodic memory of past experiences. A step may not raise the memory's average loss to first
order, so where g · g_ref < 0 the step takes g projected onto the half-space
g · g_ref ≥ 0, g̃ = g − (g · g_ref / g_ref · g_ref) g_ref; otherwise g unchanged. The memory
gets an equal share of items from each experience when it ends, so it holds past
experiences only.
"""

from __future__ import annotations

import torch
from torch import nn

from engram.replay.buffer import EpisodicBuffer
from engram.replay.strategies.base import Strategy


def project(gradient: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A-GEM's step direction: ``gradient`` where it agrees with ``reference`` (dot ≥ 0),
    else its projection onto the plane orthogonal to ``reference``."""
    if gradient.shape != reference.shape or gradient.ndim != 1:
        raise ValueError(f"gradient, reference: expected two flat vectors of one length, got "
                         f"{tuple(gradient.shape)} and {tuple(reference.shape)}")
    dot = torch.dot(gradient, reference)
    norm = torch.dot(reference, reference)
    if dot >= 0 or norm == 0:
        return gradient
    return gradient - (dot / norm) * reference


class AGEM(Strategy):
    """One step per batch along g, or along g projected so the memory's loss does not rise.

    Args:
        model: the network trained.
        buffer: the episodic memory (filled only at the ends of experiences).
        replay_batch: items of the memory per reference gradient (without repeats; all of
            them when it holds fewer).
        per_experience: items of each experience stored when it ends (the memory's size over
            the number of experiences keeps an equal share each).
        seed: the generator of the memory draws.
        **options: ``optimizer``, ``logits_fn``, ``loss_fn`` as in ``Strategy``.
    """

    def __init__(
        self, model: nn.Module, buffer: EpisodicBuffer, *, replay_batch: int = 256,
        per_experience: int, seed: int = 0, **options,
    ):
        super().__init__(model, **options)
        if not isinstance(buffer, EpisodicBuffer):
            raise TypeError(f"buffer: expected an EpisodicBuffer, got {type(buffer).__name__}")
        for name, value in (("replay_batch", replay_batch), ("per_experience", per_experience)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if per_experience > buffer.capacity:
            raise ValueError(f"per_experience: expected at most the buffer's capacity "
                             f"{buffer.capacity}, got {per_experience}")
        self.buffer = buffer
        self.replay_batch = replay_batch
        self.per_experience = per_experience
        self._gen = torch.Generator().manual_seed(int(seed))
        self.projected = 0  # steps whose gradient was projected (for diagnostics)

    def _flat_gradient(self, loss: torch.Tensor) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                          for p, g in zip(params, grads, strict=True)])

    def reference_gradient(self) -> torch.Tensor:
        """The gradient of the mean loss on a random sample of the memory."""
        n = len(self.buffer)
        idx = torch.randperm(n, generator=self._gen)[: self.replay_batch]
        x = self.buffer.x[idx].to(self.device)
        y = self.buffer.y[:n][idx].to(self.device)
        task = self.buffer.task[:n][idx].to(self.device)
        _, per_item = self.forward(self.model, x, y, task)
        return self._flat_gradient(per_item.mean())

    def observe(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor | None = None
    ) -> float:
        _, per_item = self.forward(self.model, inputs, targets, self.tasks(inputs, task))
        loss = per_item.mean()
        if len(self.buffer) == 0:
            return self.step(loss)
        gradient = self._flat_gradient(loss)
        direction = project(gradient, self.reference_gradient())
        self.projected += int(direction is not gradient)
        self.optimizer.zero_grad(set_to_none=True)
        offset = 0
        for p in self.model.parameters():
            if p.requires_grad:
                p.grad = direction[offset:offset + p.numel()].view_as(p).clone()
                offset += p.numel()
        self.optimizer.step()
        return float(loss.detach())

    def after_experience(self) -> None:
        """Store ``per_experience`` items of the experience that just ended."""
        x, y = self.current_sample(self.per_experience)
        self.buffer.add(x.cpu(), y.cpu(), torch.full((x.shape[0],), self.experience))
