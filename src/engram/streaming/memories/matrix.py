"""Hebbian memory matrices written at eviction: additive, importance-weighted, delta rule, and
stored under attention-weighted keys (the source's Options 1 and 2; Infini-attention's
compressive memory; DeltaNet's parallel form for the delta rule)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engram import hebb
from engram.params import Instance, Options, check
from engram.streaming.memories.base import FLOAT_BYTES, EvictionMemory, ParallelInputs, State
from engram.streaming.window import Evicted

_EPS = 1e-6


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """φ(x) = elu(x) + 1, a positive feature map for linear attention (Katharopoulos et al.)."""
    return F.elu(x) + 1.0


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + _EPS)


class MatrixMemory(EvictionMemory):
    """A memory matrix per head written at eviction: M += w v φ(k)ᵀ, z += w φ(k).

    The streaming form writes and reads through ``engram.hebb.write`` / ``hebb.read`` (the
    one associative memory of Engram); the parallel form is their closed form over a sequence.

    ``weighting`` is ``"importance"`` (w = attention received in the window) or ``"ones"``;
    ``delta=True`` uses the delta rule M += β (v − M κ) κᵀ with κ = φ(k)/‖φ(k)‖ and
    β = importance / (1 + importance) ∈ (0, 1), read as φ(q)/‖φ(q)‖ · M. ``associate=True``
    stores under the token's attention-weighted keys instead of its own key.
    """

    def __init__(self, weighting: str = "importance", delta: bool = False, associate: bool = False):
        super().__init__()
        self.weighting = check("weighting", weighting, Options(("importance", "ones")))
        self.delta = check("delta", delta, Instance(bool, "a bool"))
        self.associate = check("associate", associate, Instance(bool, "a bool"))

    def _weight(self, importance: torch.Tensor) -> torch.Tensor:
        w = importance if self.weighting == "importance" else torch.ones_like(importance)
        return w / (1.0 + w) if self.delta else w

    def _key(self, key: torch.Tensor, assoc_key: torch.Tensor) -> torch.Tensor:
        phi = feature_map(assoc_key if self.associate else key)
        return _unit(phi) if self.delta else phi

    # -- streaming form ------------------------------------------------------------------
    def init_state(self, batch: int, n_heads: int, d_head: int, d_model: int, device=None) -> State:
        return {
            "M": torch.zeros(batch, n_heads, d_head, d_head, device=device),  # (d_value, d_key)
            "z": torch.zeros(batch, n_heads, d_head, device=device),
        }

    def write(self, state: State, ev: Evicted) -> State:
        kappa = self._key(ev.key, ev.assoc_key)[..., None, :]  # (B, H, 1, d): one pair per head
        w = self._weight(ev.importance)[..., None]  # (B, H, 1)
        memory = hebb.write(state["M"], kappa, ev.value[..., None, :], w, delta=self.delta)
        z = state["z"] if self.delta else state["z"] + w * kappa[..., 0, :]
        return {"M": memory, "z": z}

    def read(self, state: State, q: torch.Tensor) -> torch.Tensor:
        phi = feature_map(q)
        if self.delta:
            return hebb.read(state["M"], _unit(phi)[..., None, :])[..., 0, :]
        num = hebb.read(state["M"], phi[..., None, :])[..., 0, :]
        den = (phi * state["z"]).sum(-1, keepdim=True)
        return num / (den + _EPS)

    def state_bytes(self, n_heads: int, d_head: int, d_model: int, n_evicted: int) -> int:
        per_head = d_head * d_head + (0 if self.delta else d_head)
        return n_heads * per_head * FLOAT_BYTES

    # -- parallel form -------------------------------------------------------------------
    def parallel_read(self, x: ParallelInputs) -> torch.Tensor:
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
            u = torch.linalg.solve_triangular(system, beta[..., None] * x.v, upper=False, unitriangular=True)
            return (_unit(feature_map(x.q)) @ kappa.transpose(-1, -2) * mask) @ u
        phi_q = feature_map(x.q)
        scores = (phi_q @ kappa.transpose(-1, -2)) * w[..., None, :] * mask
        return (scores @ x.v) / (scores.sum(-1, keepdim=True) + _EPS)
