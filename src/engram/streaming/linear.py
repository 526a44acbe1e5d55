"""Recurrent attention layers of fixed state, the baselines an eviction memory is measured
against: linear attention (Katharopoulos et al. 2020) and the delta rule (DeltaNet, Schlag et
al. 2021; Yang et al. 2024). They see the whole sequence, but only through one d × d matrix per
head, the same state as ``MatrixMemory`` (``matrix`` and ``matrix_delta``).

Each has a chunked (training) form and a naive recurrent form, run token by token, which the
chunked form is tested against on outputs and gradients. Shapes: q, k, v (B, H, T, d);
β (B, H, T); states S (B, H, d_value, d_key), z (B, H, d_key).

- linear: S_t = S_{t−1} + v_t φ(k_t)ᵀ, z_t = z_{t−1} + φ(k_t), o_t = S_t φ(q_t) / (z_tᵀ φ(q_t));
- delta:  S_t = S_{t−1} + β_t (v_t − S_{t−1} κ_t) κ_tᵀ, o_t = S_t q̂_t, with κ = φ(k)/‖φ(k)‖,
  q̂ = φ(q)/‖φ(q)‖ and β = sigmoid(w·h) ∈ (0, 1).
"""

from __future__ import annotations

import torch
from torch import nn

from engram.streaming.memories.base import FLOAT_BYTES
from engram.streaming.memories.matrix import feature_map

MIXERS = ("softmax", "linear", "delta")
_EPS = 1e-6


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + _EPS)


def _chunks(T: int, chunk: int) -> list[slice]:
    return [slice(s, min(s + chunk, T)) for s in range(0, T, chunk)]


# -- linear attention ----------------------------------------------------------------------
def linear_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Linear attention token by token (the reference)."""
    B, H, T, d = q.shape
    S = q.new_zeros(B, H, v.shape[-1], d)
    z = q.new_zeros(B, H, d)
    out = []
    for t in range(T):
        phi_k, phi_q = feature_map(k[:, :, t]), feature_map(q[:, :, t])
        S = S + v[:, :, t, :, None] * phi_k[..., None, :]
        z = z + phi_k
        num = (S @ phi_q[..., None])[..., 0]
        out.append(num / ((z * phi_q).sum(-1, keepdim=True) + _EPS))
    return torch.stack(out, 2)


def linear_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Linear attention by chunks: causal products inside a chunk, the carried state across."""
    B, H, T, d = q.shape
    phi_q, phi_k = feature_map(q), feature_map(k)
    S = q.new_zeros(B, H, v.shape[-1], d)
    z = q.new_zeros(B, H, d)
    out = []
    for c in _chunks(T, chunk):
        fq, fk, vc = phi_q[:, :, c], phi_k[:, :, c], v[:, :, c]
        scores = torch.tril(fq @ fk.transpose(-1, -2))  # (B, H, C, C), i ≤ t
        num = fq @ S.transpose(-1, -2) + scores @ vc
        den = fq @ z[..., None] + scores.sum(-1, keepdim=True)
        out.append(num / (den + _EPS))
        S = S + vc.transpose(-1, -2) @ fk
        z = z + fk.sum(-2)
    return torch.cat(out, 2)


