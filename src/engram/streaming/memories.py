"""Eviction memories: what keeps a token after it leaves the attention window.

Each memory has two forms that must agree: a streaming form (``init_state`` / ``write`` one
evicted token / ``read`` one query), obviously correct and slow, and a parallel form
(``parallel``) that reads for every position of a training sequence at once. In the parallel
form token ``j`` is in the memory read by query ``t`` exactly when ``evicted[t, j]``.

Kinds (``MEMORY_KINDS``):
- ``matrix``: M += importance · φ(k)ᵀ v, read φ(q) M / φ(q) z (the source's Option 2, a
  compressive linear-attention memory as in Infini-attention); ``matrix_ones`` writes with
  importance ≡ 1; ``matrix_delta`` writes only what M does not already predict (delta rule).
- ``association``: the same matrix, but the value is stored under the attention-weighted keys
  of the positions the evicted token attended to (the source's Option 1).
- ``knn`` / ``knn_unbounded``: the evicted keys and values themselves, top-k read (Memorizing
  Transformers, Wu et al. 2022); the bounded one keeps the ``capacity`` most important entries.
- ``projection``: rank-1 writes into the key and value projections (the source's original
  method); handled by the attention layer because it changes keys and values, not a read-out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engram.streaming.window import Evicted

MEMORY_KINDS = (
    "none",
    "matrix",
    "matrix_ones",
    "matrix_delta",
    "association",
    "knn",
    "knn_unbounded",
    "projection",
)

_EPS = 1e-6
_FLOAT_BYTES = 4


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1, a positive feature map for linear attention (Katharopoulos et al.)."""
    return F.elu(x) + 1.0


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + _EPS)


