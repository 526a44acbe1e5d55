"""Online elastic weight consolidation (Schwarz et al. 2018; Kirkpatrick et al. 2017).

After each task the diagonal Fisher information F = E[(∂ log p(y|x)/∂θ)²] is estimated from
per-sample gradients — computed in one vectorised pass with ``torch.func`` (``vmap`` over
``grad`` of a ``functional_call``) rather than a Python loop over samples — and folded into a
running estimate F ← γF + F_new with the weights θ* it anchors; training then adds
λ/2 · Σ F (θ − θ*)².
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

FISHERS = ("empirical", "sampled", "weighted")
Mask = Callable[[torch.Tensor], torch.Tensor]


def _log_prob(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    logit_mask: torch.Tensor | None,
) -> torch.Tensor:
    logits = functional_call(model, (params, buffers), (x[None],))[0]
    if logit_mask is not None:
        logits = logits.masked_fill(~logit_mask, -float("inf"))
    return F.log_softmax(logits, dim=-1).gather(0, y[None])[0]


def _labels(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    fisher: str,
    logit_mask: torch.Tensor | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if fisher != "sampled":
        return y
    with torch.no_grad():
        logits = model(x)
        if logit_mask is not None:
            logits = logits.masked_fill(~logit_mask, -float("inf"))
        probs = logits.softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(x.device)


@torch.no_grad()
def _probability(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, logit_mask: torch.Tensor | None
) -> torch.Tensor:
    """p(y|x) for each item, over the active outputs."""
    logits = model(x)
    if logit_mask is not None:
        logits = logits.masked_fill(~logit_mask, -float("inf"))
    return logits.softmax(-1).gather(1, y[:, None])[:, 0]


def fisher_diagonal(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    fisher: str = "empirical",
    logit_mask: torch.Tensor | None = None,
    chunk: int = 32,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Mean squared per-sample gradient of log p(y|x) for each parameter (vectorised).

    ``fisher="empirical"`` uses the true labels; ``"sampled"`` draws labels from the model
    (the true Fisher); ``"weighted"`` weights each true label's squared gradient by p(y|x)
    (mammoth's ``ewc_on``). ``logit_mask[C]`` (bool) restricts the softmax to the active outputs.
    """
    if fisher not in FISHERS:
        raise ValueError(f"fisher: expected one of {list(FISHERS)}, got {fisher!r}")
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"y: expected {x.shape[0]} labels matching x, got {y.shape[0]}")
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    labels = _labels(model, x, y, fisher, logit_mask, generator)
    per_sample = vmap(grad(_log_prob, argnums=1), in_dims=(None, None, None, 0, 0, None))
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, x.shape[0], chunk):
        xs, ys = x[start : start + chunk], labels[start : start + chunk]
        grads = per_sample(model, params, buffers, xs, ys, logit_mask)
        weight = _probability(model, xs, ys, logit_mask) if fisher == "weighted" else None
        for k, g in grads.items():
            # Sum of squares over the batch as one contraction, without a squared copy.
            if weight is None:
                total[k] += torch.einsum("b...,b...->...", g, g)
            else:
                total[k] += torch.einsum("b,b...,b...->...", weight, g, g)
    return {k: v / x.shape[0] for k, v in total.items()}


def fisher_diagonal_loop(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    logit_mask: torch.Tensor | None = None,
    weighted: bool = False,
) -> dict[str, torch.Tensor]:
    """Reference: the empirical Fisher diagonal by one backward pass per sample (slow, obvious);
    ``weighted``: each squared gradient times p(y|x), as mammoth's online EWC estimates it."""
    params = {k: v for k, v in model.named_parameters() if v.requires_grad}
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    for i in range(x.shape[0]):
        logits = model(x[i : i + 1])[0]
        if logit_mask is not None:
            logits = logits.masked_fill(~logit_mask, -float("inf"))
        log_p = F.log_softmax(logits, dim=-1)[y[i]]
        grads = torch.autograd.grad(log_p, list(params.values()))
        w = float(log_p.detach().exp()) if weighted else 1.0
        for k, g in zip(params, grads, strict=True):
            total[k] += w * g.detach() ** 2
    return {k: v / x.shape[0] for k, v in total.items()}


class EWC:
    """Online EWC: a running Fisher and anchor weights, and the quadratic penalty they define.

    Args:
        strength: λ, the penalty weight.
        decay: γ, how much of the old Fisher is kept at each consolidation (1 = plain sum).
        fisher: ``"empirical"``, ``"sampled"`` or ``"weighted"`` (see ``fisher_diagonal``).
        samples: most examples used per Fisher estimate.
    """

    def __init__(
        self, strength: float = 100.0, decay: float = 1.0, fisher: str = "empirical",
        samples: int = 512,
    ):
        if strength < 0:
            raise ValueError(f"strength: expected λ ≥ 0, got {strength}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay: expected γ in [0, 1], got {decay}")
        if fisher not in FISHERS:
            raise ValueError(f"fisher: expected one of {list(FISHERS)}, got {fisher!r}")
        if samples <= 0:
            raise ValueError(f"samples: expected a positive count, got {samples}")
        self.strength = float(strength)
        self.decay = float(decay)
        self.fisher_kind = fisher
        self.samples = int(samples)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def consolidate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        logit_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Fold the Fisher of (``x``, ``y``) into the running estimate and re-anchor θ*."""
        if x.shape[0] > self.samples:
            keep = torch.randperm(x.shape[0], generator=generator)[: self.samples].to(x.device)
            x, y = x[keep], y[keep]
        new = self.estimate(model, x, y, logit_mask, generator)
        for k, f in new.items():
            self.fisher[k] = self.decay * self.fisher[k] + f if k in self.fisher else f
        self.anchor = {k: v.detach().clone() for k, v in model.named_parameters() if k in new}

    def estimate(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        logit_mask: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> dict[str, torch.Tensor]:
        """The Fisher diagonal of one consolidation (``fisher_diagonal``; a subclass may compute
        it faster for a known architecture)."""
        return fisher_diagonal(model, x, y, self.fisher_kind, logit_mask, generator=generator)

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """λ/2 · Σ F (θ − θ*)² (zero before the first consolidation)."""
        first = next(model.parameters())
        if not self.fisher:
            return first.new_zeros(())
        total = first.new_zeros(())
        for k, p in model.named_parameters():
            if k in self.fisher:
                total = total + (self.fisher[k] * (p - self.anchor[k]) ** 2).sum()
        return 0.5 * self.strength * total
