"""Pattern codes: bipolar (±1) and sparse binary ({0,1}, coding level a) patterns, their
makers, cue corruption, and k-winners-take-all.

Conventions used across Engram: a bipolar cue may hold 0 for "unknown" units (a partial
cue); a sparse cue holds 1 on the units it knows to be active and 0 elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.linalg import hadamard

Array = np.ndarray


def _check_count(value: int, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and ≤ {high}"
        raise ValueError(f"{name}: expected an integer ≥ {low}{upper}, got {value}")
    return int(value)


def check_sparsity(sparsity: float) -> float:
    """Validate a coding level a ∈ (0, 0.5]."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)):
        raise TypeError(f"sparsity: expected a float in (0, 0.5], got {sparsity!r}")
    if not (0.0 < float(sparsity) <= 0.5) or not math.isfinite(sparsity):
        raise ValueError(f"sparsity: expected a coding level in (0, 0.5], got {sparsity}")
    return float(sparsity)


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
    if not 0.0 <= flip_probability <= 0.5:
        raise ValueError(f"flip_probability: expected a value in [0, 0.5], got {flip_probability}")
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
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction: expected a value in (0, 1], got {keep_fraction}")
    patterns = np.atleast_2d(np.asarray(patterns)).astype(np.int8)
    bipolar = bool(np.any(patterns < 0))
    out = np.zeros_like(patterns)
    for row, source in zip(out, patterns, strict=True):
        candidates = np.arange(source.size) if bipolar else np.flatnonzero(source)
        keep = max(1, round(keep_fraction * candidates.size))
        idx = rng.choice(candidates, size=keep, replace=False)
        row[idx] = source[idx]
    return out


def kwta(x: Array | torch.Tensor, k: int) -> Array | torch.Tensor:
    """k-winners-take-all: a {0,1} mask of the k largest entries along the last axis.

    Uses partial selection (``argpartition`` / ``topk``), never a full sort; ties are broken
    by the selection routine, so exactly k winners are returned.
    """
    n = x.shape[-1]
    _check_count(k, "k", 1, n)
    if isinstance(x, torch.Tensor):
        mask = torch.zeros_like(x, dtype=torch.int8)
        return mask.scatter_(-1, torch.topk(x, k, dim=-1, sorted=False).indices, 1)
    x = np.asarray(x)
    winners = np.argpartition(x, n - k, axis=-1)[..., n - k :]
    mask = np.zeros(x.shape, dtype=np.int8)
    np.put_along_axis(mask, winners, 1, axis=-1)
    return mask


def overlap(a: Array, b: Array, code: str) -> Array:
    """Similarity of states in [−1, 1] (bipolar: m = a·b / N) or [0, 1] (sparse: shared
    active units / active units of ``b``)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if code == "bipolar":
        return a @ b.T / a.shape[-1]
    if code == "sparse":
        return a @ b.T / np.maximum(b.sum(axis=-1), 1.0)
    raise ValueError(f"code: expected 'bipolar' or 'sparse', got {code!r}")
