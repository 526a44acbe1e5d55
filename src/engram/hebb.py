"""Learning rules for associative memories, weight pruning, and associative write/read.

Every rule is a vectorised function from a batch of patterns to a symmetric weight matrix
with a zero diagonal (the condition under which asynchronous dynamics never raise the
energy). Rules that can learn incrementally take the previous weights.

Associative memory is written once, as functions on a state tensor (``write`` / ``read``)
with a thin class over them (``AssociativeMatrix``); the CA3 rules, the streaming models'
matrix memory and anything else that binds keys to values call these.
"""

from __future__ import annotations

import warnings

import torch

from engram.codes import check_sparsity
from engram.params import Interval, check, validated

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
    x = _as_float(patterns) - check_sparsity(sparsity)
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
    check("fraction", fraction, Interval(float, 0.0, 1.0, closed="left"))
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


def _rates(rate: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Learning rates broadcast to the writes' shape (*S, n, 1)."""
    rate = torch.as_tensor(rate, dtype=like.dtype, device=like.device)
    return rate.expand(like.shape[:-1])[..., None] if rate.dim() else rate


def write(
    state: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    rate: float | torch.Tensor = 1.0,
    *,
    delta: bool = False,
) -> torch.Tensor:
    """The memory after writing n (key, value) pairs: M + Σᵢ ηᵢ vᵢ kᵢᵀ (Hebb's outer product),
    or, with ``delta=True``, the Widrow–Hoff rule M ← M + ηᵢ (vᵢ − M kᵢ) kᵢᵀ pair by pair,
    which writes only what M does not already predict and so limits interference.

    A new tensor (never in place), so the write stays differentiable inside a model.

    Args:
        state: M, shape (*S, d_value, d_key); *S are independent memories (batch, heads).
        keys: (*S, n, d_key). values: (*S, n, d_value).
        rate: η, a scalar or (*S, n).

    Example:
        >>> m = write(torch.zeros(2, 3), torch.eye(3)[:1], torch.tensor([[1.0, 2.0]]))
        >>> read(m, torch.eye(3)[:1])
        tensor([[1., 2.]])
    """
    if keys.dim() < 2 or values.dim() < 2 or keys.shape[:-1] != values.shape[:-1]:
        raise ValueError(
            f"keys/values: expected shapes (..., n, d_key) and (..., n, d_value) with the same "
            f"leading shape, got {tuple(keys.shape)} and {tuple(values.shape)}"
        )
    if keys.shape[-1] != state.shape[-1] or values.shape[-1] != state.shape[-2]:
        raise ValueError(
            f"keys/values: expected widths ({state.shape[-1]}, {state.shape[-2]}), "
            f"got ({keys.shape[-1]}, {values.shape[-1]})"
        )
    rates = _rates(rate, keys.to(state.dtype))
    if not delta:
        return state + (values * rates).transpose(-1, -2) @ keys
    for i in range(keys.shape[-2]):  # sequential by definition
        k, v = keys[..., i, :], values[..., i, :]
        r = rates[..., i, :] if rates.dim() else rates
        error = v - (state @ k[..., None])[..., 0]
        state = state + (r * error)[..., :, None] * k[..., None, :]
    return state


def read(state: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """What M returns for queries (*S, q, d_key): M q, shape (*S, q, d_value)."""
    if queries.shape[-1] != state.shape[-1]:
        raise ValueError(f"queries: expected width {state.shape[-1]}, got {tuple(queries.shape)}")
    return queries @ state.transpose(-1, -2)


class AssociativeMatrix:
    """A linear associative memory M (d_value × d_key) over ``write`` / ``read``.

    ``store`` / ``recall`` are the same methods under the in-process memories' names.

    Shapes: keys (B, d_key) or (d_key,), values (B, d_value), rates (B,) or a scalar.

    Example:
        >>> memory = AssociativeMatrix(3, 2)
        >>> memory.write(torch.eye(3)[1], torch.tensor([4.0, 5.0]))
        >>> memory.read(torch.eye(3)[1])
        tensor([[4., 5.]])
    """

    @validated({"d_key": [Interval(int, 1, None)], "d_value": [Interval(int, 1, None)]})
    def __init__(self, d_key: int, d_value: int, device: str | torch.device = "cpu"):
        self.matrix = torch.zeros(d_value, d_key, device=device)

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def write(
        self,
        keys: torch.Tensor,
        values: torch.Tensor,
        rate: float | torch.Tensor = 1.0,
        delta: bool = False,
    ) -> None:
        """Write (key, value) pairs; batch sizes must agree."""
        keys, values = torch.atleast_2d(keys), torch.atleast_2d(values)
        if keys.dim() != 2 or values.dim() != 2 or keys.shape[0] != values.shape[0]:
            raise ValueError(
                f"keys/values: batch sizes differ ({keys.shape[0]} vs {values.shape[0]})"
            )
        rate = torch.as_tensor(rate, dtype=self.matrix.dtype, device=self.matrix.device)
        self.matrix = write(self.matrix, keys.to(self.matrix), values.to(self.matrix),
                            rate.expand(keys.shape[0]), delta=delta)

    def read(self, queries: torch.Tensor) -> torch.Tensor:
        """M q for queries (B, d_key) or (d_key,): (B, d_value)."""
        return read(self.matrix, torch.atleast_2d(queries).to(self.matrix))

    store = write
    recall = read

    def reset(self) -> None:
        self.matrix.zero_()
