"""Summaries and plots shared by the lab's experiments: means over seeds with 95% intervals and
error-bar plots with theory curves (claims and reports are the toolkit's, ``engram.runs``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from engram.stats import Interval, mean_ci

SHARED_MACHINE = "measured on a shared 2-core CPU"
# Metrics that are shares: their t-intervals are clipped to [0, 1].
SHARES = frozenset({"fixed_point", "recall", "spurious", "mixture", "converged", "cycled",
                    "accepted", "nn_recall", "energy_rise_share", "refused", "exact"})


def interval(values: Sequence[float] | np.ndarray, share: bool = False) -> Interval:
    """Mean over seeds with a Student-t 95% interval, clipped to [0, 1] for a share."""
    iv = mean_ci(np.asarray(values, dtype=float))
    if share:
        return Interval(iv.estimate, max(iv.low, 0.0), min(iv.high, 1.0), iv.level)
    return iv


def fmt(iv: Interval, digits: int = 3, percent: bool = False) -> str:
    """'0.123 [0.110, 0.136]' (or percentages) for tables and reports."""
    scale, unit = (100.0, "%") if percent else (1.0, "")
    p = f".{digits}g" if not percent else f".{max(digits - 2, 1)}f"
    return (
        f"{iv.estimate * scale:{p}}{unit} [{iv.low * scale:{p}}, {iv.high * scale:{p}}]"
    )


def summarise(
    rows: Iterable[Mapping[str, Any]], by: Sequence[str], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """Group per-seed rows by the ``by`` columns; each metric becomes mean, low, high (95%)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    out = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(by, key, strict=True))
        entry["n_seeds"] = len(members)
        for metric in metrics:
            iv = interval([m[metric] for m in members], share=metric in SHARES)
            entry[metric] = iv.estimate
            entry[f"{metric}_low"] = iv.low
            entry[f"{metric}_high"] = iv.high
        out.append(entry)
    return out


def select(rows: Iterable[Mapping[str, Any]], **where: Any) -> list[Mapping[str, Any]]:
    """Rows whose columns equal every ``where`` value."""
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def errorbars(ax: Any, rows: Sequence[Mapping[str, Any]], x: str, metric: str, **style: Any) -> None:
    """Plot a summarised metric against ``x`` with its 95% interval as error bars."""
    rows = sorted(rows, key=lambda r: r[x])
    xs = np.array([r[x] for r in rows], dtype=float)
    ys = np.array([r[metric] for r in rows], dtype=float)
    lo = ys - np.array([r[f"{metric}_low"] for r in rows], dtype=float)
    hi = np.array([r[f"{metric}_high"] for r in rows], dtype=float) - ys
    ax.errorbar(xs, ys, yerr=[lo, hi], capsize=2, marker="o", markersize=3, linewidth=1, **style)


def figure(n_panels: int, width: float = 3.6, height: float = 3.0) -> tuple[Any, np.ndarray]:
    """A row of small panels (the lab's plots stay a few tens of KB each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False,
                             layout="constrained")
    return fig, axes[0]


def caption(fig: Any, title: str, seeds: int) -> None:
    fig.suptitle(f"{title} — mean ± 95% CI over {seeds} seeds, {SHARED_MACHINE}", fontsize=8)
