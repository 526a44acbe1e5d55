"""The one interface of every eviction memory, and the memory that keeps nothing.

A memory has two forms that must agree. The streaming form runs token by token at inference:
``init_state``, ``write`` one evicted token, ``adjust`` a new token's key and value, ``read``
with a query. The parallel form trains on a whole sequence at once: ``parallel_keys``,
``parallel_values`` and ``parallel_read``, where token ``j`` is in the memory that query ``t``
reads exactly when ``evicted[t, j]``. ``engram.streaming.memories.naive`` drives the streaming
form over a training sequence, the reference every parallel form is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engram.streaming.window import Evicted

State = dict[str, torch.Tensor]
FLOAT_BYTES = 4


@dataclass(frozen=True)
class ParallelInputs:
    """What a parallel read sees. Shapes: q, k, v, assoc_keys (B, H, T, d_head), k and v as
    adjusted by ``parallel_keys`` / ``parallel_values``; importance (B, H, T); evicted (T, T)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    importance: torch.Tensor
    assoc_keys: torch.Tensor
    evicted: torch.Tensor


class EvictionMemory(nn.Module):
    """Base of every eviction memory: the defaults keep nothing and change nothing.

    A memory that stores a read-out (matrix, kNN) overrides ``init_state``, ``write``,
    ``read``, ``parallel_read`` and ``state_bytes``; one that changes keys and values
    (projection writes) overrides ``adjust``, ``parallel_keys`` and ``parallel_values``.
    """

    # -- streaming form ------------------------------------------------------------------
    def init_state(self, batch: int, n_heads: int, d_head: int, d_model: int, device=None) -> State:
        """The empty state of ``batch`` sequences."""
        return {}

    def write(self, state: State, ev: Evicted) -> State:
        """The state after one token left the window (a new dict; ``state`` is not changed)."""
        return state

    def adjust(
        self, state: State, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A new token's key and value under the state. h (B, D); k, v (B, H, d_head)."""
        return k, v

    def read(self, state: State, q: torch.Tensor) -> torch.Tensor:
        """What the memory adds to the attention output for queries q (B, H, d_head)."""
        return torch.zeros_like(q)

    def state_bytes(self, n_heads: int, d_head: int, d_model: int, n_evicted: int) -> int:
        """Bytes of one sequence's state after ``n_evicted`` writes."""
        return 0

    # -- parallel form -------------------------------------------------------------------
    def parallel_keys(self, h: torch.Tensor, k: torch.Tensor, evicted: torch.Tensor) -> torch.Tensor:
        """Every token's key as ``adjust`` gives it. h (B, T, D); k (B, H, T, d_head)."""
        return k

    def parallel_values(
        self, h: torch.Tensor, v: torch.Tensor, importance: torch.Tensor, evicted: torch.Tensor
    ) -> torch.Tensor:
        """Every token's value as ``adjust`` gives it; importance (B, H, T)."""
        return v

    def parallel_read(self, x: ParallelInputs) -> torch.Tensor:
        """``read`` for every position at once: (B, H, T, d_head)."""
        return torch.zeros_like(x.q)


class NoMemory(EvictionMemory):
    """The window alone: an evicted token is gone."""
