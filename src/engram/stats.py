"""Statistics for honest comparisons: intervals, effect sizes, tests, corrections, power.

Thin wrappers over scipy and statsmodels, so every experiment reports the same quantities
the same way; nothing here re-implements what those libraries already do well.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sp


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    level: float = 0.95

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _as_sample(values: Sequence[float] | np.ndarray, name: str, minimum: int = 1) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if array.size < minimum:
        raise ValueError(f"{name}: expected at least {minimum} values, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return array


def mean_ci(values: Sequence[float] | np.ndarray, level: float = 0.95) -> Interval:
    """Mean with a Student-t interval (a zero-width interval for one value or no spread)."""
    x = _as_sample(values, "values")
    mean = float(x.mean())
    if x.size < 2 or np.all(x == x[0]):
        return Interval(mean, mean, mean, level)
    low, high = _sp.t.interval(level, df=x.size - 1, loc=mean, scale=_sp.sem(x))
    return Interval(mean, float(low), float(high), level)


def proportion_ci(successes: int, trials: int, level: float = 0.95) -> Interval:
    """A binomial proportion with its Wilson score interval."""
    from statsmodels.stats.proportion import proportion_confint

    if trials <= 0:
        raise ValueError(f"trials: expected a positive count, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes: expected 0..{trials}, got {successes}")
    low, high = proportion_confint(successes, trials, alpha=1 - level, method="wilson")
    return Interval(successes / trials, float(low), float(high), level)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of any one-sample statistic (scipy.stats.bootstrap)."""
    x = _as_sample(values, "values", minimum=2)
    point = float(statistic(x))
    if np.all(x == x[0]):
        return Interval(point, point, point, level)
    result = _sp.bootstrap(
        (x,),
        statistic,
        confidence_level=level,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Interval(point, float(ci.low), float(ci.high), level)


def cohens_d(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Cohen's d (pooled SD) of a − b with a bootstrap interval."""
    x = _as_sample(a, "a", minimum=2)
    y = _as_sample(b, "b", minimum=2)

    def d(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        nu, nv = u.shape[axis], v.shape[axis]
        pooled = ((nu - 1) * u.var(axis=axis, ddof=1) + (nv - 1) * v.var(axis=axis, ddof=1)) / (
            nu + nv - 2
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            return (u.mean(axis=axis) - v.mean(axis=axis)) / np.sqrt(pooled)

    point = float(d(x, y))
    if not np.isfinite(point):
        return Interval(point, point, point, level)
    # with few samples some resamples have zero pooled variance and an infinite d; the
    # interval then has an infinite side, or is NaN where +inf and -inf resamples meet
    # (undefined, reported as such rather than as a warning)
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", _sp.DegenerateDataWarning)
        result = _sp.bootstrap(
            (x, y),
            d,
            confidence_level=level,
            n_resamples=n_resamples,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    ci = result.confidence_interval
    return Interval(point, float(ci.low), float(ci.high), level)


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h for two proportions: 2·asin(√p1) − 2·asin(√p2)."""
    for name, p in (("p1", p1), ("p2", p2)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}: expected a proportion in [0, 1], got {p}")
    return float(2 * np.arcsin(np.sqrt(p1)) - 2 * np.arcsin(np.sqrt(p2)))


@dataclass(frozen=True)
class TestResult:
    """A test statistic and its p-value, with the test's name."""

    test: str
    statistic: float
    p_value: float


def welch_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TestResult:
    """Welch's unequal-variance t-test, two-sided."""
    x = _as_sample(a, "a", minimum=2)
    y = _as_sample(b, "b", minimum=2)
    result = _sp.ttest_ind(x, y, equal_var=False)
    return TestResult("welch", float(result.statistic), float(result.pvalue))


def paired_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TestResult:
    """Paired t-test (two-sided) of a − b over matched pairs, e.g. the same seeds."""
    x = _as_sample(a, "a", minimum=2)
    y = _as_sample(b, "b", minimum=2)
    if x.size != y.size:
        raise ValueError(f"b: expected {x.size} values paired with a's, got {y.size}")
    result = _sp.ttest_rel(x, y)
    return TestResult("paired", float(result.statistic), float(result.pvalue))


def permutation_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> TestResult:
    """Two-sided permutation test on the difference of means (exact when small enough)."""
    x = _as_sample(a, "a")
    y = _as_sample(b, "b")
    result = _sp.permutation_test(
        (x, y),
        lambda u, v, axis: np.mean(u, axis=axis) - np.mean(v, axis=axis),
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        random_state=np.random.default_rng(seed),
    )
    return TestResult("permutation", float(result.statistic), float(result.pvalue))


def correct(p_values: Sequence[float], method: str = "holm", alpha: float = 0.05):
    """Multiple-comparison correction; returns (reject flags, adjusted p-values).

    ``method`` is any of statsmodels' ``multipletests`` methods, e.g. ``"holm"`` or ``"fdr_bh"``.
    """
    from statsmodels.stats.multitest import multipletests

    p = _as_sample(p_values, "p_values")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p_values: expected values in [0, 1]")
    reject, adjusted, _, _ = multipletests(p, alpha=alpha, method=method)
    return reject, adjusted


def samples_for_power(
    effect_size: float, power: float = 0.8, alpha: float = 0.05, ratio: float = 1.0
) -> int:
    """Per-group sample size for a two-sample t-test to detect ``effect_size`` (Cohen's d)."""
    from statsmodels.stats.power import TTestIndPower

    if effect_size == 0 or not np.isfinite(effect_size):
        raise ValueError(f"effect_size: expected a finite non-zero Cohen's d, got {effect_size}")
    n = TTestIndPower().solve_power(
        effect_size=abs(effect_size), power=power, alpha=alpha, ratio=ratio
    )
    return int(np.ceil(n))