# -- delta rule ------------------------------------------------------------------------------
def delta_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The delta rule token by token (the reference); reads after writing, as DeltaNet."""
    B, H, T, d = q.shape
    S = q.new_zeros(B, H, v.shape[-1], d)
    out = []
    for t in range(T):
        kappa, q_hat = _unit(feature_map(k[:, :, t])), _unit(feature_map(q[:, :, t]))
        error = v[:, :, t] - (S @ kappa[..., None])[..., 0]
        S = S + beta[:, :, t, None, None] * error[..., None] * kappa[..., None, :]
        out.append((S @ q_hat[..., None])[..., 0])
    return torch.stack(out, 2)


def delta_chunked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """The delta rule by chunks. With S_t = S₀ + Σ_{i≤t} u_i κ_iᵀ inside a chunk, the
    pseudo-values solve the unit lower-triangular system (I + tril(β κ κᵀ, −1)) U = β (V − κ S₀ᵀ);
    then O = q̂ S₀ᵀ + tril(q̂ κᵀ) U and the chunk hands on S₀ + Uᵀ κ (Yang et al. 2024)."""
    B, H, T, d = q.shape
    kappa, q_hat = _unit(feature_map(k)), _unit(feature_map(q))
    S = q.new_zeros(B, H, v.shape[-1], d)
    out = []
    for c in _chunks(T, chunk):
        kc, qc, vc, bc = kappa[:, :, c], q_hat[:, :, c], v[:, :, c], beta[:, :, c, None]
        n = kc.shape[-2]
        eye = torch.eye(n, dtype=q.dtype, device=q.device)
        system = eye + torch.tril(bc * (kc @ kc.transpose(-1, -2)), -1)
        u = torch.linalg.solve_triangular(
            system, bc * (vc - kc @ S.transpose(-1, -2)), upper=False, unitriangular=True
        )
        out.append(qc @ S.transpose(-1, -2) + torch.tril(qc @ kc.transpose(-1, -2)) @ u)
        S = S + u.transpose(-1, -2) @ kc
    return torch.cat(out, 2)


class RecurrentAttention(nn.Module):
    """A multi-head attention layer whose whole past is one matrix per head (``mixer`` is
    ``"linear"`` or ``"delta"``): ``forward`` is the chunked form, ``step`` the recurrence."""

    def __init__(self, d_model: int, n_heads: int, mixer: str, layer: int, chunk: int = 64):
        super().__init__()
        if mixer not in ("linear", "delta"):
            raise ValueError(f"mixer: expected 'linear' or 'delta', got {mixer!r}")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk: expected a positive integer, got {chunk!r}")
        self.mixer, self.layer, self.chunk = mixer, layer, chunk
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.beta = nn.Linear(d_model, n_heads) if mixer == "delta" else None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) → (B, H, T, d)
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_head).transpose(1, 2)

    def forward(self, h: torch.Tensor, hook=None) -> torch.Tensor:
        """Chunked form over a whole sequence h (B, T, D); nothing is ever evicted (no hook)."""
        B, T, D = h.shape
        q, k, v = (self._heads(part) for part in self.qkv(h).split(D, dim=-1))
        if self.beta is None:
            y = linear_chunked(q, k, v, self.chunk)
        else:
            beta = torch.sigmoid(self.beta(h)).transpose(1, 2)  # (B, H, T)
            y = delta_chunked(q, k, v, beta, self.chunk)
        return self.out(y.transpose(1, 2).reshape(B, T, D))

    def init_cache(self, batch: int, device=None) -> dict:
        H, d = self.n_heads, self.d_head
        cache = {"S": torch.zeros(batch, H, d, d, device=device)}
        if self.beta is None:
            cache["z"] = torch.zeros(batch, H, d, device=device)
        return cache

    def step(self, h_t: torch.Tensor, position: int, cache: dict, hook=None) -> torch.Tensor:
        """One token h_t (B, D); updates ``cache`` in place."""
        B, D = h_t.shape
        q, k, v = (part.view(B, self.n_heads, self.d_head) for part in self.qkv(h_t).split(D, -1))
        if self.beta is None:
            phi_k, phi_q = feature_map(k), feature_map(q)
            cache["S"] = cache["S"] + v[..., None] * phi_k[..., None, :]
            cache["z"] = cache["z"] + phi_k
            num = (cache["S"] @ phi_q[..., None])[..., 0]
            y = num / ((cache["z"] * phi_q).sum(-1, keepdim=True) + _EPS)
        else:
            beta = torch.sigmoid(self.beta(h_t))  # (B, H)
            kappa, q_hat = _unit(feature_map(k)), _unit(feature_map(q))
            error = v - (cache["S"] @ kappa[..., None])[..., 0]
            cache["S"] = cache["S"] + beta[..., None, None] * error[..., None] * kappa[..., None, :]
            y = (cache["S"] @ q_hat[..., None])[..., 0]
        return self.out(y.reshape(B, D))

    def state_bytes(self, cache: dict | None = None) -> int:
        """Bytes of one sequence's state: S (and z for linear attention), whatever the length."""
        per_head = self.d_head * self.d_head + (self.d_head if self.beta is None else 0)
        return self.n_heads * per_head * FLOAT_BYTES
