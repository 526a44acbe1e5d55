"""Learning rules for associative memories, weight pruning, and a Hebbian associative matrix.

Every rule is a vectorised function from a batch of patterns to a symmetric weight matrix
with a zero diagonal (the condition under which asynchronous dynamics never raise the
energy). Rules that can learn incrementally take the previous weights.
"""

from __future__ import annotations

import warnings

import torch

RULES = ("hebbian", "covariance", "storkey", "pseudoinverse")


def _as_float(patterns: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if patterns.dim() != 2:
        raise ValueError(
            f"patterns: expected shape (n_patterns, n_units), got {tuple(patterns.shape)}"
        )
    return patterns.to(dtype)


def _zero_diagonal(weights: torch.Tensor) -> torch.Tensor:
    weights.fill_diagonal_(0.0)
    return weights


def hebbian_counts(patterns: torch.Tensor) -> torch.Tensor:
    """The Hebbian rule's exact form for ±1 patterns: the integer matrix C = XᵀX, zero diagonal.

    Entries are integers |C_ij| ≤ P held exactly in float32, and so is every field C·s while
    (N − 1)·P ≤ 2^24: sign dynamics on C are those of W = C / N with exact ties (C·s = 0).
    """
    x = _as_float(patterns)
    return _zero_diagonal(x.T @ x)


def hebbian(patterns: torch.Tensor) -> torch.Tensor:
    """Classical outer-product rule for ±1 patterns: W = XᵀX / N, zero diagonal (Hopfield 1982)."""
    return hebbian_counts(patterns) / patterns.shape[1]


def covariance(patterns: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Covariance rule for {0,1} patterns at coding level a: W = (X − a)ᵀ(X − a) / (N a (1 − a)).

    Centring on the coding level (not the sample mean) keeps the rule additive, so patterns
    can be stored one batch at a time (Tsodyks & Feigel'man 1988).
    """
    x = _as_float(patterns) - sparsity
    return _zero_diagonal(x.T @ x / (x.shape[1] * sparsity * (1.0 - sparsity)))


def storkey(patterns: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Storkey's incremental rule for ±1 patterns (Storkey 1997), one pattern at a time.

    ΔW_ij = (ξ_i ξ_j − ξ_i h_ji − h_ij ξ_j) / N with the local field h_ij = Σ_{k≠i,j} W_ik ξ_k;
    higher capacity than Hebbian and more tolerant of correlated patterns.
    """
    x = _as_float(patterns, torch.float64)
    n = x.shape[1]
    w = (
        torch.zeros(n, n, dtype=torch.float64, device=x.device)
        if weights is None
        else (weights.to(torch.float64).clone())
    )
    for xi in x:
        field = w @ xi - torch.diagonal(w) * xi  # h_i, excluding the self term
        h = field[:, None] - w * xi[None, :]  # h_ij = h_i − W_ij ξ_j
        w += (torch.outer(xi, xi) - xi[:, None] * h.T - h * xi[None, :]) / n
        w.fill_diagonal_(0.0)
    return w.to(torch.float32)


def pseudoinverse(patterns: torch.Tensor, centre: float = 0.0) -> torch.Tensor:
    """Projection (pseudo-inverse) rule: W = Xᵀ (X Xᵀ)⁺ X with zero diagonal (Personnaz et al.).

    Every stored pattern is a fixed point up to P < N even when patterns are correlated;
    ``centre`` subtracts a coding level first (use a for sparse codes).
    """
    x = _as_float(patterns, torch.float64) - centre
    gram_inverse = torch.linalg.pinv(x @ x.T, hermitian=True)
    return _zero_diagonal(x.T @ gram_inverse @ x).to(torch.float32)


def prune(weights: torch.Tensor, fraction: float) -> torch.Tensor:
    """Drop the ``fraction`` of weights smallest in magnitude; returns a sparse CSR matrix.

    Pays only when the kept fraction is small (≲ 10%): a CSR product then reads far fewer
    bytes than the dense one.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction: expected a value in [0, 1), got {fraction}")
    if weights.dim() != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights: expected a square matrix, got {tuple(weights.shape)}")
    magnitude = weights.abs().flatten()
    n_drop = int(fraction * magnitude.numel())
    kept = weights
    if n_drop > 0:
        cutoff = torch.kthvalue(magnitude.cpu(), n_drop).values.to(weights.device)
        kept = torch.where(weights.abs() > cutoff, weights, torch.zeros_like(weights))
    with warnings.catch_warnings():  # CSR is marked beta; the product we use is stable
        warnings.simplefilter("ignore", UserWarning)
        return kept.to_sparse_csr()


class AssociativeMatrix:
    """A linear associative memory M (d_value × d_key): write M += η v kᵀ, read M q.

    The plain write is Hebb's outer product; ``delta=True`` writes only the part of v that
    M does not already predict (Widrow–Hoff), which limits interference on overwrites.

    Shapes: keys (B, d_key), values (B, d_value), rates (B,) or a scalar.
    """

    def __init__(self, d_key: int, d_value: int, device: str | torch.device = "cpu"):
        for name, value in (("d_key", d_key), ("d_value", d_value)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.matrix = torch.zeros(d_value, d_key, device=device)

    def write(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        rate: float | torch.Tensor = 1.0,
        delta: bool = False,
    ) -> None:
        keys, values = torch.atleast_2d(keys), torch.atleast_2d(values)
        if keys.shape[0] != values.shape[0]:
            raise ValueError(
                f"keys/values: batch sizes differ ({keys.shape[0]} vs {values.shape[0]})"
            )
        if keys.shape[1] != self.matrix.shape[1] or values.shape[1] != self.matrix.shape[0]:
            raise ValueError(
                f"keys/values: expected widths ({self.matrix.shape[1]}, {self.matrix.shape[0]}), "
                f"got ({keys.shape[1]}, {values.shape[1]})"
            )
        rate = torch.as_tensor(rate, dtype=self.matrix.dtype, device=self.matrix.device)
        rate = rate.expand(keys.shape[0])[:, None]
        if delta:
            for k, v, r in zip(keys, values, rate, strict=True):  # sequential by definition
                self.matrix += r * torch.outer(v - self.matrix @ k, k)
        else:
            self.matrix += (values * rate).T @ keys

    def read(self, queries: torch.Tensor) -> torch.Tensor:
        return torch.atleast_2d(queries) @ self.matrix.T

    def reset(self) -> None:
        self.matrix.zero_()
