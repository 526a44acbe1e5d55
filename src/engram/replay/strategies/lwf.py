"""Learning without Forgetting (Li & Hoiem 2016): no stored data, only the old network's answers.

When an experience starts, the network as it was is kept frozen. Each step on the new data
adds a knowledge-distillation term: the old network's softened outputs on the *incoming*
inputs, over the classes it had learned, are targets for today's network (temperature T;
the paper uses T = 2 and weight λ_o = 1). With one output per class (a single head), the
network's outputs at an experience are those of the classes seen so far: the new data's loss
spans them, and classes not yet seen take no part, as a head not yet added would not.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from engram.replay.strategies.base import Strategy
from engram.replay.strategies.er_ace import mask_outputs


def distillation(
    outputs: torch.Tensor, old_outputs: torch.Tensor, old_classes: torch.Tensor,
    temperature: float = 2.0,
) -> torch.Tensor:
    """Mean over items of KL(p_old ‖ p_now), both softmaxes at ``temperature`` over ``old_classes``.

    Li & Hoiem write the term as the cross-entropy −Σ p_old log p_now; the KL divergence
    differs from it by the old outputs' entropy, a constant, so its gradient is the paper's,
    and it is zero exactly when today's outputs on the old classes equal the old network's.
    """
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    if outputs.shape != old_outputs.shape or outputs.ndim != 2:
        raise ValueError(f"outputs, old_outputs: expected two [B, C] tensors of one shape, "
                         f"got {tuple(outputs.shape)} and {tuple(old_outputs.shape)}")
    if old_classes.dtype != torch.bool or old_classes.shape != outputs.shape[1:]:
        raise ValueError(f"old_classes: expected a bool mask of shape {tuple(outputs.shape[1:])}, "
                         f"got {old_classes.dtype} {tuple(old_classes.shape)}")
    keep = old_classes.to(outputs.device)
    now = F.log_softmax(outputs[:, keep] / temperature, dim=-1)
    old = F.log_softmax(old_outputs[:, keep].detach() / temperature, dim=-1)
    return (old.exp() * (old - now)).sum(-1).mean()


class LwF(Strategy):
    """Cross-entropy over the classes seen so far plus ``alpha`` × the distillation toward the
    network frozen at the start of the experience, on the incoming batch itself.

    Args:
        model: the network trained; its outputs are one logit per class.
        alpha: weight of the distillation term (λ_o of the paper).
        temperature: softmax temperature of both sides of the distillation (T).
        **options: ``optimizer``, ``logits_fn``, ``loss_fn`` as in ``Strategy``.
    """

    def __init__(self, model: nn.Module, *, alpha: float = 1.0, temperature: float = 2.0,
                 **options):
        super().__init__(model, **options)
        if not alpha >= 0:
            raise ValueError(f"alpha: expected a weight ≥ 0, got {alpha}")
        if not temperature > 0:
            raise ValueError(f"temperature: expected > 0, got {temperature}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.old_model: nn.Module | None = None
        self.seen_classes: torch.Tensor | None = None
        self.old_classes: torch.Tensor | None = None

    def before_experience(self, index: int, sample=None) -> None:
        """Freeze a copy of the network and the classes it knows (none before the first)."""
        super().before_experience(index, sample)
        if self.seen_classes is not None and bool(self.seen_classes.any()):
            self.old_model = copy.deepcopy(self.model).eval().requires_grad_(False)
            self.old_classes = self.seen_classes.clone()

    def _note_classes(self, targets: torch.Tensor, n_outputs: int) -> torch.Tensor:
        if targets.ndim != 1:
            raise ValueError(f"targets: LwF masks classes, expected one label per item, got "
                             f"shape {tuple(targets.shape)}")
        labels = targets.detach().cpu()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_outputs):
            raise ValueError(f"targets: expected labels in [0, {n_outputs}), "
                             f"got {labels.min()}…{labels.max()}")
        if self.seen_classes is None:
            self.seen_classes = torch.zeros(n_outputs, dtype=torch.bool)
        self.seen_classes[labels] = True
        return self.seen_classes

    def observe(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor | None = None
    ) -> float:
        task = self.tasks(inputs, task)
        outputs = self.logits_fn(self.model, inputs, task)
        seen = self._note_classes(targets, outputs.shape[-1])
        loss = self.loss_fn(mask_outputs(outputs, seen), targets).mean()
        if self.old_model is not None and self.alpha > 0:
            assert self.old_classes is not None
            with torch.no_grad():
                old = self.logits_fn(self.old_model, inputs, task)
            loss = loss + self.alpha * distillation(outputs, old, self.old_classes,
                                                    self.temperature)
        return self.step(loss)
