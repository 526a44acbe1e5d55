"""Pattern codes: bipolar (±1) and sparse binary ({0,1}, coding level a) patterns, their
makers, cue corruption (flips, partial cues), k-winners-take-all and overlaps — the only
copies in Engram; every part calls these.

Conventions used across Engram: a bipolar cue may hold 0 for "unknown" units (a partial
cue); a sparse cue holds 1 on the units it knows to be active and 0 elsewhere. Wherever k
winners are chosen, equal values go to the lower index, so numpy, torch, CPU and GPU agree.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import hadamard

from engram.params import Interval, Options, check

Array = np.ndarray
CODES = ("bipolar", "sparse")
_SPARSITY = Interval(float, 0.0, 0.5, closed="right", noun="coding level")


def _check_count(value: int, name: str, low: int, high: int | None = None) -> int:
    return check(name, value, Interval(int, low, high))


def check_sparsity(sparsity: float) -> float:
    """Validate a coding level a ∈ (0, 0.5]."""
    return check("sparsity", sparsity, _SPARSITY)


def active_count(n_units: int, sparsity: float) -> int:
    """k = round(a · N), the number of active units of a sparse pattern (at least 1)."""
    n_units = _check_count(n_units, "n_units", 2)
    k = max(1, round(check_sparsity(sparsity) * n_units))
    if k >= n_units:
        raise ValueError(f"sparsity: a·N = {k} active units leaves no inactive unit of {n_units}")
    return k


def to_bipolar(binary: Array) -> Array:
    """{0,1} → {−1,+1}."""
    return (2 * np.asarray(binary, dtype=np.int8) - 1).astype(np.int8)


def to_binary(bipolar: Array) -> Array:
    """{−1,+1} → {0,1}."""
    return (np.asarray(bipolar) > 0).astype(np.int8)


def random_bipolar(n_patterns: int, n_units: int, rng: np.random.Generator) -> Array:
    """Independent, unbiased ±1 patterns, shape (n_patterns, n_units)."""
    _check_count(n_patterns, "n_patterns", 1)
    _check_count(n_units, "n_units", 2)
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=(n_patterns, n_units))


def random_sparse(
    n_patterns: int, n_units: int, sparsity: float, rng: np.random.Generator
) -> Array:
    """Binary patterns with exactly k = a·N active units each, chosen uniformly at random."""
    _check_count(n_patterns, "n_patterns", 1)
    k = active_count(n_units, sparsity)
    order = np.argsort(rng.random((n_patterns, n_units)), axis=1)[:, :k]
    patterns = np.zeros((n_patterns, n_units), dtype=np.int8)
    np.put_along_axis(patterns, order, 1, axis=1)
    return patterns


def orthogonal_bipolar(n_patterns: int, n_units: int, rng: np.random.Generator) -> Array:
    """Mutually orthogonal ±1 patterns: random rows of a Sylvester–Hadamard matrix.

    The first row (all ones) is never used, so no pattern is the uniform state.
    """
    _check_count(n_units, "n_units", 2)
    if n_units & (n_units - 1):
        raise ValueError(f"n_units: orthogonal patterns need a power of two, got {n_units}")
    _check_count(n_patterns, "n_patterns", 1, n_units - 1)
    rows = rng.choice(np.arange(1, n_units), size=n_patterns, replace=False)
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n_patterns, 1))
    return (hadamard(n_units, dtype=np.int8)[rows] * signs).astype(np.int8)


def correlated_bipolar(
    n_patterns: int,
    n_units: int,
    n_prototypes: int,
    flip_probability: float,
    rng: np.random.Generator,
) -> Array:
    """±1 patterns built around shared prototypes: each is a prototype with a fraction
    ``flip_probability`` of its units flipped, so patterns of one prototype overlap by
    about (1 − 2p)²."""
    _check_count(n_prototypes, "n_prototypes", 1)
    check("flip_probability", flip_probability, Interval(float, 0.0, 0.5))
    prototypes = random_bipolar(n_prototypes, n_units, rng)
    owner = rng.integers(0, n_prototypes, size=n_patterns)
    flips = rng.random((n_patterns, n_units)) < flip_probability
    return np.where(flips, -prototypes[owner], prototypes[owner]).astype(np.int8)


def flip_bits(patterns: Array, n_flips: int, rng: np.random.Generator) -> Array:
    """Flip exactly ``n_flips`` units of each pattern (±1 → ∓1 for bipolar, 0 ↔ 1 for binary).

    For binary patterns the flips are split so that the number of active units is kept:
    half turn active units off, half turn inactive units on.
    """
    patterns = np.atleast_2d(np.asarray(patterns)).astype(np.int8)
    n_units = patterns.shape[1]
    _check_count(n_flips, "n_flips", 0, n_units)
    out = patterns.copy()
    bipolar = bool(np.any(patterns < 0))
    for row in out:
        if bipolar or n_flips == 0:
            idx = rng.choice(n_units, size=n_flips, replace=False)
            row[idx] = -row[idx] if bipolar else 1 - row[idx]
            continue
        on, off = np.flatnonzero(row == 1), np.flatnonzero(row == 0)
        n_off = min(n_flips - n_flips // 2, on.size)
        n_on = min(n_flips - n_off, off.size)
        row[rng.choice(on, size=n_off, replace=False)] = 0
        row[rng.choice(off, size=n_on, replace=False)] = 1
    return out


def partial_cue(patterns: Array, keep_fraction: float, rng: np.random.Generator) -> Array:
    """Keep a fraction of each pattern and mark the rest unknown.

    Sparse {0,1} patterns keep ``round(keep_fraction · k)`` of their k active units (at least
    one) and zero the others; bipolar patterns keep that fraction of all units and set the
    rest to 0 ("unknown").
    """
    check("keep_fraction", keep_fraction, Interval(float, 0.0, 1.0, closed="right"))
    patterns = np.atleast_2d(np.asarray(patterns)).astype(np.int8)
    bipolar = bool(np.any(patterns < 0))
    out = np.zeros_like(patterns)
    for row, source in zip(out, patterns, strict=True):
        candidates = np.arange(source.size) if bipolar else np.flatnonzero(source)
        keep = max(1, round(keep_fraction * candidates.size))
        idx = rng.choice(candidates, size=keep, replace=False)
        row[idx] = source[idx]
    return out


def noisy_partial_cues(
    vectors: Array,
    keep: tuple[float, float],
    noise: float | tuple[float, float],
    rng: np.random.Generator,
) -> tuple[Array, Array]:
    """Partial, noisy cues from real vectors (n, d): (cues float32, known bool).

    Each cue knows a share of dimensions drawn uniformly from ``keep`` (at least one), and
    carries Gaussian noise of standard deviation ``noise`` times its vector's per-dimension
    RMS; a ``(low, high)`` noise draws that multiple uniformly per cue. The random draws come
    in one fixed order (shares, known dimensions, the sure one, noise levels, noise).
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or not vectors.size:
        raise ValueError(f"vectors: expected shape (n, d) with n, d ≥ 1, got {vectors.shape}")
    unit = Interval(float, 0.0, 1.0)
    low, high = (check("keep", v, unit) for v in keep)
    if low > high:
        raise ValueError(f"keep: expected (low, high) with low ≤ high, got {keep}")
    n, d = vectors.shape
    fractions = rng.uniform(low, high, size=(n, 1))
    known = rng.random((n, d)) < fractions
    known[np.arange(n), rng.integers(0, d, n)] = True
    if isinstance(noise, tuple):
        scale = rng.uniform(*(check("noise", v, Interval(float, 0.0, None)) for v in noise), size=(n, 1))
    else:
        scale = check("noise", noise, Interval(float, 0.0, None))
    rms = np.sqrt((vectors.astype(np.float64) ** 2).mean(1, keepdims=True))
    cues = vectors + scale * rms * rng.standard_normal((n, d))
    return cues.astype(np.float32), known


