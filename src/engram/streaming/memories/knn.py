"""The evicted keys and values themselves, read by a top-k softmax (Memorizing Transformers,
Wu et al. 2022); bounded to the most important entries so its bytes can match a matrix's.
The top-k is ``engram.search.topk``, the one exact search every part uses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engram.params import Interval, check
from engram.search import topk
from engram.streaming.memories.base import FLOAT_BYTES, EvictionMemory, ParallelInputs, State
from engram.streaming.window import Evicted

_EPS = 1e-6


class KNNMemory(EvictionMemory):
    """The evicted keys and values, read by the top-k softmax over q·k / √d.

    ``capacity=None`` keeps every evicted token (unbounded); otherwise the ``capacity`` most
    important ones per head are kept (ties broken in favour of the newer token), so that the
    state can be matched in bytes to the matrix memory. Importance only selects entries: no
    gradient flows through it.
    """

    def __init__(self, top_k: int = 4, capacity: int | None = None):
        super().__init__()
        self.top_k = check("top_k", top_k, Interval(int, 1, None))
        self.capacity = check("capacity", capacity, Interval(int, 1, None), None)

    def _topk_read(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        """queries (..., T, d); keys, values (..., n, d); allowed (..., T, n) → (..., T, d),
        the softmax over the allowed top-k scores q·k / √d; zero where nothing is allowed."""
        n = keys.shape[-2]
        if n == 0:
            return values.new_zeros(*queries.shape[:-1], values.shape[-1])
        found = topk(queries, keys, min(self.top_k, n), exclude=~allowed)
        top, index = found.values / queries.shape[-1] ** 0.5, found.indices
        valid = index >= 0
        weights = torch.softmax(top.masked_fill(~valid, -1e30), dim=-1) * valid
        weights = weights / weights.sum(-1, keepdim=True).clamp_min(_EPS)
        # One gather over the flattened (query, neighbour) pairs: its backward scatters into
        # (..., n, d), not into a (..., T, n, d) copy of the values per query.
        *lead, t, k = index.shape
        d = values.shape[-1]
        flat = index.clamp_min(0).reshape(*lead, t * k, 1).expand(*lead, t * k, d)
        gathered = torch.gather(values.expand(*lead, n, d), -2, flat).reshape(*lead, t, k, d)
        return (weights[..., None] * gathered).sum(-2)

    # -- streaming form ------------------------------------------------------------------
    def init_state(self, batch: int, n_heads: int, d_head: int, d_model: int, device=None) -> State:
        empty = torch.zeros(batch, n_heads, 0, d_head, device=device)
        return {
            "keys": empty,
            "values": empty.clone(),
            "importance": torch.zeros(batch, n_heads, 0, device=device),
            "alive": torch.zeros(batch, n_heads, 0, dtype=torch.bool, device=device),
        }

    def write(self, state: State, ev: Evicted) -> State:
        imp = ev.importance.detach()[..., None]
        importance = torch.cat([state["importance"], imp], -1)
        alive = torch.cat([state["alive"], torch.ones_like(imp, dtype=torch.bool)], -1)
        if self.capacity is not None and alive.shape[-1] > self.capacity:
            # Over capacity by exactly one: drop the least important, the oldest among equals.
            over = alive.sum(-1) > self.capacity  # (B, H)
            imp_all = importance.masked_fill(~alive, float("inf"))
            lowest = imp_all.min(-1, keepdim=True).values
            candidates = alive & (imp_all == lowest)
            first = candidates.to(torch.int8).argmax(-1)  # oldest lowest
            drop = F.one_hot(first, alive.shape[-1]).bool() & over[..., None]
            alive = alive & ~drop
        return {
            "keys": torch.cat([state["keys"], ev.key[..., None, :]], -2),
            "values": torch.cat([state["values"], ev.value[..., None, :]], -2),
            "importance": importance,
            "alive": alive,
        }

    def read(self, state: State, q: torch.Tensor) -> torch.Tensor:
        allowed = state["alive"][..., None, :]
        return self._topk_read(q[..., None, :], state["keys"], state["values"], allowed)[..., 0, :]

    def state_bytes(self, n_heads: int, d_head: int, d_model: int, n_evicted: int) -> int:
        entries = n_evicted if self.capacity is None else min(n_evicted, self.capacity)
        return n_heads * entries * 2 * d_head * FLOAT_BYTES

    # -- parallel form -------------------------------------------------------------------
    def parallel_read(self, x: ParallelInputs) -> torch.Tensor:
        allowed = x.evicted  # (T, T)
        if self.capacity is not None:
            # Token j is still kept at query t when fewer than `capacity` tokens evicted by t
            # beat it (more important, or as important and newer): a prefix count over i.
            imp = x.importance.detach()
            positions = torch.arange(imp.shape[-1], device=imp.device)
            beats = (imp[..., None, :] > imp[..., :, None]) | (
                (imp[..., None, :] == imp[..., :, None]) & (positions[None, :] > positions[:, None])
            )  # (B, H, j, i)
            writable = x.evicted.any(0)
            beaten_by_prefix = torch.cumsum((beats & writable).to(torch.int32), -1)  # (B,H,j,n)
            # The evicted prefix at query t ends at n = t − window, i.e. the last evicted j.
            last = torch.where(x.evicted.any(1), x.evicted.to(torch.int64).cumsum(1).argmax(1), 0)  # (T,)
            count = beaten_by_prefix[..., last].transpose(-1, -2)  # (B, H, t, j)
            allowed = allowed & (count < self.capacity)
        return self._topk_read(x.q, x.k, x.v, allowed)
