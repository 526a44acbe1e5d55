"""Synaptic intelligence (Zenke, Poole & Ganguli 2017): importance from each weight's path integral.

While an experience is learned, every step adds −g·Δθ per parameter (its share of the drop in
the loss along the path taken, g the gradient the step followed); at the end the running sum
ω is normalised by the total squared change of that parameter plus a damping ξ and added to
the importance Ω ← Ω + ω / (Δθ² + ξ). Later experiences pay c · Σ Ω (θ − θ*)², θ* the weights
at the last boundary. As in van de Ven et al.'s implementation, g is the gradient of the whole
objective the step minimised (penalty included).
"""

from __future__ import annotations

import torch
from torch import nn

from engram.replay.strategies.base import Strategy


class SynapticIntelligence(Strategy):
    """Plain training plus the SI surrogate penalty; importances fold in after each experience.

    Args:
        model: the network trained.
        strength: c, the penalty weight (≥ 0).
        damping: ξ > 0, bounds Ω where a parameter barely moved.
        **options: ``optimizer``, ``logits_fn``, ``loss_fn`` as in ``Strategy``.
    """

    def __init__(self, model: nn.Module, strength: float, *, damping: float = 0.1, **options):
        super().__init__(model, **options)
        if not strength >= 0:
            raise ValueError(f"strength: expected c ≥ 0, got {strength}")
        if not damping > 0:
            raise ValueError(f"damping: expected ξ > 0, got {damping}")
        self.strength = float(strength)
        self.damping = float(damping)
        self.params = {k: p for k, p in model.named_parameters() if p.requires_grad}
        self.anchor = {k: p.detach().clone() for k, p in self.params.items()}
        self.path = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.importance: dict[str, torch.Tensor] = {}

    def penalty(self) -> torch.Tensor:
        """c · Σ Ω (θ − θ*)² (zero before the first experience ends)."""
        first = next(iter(self.params.values()))
        total = first.new_zeros(())
        for k, omega in self.importance.items():
            total = total + (omega * (self.params[k] - self.anchor[k]) ** 2).sum()
        return self.strength * total

    def observe(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor | None = None
    ) -> float:
        _, per_item = self.forward(self.model, inputs, targets, self.tasks(inputs, task))
        return self.step(per_item.mean() + self.penalty())

    def step(self, loss: torch.Tensor) -> float:
        """One optimiser step, adding −g·Δθ of this step to each parameter's path integral."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # g is kept by reference (torch's optimisers leave .grad as it is) and Δθ is formed in
        # place in the copy of θ: the same arithmetic as g·(θ' − θ), without four temporaries.
        moved = {k: (p.detach().clone(), p.grad.detach()) for k, p in self.params.items()
                 if p.grad is not None}
        self.optimizer.step()
        with torch.no_grad():
            for k, (before, g) in moved.items():
                torch.sub(self.params[k], before, out=before)
                self.path[k].sub_(before.mul_(g))
        return float(loss.detach())

    def after_experience(self) -> None:
        """Ω += ω / (Δθ² + ξ) over the experience just ended; re-anchor θ* and restart ω."""
        with torch.no_grad():
            for k, p in self.params.items():
                change = p.detach() - self.anchor[k]
                add = self.path[k] / (change ** 2 + self.damping)
                self.importance[k] = self.importance[k] + add if k in self.importance else add
                self.anchor[k] = p.detach().clone()
                self.path[k].zero_()
