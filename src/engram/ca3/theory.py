"""Theory curves of attractor memory that the lab plots beside every measurement.

Sources: Amit, Gutfreund & Sompolinsky 1985/87 (α_c ≈ 0.138 and the zero-temperature
retrieval overlap), McEliece, Posner, Rodemich & Venkatesh 1987 (N/(4 ln N) and N/(2 ln N)),
Tsodyks & Feigel'man 1988 (sparse codes: α_c ~ 1/(2a|ln a|) as a → 0).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf
from scipy.stats import linregress, norm, t

from engram.stats import Interval

ALPHA_C = 0.138  # Amit–Gutfreund–Sompolinsky critical load of the Hebbian network at T = 0


def _positive(value: float, name: str) -> float:
    if not np.all(np.asarray(value) > 0):
        raise ValueError(f"{name}: expected positive values, got {value}")
    return value


def all_exact_limit(n_units: float) -> float:
    """N/(4 ln N): below it every stored pattern is a fixed point with probability → 1."""
    _positive(n_units - 1, "n_units")
    return n_units / (4.0 * math.log(n_units))


def most_exact_limit(n_units: float) -> float:
    """N/(2 ln N): below it almost every stored pattern (not all) is a fixed point."""
    _positive(n_units - 1, "n_units")
    return n_units / (2.0 * math.log(n_units))


def sparse_capacity(sparsity: float | np.ndarray) -> float | np.ndarray:
    """Tsodyks–Feigel'man scaling α_c(a) ≈ 1/(2a|ln a|) of the covariance rule (asymptotic in a → 0)."""
    a = np.asarray(_positive(sparsity, "sparsity"), dtype=float)
    out = 1.0 / (2.0 * a * np.abs(np.log(a)))
    return float(out) if out.ndim == 0 else out


def stable_bit_probability(n_units: int, n_patterns: np.ndarray | int) -> np.ndarray:
    """Probability that one unit of a stored pattern is stable under one update (signal-to-
    crosstalk argument): Φ(√((N − 1)/(P − 1))), the crosstalk being a sum of (P − 1)(N − 1)
    independent ±1/N terms."""
    p = np.asarray(n_patterns, dtype=float)
    with np.errstate(divide="ignore"):
        snr = np.sqrt((n_units - 1) / np.maximum(p - 1, 0.0))
    return norm.cdf(snr)


def fixed_point_share(n_units: int, n_patterns: np.ndarray | int) -> np.ndarray:
    """Expected share of stored random patterns that are exact fixed points: Φ(·)^N, treating
    the N units' crosstalk terms as independent (accurate well below α_c)."""
    return stable_bit_probability(n_units, n_patterns) ** n_units


def retrieval_overlap(alpha: np.ndarray | float, iterations: int = 4000) -> np.ndarray:
    """AGS zero-temperature retrieval overlap m(α); 0 where no retrieval state exists (α > α_c).

    Solves m = erf(m/√(2αr)), C = √(2/(παr))·exp(−m²/(2αr)), r = 1/(1 − C)² by fixed-point
    iteration from the stored pattern (m = 1, r = 1).
    """
    alpha = np.atleast_1d(np.asarray(_positive(alpha, "alpha"), dtype=float))
    m = np.ones_like(alpha)
    r = np.ones_like(alpha)
    for _ in range(iterations):
        scale = 2.0 * alpha * r
        m = erf(m / np.sqrt(scale))
        c = np.sqrt(2.0 / (math.pi * alpha * r)) * np.exp(-(m**2) / scale)
        r = 1.0 / np.maximum(1.0 - c, 1e-9) ** 2
    return np.where(m > 0.5, m, 0.0)


def retrieval_error_fraction(alpha: np.ndarray | float) -> np.ndarray:
    """Share of wrong units in the AGS retrieval state, (1 − m)/2; 0.5 where retrieval is lost."""
    return (1.0 - retrieval_overlap(alpha)) / 2.0


def finite_size_limit(n_units: np.ndarray, knees: np.ndarray, level: float = 0.95) -> Interval:
    """α_∞ of knee(N) = α_∞ + b/√N fitted by least squares to per-seed knees, with a t interval.

    Finite-size corrections to the AGS capacity fall as N^(-1/2); the intercept is the
    network's capacity extrapolated to N → ∞ from the sizes measured.
    """
    x = 1.0 / np.sqrt(np.asarray(_positive(np.asarray(n_units, dtype=float), "n_units")))
    y = np.asarray(knees, dtype=float)
    if x.shape != y.shape or len(np.unique(x)) < 2:
        raise ValueError(f"n_units: expected at least two sizes, one per knee, got {n_units!r}")
    fit = linregress(x, y)
    if x.size < 3:
        return Interval(float(fit.intercept), float(fit.intercept), float(fit.intercept), level)
    half = float(t.ppf(0.5 + level / 2, x.size - 2)) * float(fit.intercept_stderr)
    return Interval(float(fit.intercept), float(fit.intercept) - half, float(fit.intercept) + half,
                    level)
