"""Context-frozen decision-token training: the context runs without gradients into a KV cache
and the loss (and so every gradient) falls only on the decision tokens.

Exactly what is equal to a full forward pass: the loss value (the same logits at the decision
positions, up to float rounding of the cached attention path), and the gradient of every
parameter that acts only at the decision positions (e.g. their position embeddings and the
output head). What differs is only the path through the context's keys and values, which the
frozen pass cuts: parameters reach the loss there in a full pass and not in a frozen one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engram.lm.model import HippocampalTransformer

IGNORE = -100
MODES = ("frozen", "decision", "all")


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-item mean cross-entropy over the targets that are not IGNORE (items without any: 0)."""
    flat = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="none").view(targets.shape)
    counted = (targets != IGNORE).sum(1)
    return flat.sum(1) / counted.clamp_min(1)


def decision_loss(
    model: HippocampalTransformer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    prefix: int,
    frozen: bool = True,
) -> torch.Tensor:
    """Per-item loss on the targets at positions ≥ ``prefix`` (inputs, targets: [B, L]).

    ``frozen``: positions < ``prefix`` run under ``no_grad`` into a KV cache and only the rest
    runs with gradients; otherwise one full forward pass. Targets before ``prefix`` must be
    IGNORE (a frozen pass could not score them), else ValueError.
    """
    if inputs.shape != targets.shape or inputs.dim() != 2:
        raise ValueError(f"targets: expected the shape of inputs {tuple(inputs.shape)}, "
                         f"got {tuple(targets.shape)}")
    if not 0 <= prefix < inputs.shape[1]:
        raise ValueError(f"prefix: expected 0 ≤ prefix < {inputs.shape[1]}, got {prefix}")
    if bool((targets[:, :prefix] != IGNORE).any()):
        raise ValueError("targets: expected IGNORE at every position before prefix, got scored ones")
    if frozen and prefix:
        cache = model.new_cache(inputs.shape[0])
        with torch.no_grad():
            model(inputs[:, :prefix], cache=cache)
        logits = model(inputs[:, prefix:], cache=cache).logits
        return _cross_entropy(logits, targets[:, prefix:])
    return _cross_entropy(model(inputs).logits, targets)


def token_loss(model: HippocampalTransformer, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-item loss of a full forward pass on every target that is not IGNORE."""
    return _cross_entropy(model(inputs).logits, targets)
