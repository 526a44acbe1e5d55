"""The comparison battery: each pair of arms tested (Welch or paired t), Holm-corrected over the
family, with the difference and Cohen's d each with a 95% interval — one set of column names.

Zero spread is answered, not left undefined: two arms whose values never vary are different
(p = 0) when their means differ and the same (p = 1) when they do not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _sp

from engram import stats

COLUMNS: tuple[str, ...] = (
    "a", "b", "n_a", "n_b", "mean_a", "mean_b", "diff", "diff_low", "diff_high",
    "test", "statistic", "p", "p_holm", "significant", "cohens_d", "d_low", "d_high", "p_perm",
)


@dataclass(frozen=True)
class Comparison:
    """Arm ``a`` against arm ``b``: diff = mean(a) − mean(b); ``significant`` is p_holm < alpha."""

    a: str
    b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    diff_low: float
    diff_high: float
    test: str  # "welch" or "paired"
    statistic: float
    p: float
    p_holm: float
    significant: bool
    cohens_d: float
    d_low: float
    d_high: float
    p_perm: float | None = None  # two-sided permutation p, when asked for

    def row(self) -> dict[str, Any]:
        """The comparison as a table row, keyed by ``COLUMNS``."""
        return dataclasses.asdict(self)


def _difference(x: np.ndarray, y: np.ndarray, paired: bool) -> tuple[float, float, float]:
    """Mean difference with a 95% t interval (Welch–Satterthwaite degrees of freedom unpaired)."""
    if paired:
        iv = stats.mean_ci(x - y)
        return iv.estimate, iv.low, iv.high
    diff = float(x.mean() - y.mean())
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = float(np.sqrt(va + vb))
    if se == 0.0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    half = float(_sp.t.ppf(0.975, df)) * se
    return diff, diff - half, diff + half


def _test(x: np.ndarray, y: np.ndarray, paired: bool) -> tuple[str, float, float]:
    spread = np.ptp(x - y) if paired else np.ptp(x) + np.ptp(y)
    name = "paired" if paired else "welch"
    if spread == 0.0:
        same = bool(np.isclose(x.mean(), y.mean()))
        return name, (0.0 if same else float("nan")), (1.0 if same else 0.0)
    result = stats.paired_test(x, y) if paired else stats.welch_test(x, y)
    return result.test, result.statistic, result.p_value


def compare(
    samples: Mapping[str, Sequence[float] | np.ndarray],
    pairs: Sequence[tuple[str, str]],
    paired: bool = False,
    alpha: float = 0.05,
    permutation: bool = False,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[Comparison, ...]:
    """Test each ``(a, b)`` in ``pairs`` on the per-seed values in ``samples``; Holm over all.

    ``paired`` pairs the i-th values of both arms (the same seed); each arm needs at least two
    values. ``permutation`` adds a permutation test's p (``n_resamples``, ``seed``).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha!r}")
    if not pairs:
        raise ValueError("pairs: expected at least one (a, b) pair of arm names, got none")
    rows = []
    for a, b in pairs:
        for name in (a, b):
            if name not in samples:
                raise ValueError(f"pairs: arm {name!r} is not one of {sorted(samples)}")
        x = np.asarray(samples[a], dtype=float).ravel()
        y = np.asarray(samples[b], dtype=float).ravel()
        for name, values in ((a, x), (b, y)):
            if values.size < 2 or not np.all(np.isfinite(values)):
                raise ValueError(
                    f"samples[{name!r}]: expected at least 2 finite values, got {values.tolist()}"
                )
        if paired and x.size != y.size:
            raise ValueError(f"samples[{b!r}]: expected {x.size} values paired with {a!r}'s, got {y.size}")
        test, statistic, p = _test(x, y, paired)
        diff, low, high = _difference(x, y, paired)
        d = stats.cohens_d(x, y, n_resamples=n_resamples, seed=seed)
        p_perm = (stats.permutation_test(x, y, n_resamples=n_resamples, seed=seed).p_value
                  if permutation else None)
        rows.append(dict(a=a, b=b, n_a=int(x.size), n_b=int(y.size), mean_a=float(x.mean()),
                         mean_b=float(y.mean()), diff=diff, diff_low=low, diff_high=high,
                         test=test, statistic=statistic, p=p, cohens_d=d.estimate,
                         d_low=d.low, d_high=d.high, p_perm=p_perm))
    reject, adjusted = stats.correct([r["p"] for r in rows], method="holm", alpha=alpha)
    return tuple(
        Comparison(**r, p_holm=float(adj), significant=bool(rej))
        for r, rej, adj in zip(rows, reject, adjusted, strict=True)
    )


def against(
    samples: Mapping[str, Sequence[float] | np.ndarray], reference: str, **options: Any
) -> tuple[Comparison, ...]:
    """Every other arm against ``reference`` (the ablation's and the continual lab's family)."""
    if reference not in samples:
        raise ValueError(f"reference: expected one of {sorted(samples)}, got {reference!r}")
    return compare(samples, [(name, reference) for name in samples if name != reference], **options)
