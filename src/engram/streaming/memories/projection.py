"""Rank-1 writes of each evicted token into the key and value projections: the source's method."""

from __future__ import annotations

import torch
from torch import nn

from engram.params import Instance, Interval, check
from engram.streaming.memories.base import FLOAT_BYTES, EvictionMemory, State
from engram.streaming.window import Evicted


class ProjectionWrites(EvictionMemory):
    """W_K += η k hᵀ and W_V += η · importance · v hᵀ for each evicted token, h its attention input.

    Future tokens' keys and values change, the cached ones do not. The key write is not
    importance-weighted so that, in the parallel form, keys can be resolved before the
    attention that measures importance. ``trainable=False`` keeps η fixed (inference-time
    writes into a frozen model, as in the source).
    """

    def __init__(self, rate: float = 1e-2, trainable: bool = False):
        super().__init__()
        rate = check("rate", rate, Interval(float, 0, None, closed="neither"))
        check("trainable", trainable, Instance(bool, "a bool"))
        self.log_rate = nn.Parameter(torch.tensor(float(rate)).log(), requires_grad=trainable)

    @property
    def rate(self) -> torch.Tensor:
        return self.log_rate.exp()

    # -- streaming form ------------------------------------------------------------------
    def init_state(self, batch: int, n_heads: int, d_head: int, d_model: int, device=None) -> State:
        return {
            "dK": torch.zeros(batch, n_heads * d_head, d_model, device=device),
            "dV": torch.zeros(batch, n_heads, d_head, d_model, device=device),
        }

    def adjust(
        self, state: State, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dk = torch.einsum("bod,bd->bo", state["dK"], h).view_as(k)
        dv = torch.einsum("bhed,bd->bhe", state["dV"], h)
        return k + dk, v + dv

    def write(self, state: State, ev: Evicted) -> State:
        eta = self.rate
        scaled = eta * ev.importance[..., None] * ev.value
        return {
            "dK": state["dK"] + eta * torch.einsum("bo,bd->bod", ev.key.flatten(1), ev.hidden),
            "dV": state["dV"] + torch.einsum("bhe,bd->bhed", scaled, ev.hidden),
        }

    def state_bytes(self, n_heads: int, d_head: int, d_model: int, n_evicted: int) -> int:
        return 2 * n_heads * d_head * d_model * FLOAT_BYTES

    # -- parallel form -------------------------------------------------------------------
    def parallel_keys(self, h: torch.Tensor, k: torch.Tensor, evicted: torch.Tensor) -> torch.Tensor:
        """k'_t = k_t + η Σ_{j evicted by t} (h_t·h_j) k'_j: a unit lower-triangular solve."""
        B, H, T, d = k.shape
        a = self.rate * (h @ h.transpose(-1, -2)) * evicted.to(h.dtype)  # (B, T, T)
        system = torch.eye(T, device=h.device) - a
        flat = k.transpose(1, 2).reshape(B, T, H * d)
        solved = torch.linalg.solve_triangular(system, flat, upper=False, unitriangular=True)
        return solved.view(B, T, H, d).transpose(1, 2)

    def parallel_values(
        self, h: torch.Tensor, v: torch.Tensor, importance: torch.Tensor, evicted: torch.Tensor
    ) -> torch.Tensor:
        """v'_t = v_t + η Σ_{j evicted by t} importance_j (h_t·h_j) v'_j, per head."""
        T = v.shape[-2]
        gram = (h @ h.transpose(-1, -2))[:, None]  # (B, 1, T, T)
        a = self.rate * gram * importance[..., None, :] * evicted.to(h.dtype)
        system = torch.eye(T, device=h.device) - a
        return torch.linalg.solve_triangular(system, v, upper=False, unitriangular=True)
