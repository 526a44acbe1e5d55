"""Modern (continuous) Hopfield retrieval: ξ ← Xᵀ softmax(β X ξ) (Ramsauer et al. 2021).

Exponential storage capacity and one-step retrieval for well-separated patterns; the same
update is attention with the stored patterns as keys and values, so it doubles as a layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ModernHopfield(nn.Module):
    """Continuous Hopfield memory over d-dimensional patterns.

    ``store``/``recall`` for use as a memory; ``forward(queries, patterns=None)`` as a layer on
    batches (B, d), or (B, Q, d) with per-batch patterns (B, P, d).

    Args:
        dim: pattern dimension d.
        beta: inverse temperature; larger β separates patterns more sharply.
        steps: updates per recall (one usually suffices).
        learn_beta: make β a trainable parameter (log-parameterised, stays positive).
    """

    def __init__(self, dim: int, beta: float = 8.0, steps: int = 1, learn_beta: bool = False):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        if not (beta > 0 and math.isfinite(beta)):
            raise ValueError(f"beta: expected a positive finite value, got {beta}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {steps!r}")
        self.dim = dim
        self.steps = steps
        log_beta = torch.tensor(math.log(beta))
        if learn_beta:
            self.log_beta = nn.Parameter(log_beta)
        else:
            self.register_buffer("log_beta", log_beta)
        self.register_buffer("memory", torch.zeros(0, dim))

    @property
    def beta(self) -> torch.Tensor:
        return self.log_beta.exp()

    def store(self, patterns: torch.Tensor) -> ModernHopfield:
        """Append patterns (P, d) or one (d,) to the memory."""
        patterns = self._check(patterns, "patterns").reshape(-1, self.dim)
        self.memory = torch.cat([self.memory, patterns.to(self.memory)])
        return self

    def recall(self, queries: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Retrieve for queries (B, d) or (d,) from the stored patterns."""
        if self.memory.shape[0] == 0:
            raise ValueError("memory: nothing is stored yet; call store(patterns) first")
        single = queries.dim() == 1
        out = self.forward(self._check(queries, "queries").reshape(-1, self.dim), steps=steps)
        return out[0] if single else out

    def forward(
        self,
        queries: torch.Tensor,
        patterns: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        patterns = self.memory if patterns is None else patterns
        state = queries
        for _ in range(self.steps if steps is None else steps):
            weights = torch.softmax(self.beta * state @ patterns.transpose(-1, -2), dim=-1)
            state = weights @ patterns
        return state

    def attention(self, queries: torch.Tensor) -> torch.Tensor:
        """softmax(β X ξ): which stored patterns a query retrieves, (B, P)."""
        return torch.softmax(self.beta * torch.atleast_2d(queries) @ self.memory.T, dim=-1)

    def energy(self, states: torch.Tensor) -> torch.Tensor:
        """E(ξ) = −β⁻¹ log Σ_μ exp(β x_μ·ξ) + ½ ξ·ξ + β⁻¹ log P + ½ M², M = max ‖x_μ‖."""
        states = torch.atleast_2d(states)
        beta = self.beta
        lse = torch.logsumexp(beta * states @ self.memory.T, dim=-1) / beta
        m = self.memory.norm(dim=1).max()
        n = self.memory.shape[0]
        return -lse + 0.5 * (states * states).sum(-1) + math.log(n) / beta + 0.5 * m * m

    def _check(self, values: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(values).__name__}")
        if values.shape[-1] != self.dim:
            raise ValueError(f"{name}: expected last dimension {self.dim}, got {tuple(values.shape)}")
        if not torch.isfinite(values).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        return values.float()
