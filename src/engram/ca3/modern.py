"""Modern (continuous) Hopfield retrieval: ξ ← Xᵀ softmax(β X ξ) (Ramsauer et al. 2021).

Exponential storage capacity and one-step retrieval for well-separated patterns; the same
update is attention with the stored patterns as keys and values, so it doubles as a layer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from engram.params import Interval, validated

ArrayLike = torch.Tensor | np.ndarray | list | tuple


class ModernHopfield(nn.Module):
    """Continuous Hopfield memory over d-dimensional patterns.

    ``store``/``recall`` for use as a memory; ``forward(queries, patterns=None)`` as a layer on
    batches (B, d), or (B, Q, d) with per-batch patterns (B, P, d).

    Args:
        dim: pattern dimension d.
        beta: inverse temperature; larger β separates patterns more sharply.
        steps: updates per recall (one usually suffices).
        learn_beta: make β a trainable parameter (log-parameterised, stays positive).
        device: where the stored patterns live (inputs are moved there).

    ``state_dict`` / ``load_state_dict`` round-trip a memory of any size: loading resizes the
    stored patterns to the saved ones.

    ``store``, ``recall``, ``attention`` and ``energy`` take tensors, numpy arrays or nested
    lists of numbers. β·(x·ξ) may overflow float32: every softmax and log-sum-exp works on
    β·(x·ξ − max x·ξ), which does not, so any β float32 holds gives finite results.
    """

    @validated({
        "dim": [Interval(int, 1, None)],
        "beta": [Interval(float, None, None)],  # the range float32 holds is checked below
        "steps": [Interval(int, 1, None)],
    })
    def __init__(
        self,
        dim: int,
        beta: float = 8.0,
        steps: int = 1,
        learn_beta: bool = False,
        device: str | torch.device = "cpu",
    ):
        super().__init__()
        log_beta = torch.tensor(math.log(beta) if 0 < beta < math.inf else math.nan)
        # β is kept as float32 exp(log β): it and 1/β (in the energy) must both be finite
        if not torch.finfo(torch.float32).tiny <= float(log_beta.exp()) < math.inf:
            raise ValueError(
                f"beta: expected a positive value float32 holds, 1.2e-38 to 3.4e38, got {beta}"
            )
        self.dim = dim
        self.steps = steps
        if learn_beta:
            self.log_beta = nn.Parameter(log_beta)
        else:
            self.register_buffer("log_beta", log_beta)
        self.register_buffer("memory", torch.zeros(0, dim))
        self.to(device)
        self._register_load_state_dict_pre_hook(self._fit_memory)

    def _fit_memory(self, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
        """Before loading, give ``memory`` the saved number of patterns (P varies by use)."""
        saved = state_dict.get(prefix + "memory")
        if isinstance(saved, torch.Tensor) and saved.dim() == 2 and saved.shape[1] == self.dim:
            self.memory = torch.empty_like(saved, device=self.memory.device)

    @property
    def beta(self) -> torch.Tensor:
        return self.log_beta.exp()

    def store(self, patterns: ArrayLike) -> ModernHopfield:
        """Append patterns (P, d) or one (d,) to the memory."""
        patterns = self._check(patterns, "patterns").reshape(-1, self.dim)
        self.memory = torch.cat([self.memory, patterns])
        return self

    def recall(self, queries: ArrayLike, steps: int | None = None) -> torch.Tensor:
        """Retrieve for queries (B, d) or (d,) from the stored patterns."""
        self._require_patterns()
        queries = self._check(queries, "queries")
        out = self.forward(queries.reshape(-1, self.dim), steps=steps)
        return out[0] if queries.dim() == 1 else out

    def forward(
        self,
        queries: torch.Tensor,
        patterns: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        patterns = self.memory if patterns is None else patterns
        state = queries
        for _ in range(self.steps if steps is None else steps):
            weights = torch.softmax(self._logits(state, patterns), dim=-1)
            state = weights @ patterns
        return state

    def _logits(self, states: torch.Tensor, patterns: torch.Tensor) -> torch.Tensor:
        """β·(x·ξ − max_μ x_μ·ξ): the softmax's input, shifted so that β cannot overflow it."""
        scores = states @ patterns.transpose(-1, -2)
        if scores.shape[-1] == 0:  # a layer given no patterns: nothing to shift
            return scores
        return self.beta * (scores - scores.amax(-1, keepdim=True).detach())

    def attention(self, queries: ArrayLike) -> torch.Tensor:
        """softmax(β X ξ): which stored patterns a query retrieves, (B, P)."""
        self._require_patterns()
        queries = torch.atleast_2d(self._check(queries, "queries"))
        return torch.softmax(self._logits(queries, self.memory), dim=-1)

    def energy(self, states: ArrayLike) -> torch.Tensor:
        """E(ξ) = −β⁻¹ log Σ_μ exp(β x_μ·ξ) + ½ ξ·ξ + β⁻¹ log P + ½ M², M = max ‖x_μ‖."""
        self._require_patterns()
        states = torch.atleast_2d(self._check(states, "states"))
        beta = self.beta
        scores = states @ self.memory.T
        top = scores.amax(-1)
        lse = top + torch.logsumexp(beta * (scores - top[:, None]), dim=-1) / beta
        m = self.memory.norm(dim=1).max()
        n = self.memory.shape[0]
        return -lse + 0.5 * (states * states).sum(-1) + math.log(n) / beta + 0.5 * m * m

    def _require_patterns(self) -> None:
        if self.memory.shape[0] == 0:
            raise ValueError("memory: nothing is stored yet; call store(patterns) first")

    def _check(self, values: Any, name: str) -> torch.Tensor:
        """``values`` as a float32 tensor on the memory's device, or an error naming ``name``."""
        if not isinstance(values, torch.Tensor):
            if isinstance(values, (str, bytes)):
                raise TypeError(f"{name}: expected an array of numbers, got {type(values).__name__}")
            try:
                values = torch.from_numpy(np.asarray(values, dtype=np.float32))
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"{name}: expected an array of numbers, got {type(values).__name__}"
                ) from error
        if values.dim() == 0 or values.shape[-1] != self.dim:
            raise ValueError(f"{name}: expected last dimension {self.dim}, got {tuple(values.shape)}")
        if not torch.isfinite(values).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        return values.to(self.memory.device, torch.float32)