def winners(x: Array | torch.Tensor, k: int) -> Array | torch.Tensor:
    """Indices (..., k) of the k largest entries along the last axis, largest first; equal
    values go to the lower index (and come in index order).

    Partial selection (``topk``), never a full sort of the row: a tie at the k-th place is
    resolved by ranking only the entries equal to the k-th value. NaN is refused.
    """
    as_numpy = not isinstance(x, torch.Tensor)
    if as_numpy:
        x = np.ascontiguousarray(x)
        t = torch.from_numpy(x if x.flags.writeable else x.copy())
    else:
        t = x
    if t.dim() == 0:
        raise ValueError("x: expected an array with at least one axis, got a scalar")
    n = t.shape[-1]
    _check_count(k, "k", 1, n)
    if t.dtype == torch.bool:
        t = t.to(torch.int8)
    if t.is_floating_point() and bool(torch.isnan(t).any()):
        raise ValueError("x: contains NaN, which has no rank")
    top = torch.topk(t, k, dim=-1)
    kth = top.values[..., -1:]
    if bool(((t >= kth).sum(-1) == k).all()):  # no tie at the k-th place: topk's set is the set
        chosen = top.indices
    else:
        better = t > kth
        tied = t == kth
        room = k - better.sum(-1, keepdim=True)
        mask = better | (tied & (torch.cumsum(tied.to(torch.int64), -1) <= room))
        chosen = mask.nonzero()[:, -1].reshape(*mask.shape[:-1], k)  # k per row, row-major
    # largest first, ties in index order: a stable sort by value of index-ordered winners
    chosen = chosen.sort(-1).values
    order = torch.sort(t.gather(-1, chosen), dim=-1, descending=True, stable=True).indices
    chosen = chosen.gather(-1, order)
    return chosen.numpy() if as_numpy else chosen


def kwta(x: Array | torch.Tensor, k: int) -> Array | torch.Tensor:
    """k-winners-take-all: an int8 {0,1} mask of the k largest entries along the last axis.

    Exactly k winners per row; equal values go to the lower index (``winners``).
    """
    chosen = winners(x, k)
    if isinstance(x, torch.Tensor):
        return torch.zeros(x.shape, dtype=torch.int8, device=x.device).scatter_(-1, chosen, 1)
    mask = np.zeros(np.shape(x), dtype=np.int8)
    np.put_along_axis(mask, chosen, 1, axis=-1)
    return mask


def overlap(a: Array | torch.Tensor, b: Array | torch.Tensor, code: str) -> Array | torch.Tensor:
    """Similarity of states (..., N) to patterns (P, N), shape (..., P): in [−1, 1] for bipolar
    codes (m = a·b / N) and in [0, 1] for sparse ones (shared active units / active units of
    ``b``). Numpy in, float32 numpy out; torch in, float tensors out."""
    check("code", code, Options(CODES))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a_t, b_t = torch.as_tensor(a), torch.as_tensor(b)
        dtype = torch.promote_types(torch.promote_types(a_t.dtype, b_t.dtype), torch.float32)
        a_t, b_t = a_t.to(dtype), b_t.to(a_t.device, dtype)
        scores = a_t @ b_t.T
        if code == "bipolar":
            return scores / a_t.shape[-1]
        return scores / b_t.sum(-1).clamp_min(1.0)
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if code == "bipolar":
        return a @ b.T / a.shape[-1]
    return a @ b.T / np.maximum(b.sum(axis=-1), 1.0)