@dataclass
class ParallelInputs:
    """Everything a parallel read needs. Shapes: q, k, v, assoc_keys (B, H, T, d_head);
    importance (B, H, T); evicted (T, T) bool."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    importance: torch.Tensor
    assoc_keys: torch.Tensor
    evicted: torch.Tensor


class MatrixMemory(nn.Module):
    """A Hebbian memory matrix per head written at eviction: M += w φ(k)ᵀ v, z += w φ(k).

    ``weighting`` is ``"importance"`` (w = attention received in the window) or ``"ones"``;
    ``delta=True`` uses the delta rule M += β κᵀ (v − κ M) with κ = φ(k)/‖φ(k)‖ and
    β = importance / (1 + importance) ∈ (0, 1), read as φ(q)/‖φ(q)‖ · M. ``associate=True``
    stores under the token's attention-weighted keys instead of its own key.
    """

    def __init__(self, weighting: str = "importance", delta: bool = False, associate: bool = False):
        super().__init__()
        if weighting not in ("importance", "ones"):
            raise ValueError(f"weighting: expected 'importance' or 'ones', got {weighting!r}")
        self.weighting, self.delta, self.associate = weighting, delta, associate

    def _weight(self, importance: torch.Tensor) -> torch.Tensor:
        w = importance if self.weighting == "importance" else torch.ones_like(importance)
        return w / (1.0 + w) if self.delta else w

    def _key(self, key: torch.Tensor, assoc_key: torch.Tensor) -> torch.Tensor:
        phi = feature_map(assoc_key if self.associate else key)
        return _unit(phi) if self.delta else phi

    # -- streaming form ------------------------------------------------------------------
    def init_state(self, batch: int, n_heads: int, d_head: int, device=None) -> dict:
        return {
            "M": torch.zeros(batch, n_heads, d_head, d_head, device=device),
            "z": torch.zeros(batch, n_heads, d_head, device=device),
        }

    def write(self, state: dict, ev: Evicted) -> None:
        kappa = self._key(ev.key, ev.assoc_key)  # (B, H, d)
        w = self._weight(ev.importance)[..., None]  # (B, H, 1)
        if self.delta:
            predicted = torch.einsum("bhk,bhkv->bhv", kappa, state["M"])
            update = w * (ev.value - predicted)
        else:
            update = w * ev.value
            state["z"] = state["z"] + w * kappa
        state["M"] = state["M"] + torch.einsum("bhk,bhv->bhkv", kappa, update)

    def read(self, state: dict, q: torch.Tensor) -> torch.Tensor:
        phi = feature_map(q)
        if self.delta:
            return torch.einsum("bhk,bhkv->bhv", _unit(phi), state["M"])
        num = torch.einsum("bhk,bhkv->bhv", phi, state["M"])
        den = (phi * state["z"]).sum(-1, keepdim=True)
        return num / (den + _EPS)

    def state_bytes(self, n_heads: int, d_head: int, n_evicted: int) -> int:
        per_head = d_head * d_head + (0 if self.delta else d_head)
        return n_heads * per_head * _FLOAT_BYTES

    # -- parallel form -------------------------------------------------------------------
    def parallel(self, x: ParallelInputs) -> torch.Tensor:
        kappa = self._key(x.k, x.assoc_keys)
        w = self._weight(x.importance)  # (B, H, T)
        mask = x.evicted.to(x.q.dtype)
        if self.delta:
            # DeltaNet's parallel form (Yang et al. 2024): with M_n = Σ_{i≤n} κ_iᵀ u_i the
            # pseudo-values solve (I + tril(β κ κᵀ, −1)) U = β V, a unit triangular system.
            # Tokens that never enter the memory (sinks) get β = 0.
            writable = x.evicted.any(0).to(x.q.dtype)  # (T,)
            beta = w * writable
            gram = beta[..., None] * (kappa @ kappa.transpose(-1, -2))
            system = torch.eye(gram.shape[-1], device=gram.device) + torch.tril(gram, -1)
            u = torch.linalg.solve_triangular(
                system, beta[..., None] * x.v, upper=False, unitriangular=True
            )
            return (_unit(feature_map(x.q)) @ kappa.transpose(-1, -2) * mask) @ u
        phi_q = feature_map(x.q)
        scores = (phi_q @ kappa.transpose(-1, -2)) * w[..., None, :] * mask
        return (scores @ x.v) / (scores.sum(-1, keepdim=True) + _EPS)


class KNNMemory(nn.Module):
    """The evicted keys and values themselves, read by the top-k softmax over q·k / √d.

    ``capacity=None`` keeps every evicted token (unbounded); otherwise the ``capacity`` most
    important ones per head are kept (ties broken in favour of the newer token), so that the
    state can be matched in bytes to the matrix memory.
    """

    def __init__(self, top_k: int = 4, capacity: int | None = None):
        super().__init__()
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k: expected a positive integer, got {top_k!r}")
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity: expected a positive integer or None, got {capacity!r}")
        self.top_k, self.capacity = top_k, capacity

    def _topk_read(
        self, scores: torch.Tensor, allowed: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """scores, allowed (..., T, n); values (..., n, d) → (..., T, d); zero where nothing
        is allowed."""
        n = scores.shape[-1]
        if n == 0:
            return values.new_zeros(*scores.shape[:-1], values.shape[-1])
        allowed = allowed.expand_as(scores)
        k = min(self.top_k, n)
        masked = scores.masked_fill(~allowed, float("-inf"))
        top, index = masked.topk(k, dim=-1)
        valid = torch.isfinite(top)
        weights = torch.softmax(top.masked_fill(~valid, -1e30), dim=-1) * valid
        weights = weights / weights.sum(-1, keepdim=True).clamp_min(_EPS)
        gathered = torch.gather(
            values.unsqueeze(-3).expand(*index.shape[:-1], n, values.shape[-1]),
            -2,
            index[..., None].expand(*index.shape, values.shape[-1]),
        )
        return (weights[..., None] * gathered).sum(-2)

    # -- streaming form ------------------------------------------------------------------
    def init_state(self, batch: int, n_heads: int, d_head: int, device=None) -> dict:
        empty = torch.zeros(batch, n_heads, 0, d_head, device=device)
        return {
            "keys": empty,
            "values": empty.clone(),
            "importance": torch.zeros(batch, n_heads, 0, device=device),
            "alive": torch.zeros(batch, n_heads, 0, dtype=torch.bool, device=device),
        }

    def write(self, state: dict, ev: Evicted) -> None:
        state["keys"] = torch.cat([state["keys"], ev.key[..., None, :]], -2)
        state["values"] = torch.cat([state["values"], ev.value[..., None, :]], -2)
        imp = ev.importance.detach()[..., None]
        state["importance"] = torch.cat([state["importance"], imp], -1)
        alive = torch.cat([state["alive"], torch.ones_like(imp, dtype=torch.bool)], -1)
        if self.capacity is not None and alive.shape[-1] > self.capacity:
            # Over capacity by exactly one: drop the least important, the oldest among equals.
            over = alive.sum(-1) > self.capacity  # (B, H)
            imp_all = state["importance"].masked_fill(~alive, float("inf"))
            lowest = imp_all.min(-1, keepdim=True).values
            candidates = alive & (imp_all == lowest)
            first = candidates.to(torch.int8).argmax(-1)  # oldest lowest
            drop = F.one_hot(first, alive.shape[-1]).bool() & over[..., None]
            alive = alive & ~drop
        state["alive"] = alive

    def read(self, state: dict, q: torch.Tensor) -> torch.Tensor:
        scores = (q[..., None, :] * state["keys"]).sum(-1) / q.shape[-1] ** 0.5
        read = self._topk_read(scores[..., None, :], state["alive"][..., None, :], state["values"])
        return read[..., 0, :]

    def state_bytes(self, n_heads: int, d_head: int, n_evicted: int) -> int:
        entries = n_evicted if self.capacity is None else min(n_evicted, self.capacity)
        return n_heads * entries * 2 * d_head * _FLOAT_BYTES

    # -- parallel form -------------------------------------------------------------------
    def parallel(self, x: ParallelInputs) -> torch.Tensor:
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
            last = torch.where(
                x.evicted.any(1), x.evicted.to(torch.int64).cumsum(1).argmax(1), 0
            )  # (T,)
            count = beaten_by_prefix[..., last].transpose(-1, -2)  # (B, H, t, j)
            allowed = allowed & (count < self.capacity)
        scores = (x.q @ x.k.transpose(-1, -2)) / x.q.shape[-1] ** 0.5
        return self._topk_read(scores, allowed.expand_as(scores), x.v)


class ProjectionWrites(nn.Module):
    """Rank-1 writes of each evicted token into the key and value projections (the source's
    method): W_K += η k hᵀ and W_V += η · importance · v hᵀ, with h the attention input.

    Future tokens' keys and values change, the cached ones do not. The key write is not
    importance-weighted so that, in the parallel form, keys can be resolved before the
    attention that measures importance. ``trainable=False`` keeps η fixed (inference-time
    writes into a frozen model, as in the source).
    """

    def __init__(self, rate: float = 1e-2, trainable: bool = False):
        super().__init__()
        if not rate > 0:
            raise ValueError(f"rate: expected a positive number, got {rate!r}")
        self.log_rate = nn.Parameter(torch.tensor(float(rate)).log(), requires_grad=trainable)

    @property
    def rate(self) -> torch.Tensor:
        return self.log_rate.exp()

    def init_state(self, batch: int, n_heads: int, d_head: int, d_model: int, device=None) -> dict:
        return {
            "dK": torch.zeros(batch, n_heads * d_head, d_model, device=device),
            "dV": torch.zeros(batch, n_heads, d_head, d_model, device=device),
        }

    def adjust(self, state: dict, h: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Keys and values of a new token under the written projections. h (B, D);
        k, v (B, H, d) from the trained projections."""
        dk = torch.einsum("bod,bd->bo", state["dK"], h).view_as(k)
        dv = torch.einsum("bhed,bd->bhe", state["dV"], h)
        return k + dk, v + dv

    def write(self, state: dict, ev: Evicted) -> None:
        eta = self.rate
        state["dK"] = state["dK"] + eta * torch.einsum("bo,bd->bod", ev.key.flatten(1), ev.hidden)
        scaled = eta * ev.importance[..., None] * ev.value
        state["dV"] = state["dV"] + torch.einsum("bhe,bd->bhed", scaled, ev.hidden)

    def state_bytes(self, n_heads: int, d_head: int, d_model: int) -> int:
        return 2 * n_heads * d_head * d_model * _FLOAT_BYTES

    def parallel_keys(
        self, h: torch.Tensor, k: torch.Tensor, evicted: torch.Tensor
    ) -> torch.Tensor:
        """k'_t = k_t + η Σ_{j evicted by t} (h_t·h_j) k'_j: a unit lower-triangular solve.
        h (B, T, D); k (B, H, T, d)."""
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


def make_memory(
    kind: str,
    top_k: int = 4,
    capacity: int | None = None,
    rate: float = 1e-2,
    trainable_rate: bool = False,
) -> nn.Module | None:
    """The memory module for one of ``MEMORY_KINDS`` (``None`` for ``"none"``)."""
    if kind not in MEMORY_KINDS:
        raise ValueError(f"memory: expected one of {MEMORY_KINDS}, got {kind!r}")
    if kind == "none":
        return None
    if kind == "matrix":
        return MatrixMemory("importance")
    if kind == "matrix_ones":
        return MatrixMemory("ones")
    if kind == "matrix_delta":
        return MatrixMemory("importance", delta=True)
    if kind == "association":
        return MatrixMemory("importance", associate=True)
    if kind == "knn":
        if capacity is None:
            raise ValueError("capacity: the bounded kNN memory needs a capacity, got None")
        return KNNMemory(top_k, capacity)
    if kind == "knn_unbounded":
        return KNNMemory(top_k, None)
    return ProjectionWrites(rate, trainable_rate)
