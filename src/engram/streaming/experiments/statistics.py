"""The tests behind every verdict: two-group comparisons through the toolkit's battery (one set
of column names), one-sample tests against the value-set level in the same columns, Holm over
each family, the power rules that fix seed counts, and escape counts."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.stats

from engram import stats
from engram.runs import compare as battery
from engram.streaming.experiments.design import MEMORIES, Config
from engram.streaming.experiments.hypotheses import main_family


def main_power(cfg: Config, pilot: dict[str, Any]) -> dict[str, Any]:
    """Seeds per condition from the pilot's Cohen's d, floored at the smallest effect of
    interest and capped by the budget (both stated before the main run)."""
    rows = []
    for h in main_family(cfg):
        a, b = pilot["pilot_accuracy"][h["a"]], pilot["pilot_accuracy"][h["b"]]
        with warnings.catch_warnings():  # 2-seed bootstraps are degenerate; only d is used
            warnings.simplefilter("ignore")
            d = stats.cohens_d(a, b, n_resamples=200).estimate
        # Effects beyond d = 4 need the minimum anyway (and statsmodels' solver fails there).
        target = min(max(abs(d), cfg.smallest_effect), 4.0) if np.isfinite(d) else 4.0
        need = stats.samples_for_power(target, power=cfg.power, alpha=cfg.alpha)
        rows.append(
            {"hypothesis": h["id"], "pilot_d": d, "powered_for_d": target, "n_needed": need}
        )
    needed = max(r["n_needed"] for r in rows)
    return {
        "rows": rows,
        "n_needed": needed,
        "n_seeds": int(min(cfg.max_seeds, max(cfg.min_seeds, needed))),
        "rule": (
            f"n = clip(max over hypotheses of samples_for_power(max(|pilot d|, "
            f"{cfg.smallest_effect})), {cfg.min_seeds}, {cfg.max_seeds}) at power "
            f"{cfg.power}, alpha {cfg.alpha}"
        ),
    }


def compare(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("a", "b")) -> dict[str, Any]:
    """Arm a against arm b through the comparison battery (``engram.runs.compare``): its row
    in the battery's columns (Welch p, permutation p, Cohen's d with a bootstrap interval),
    plus Cohen's h of the two mean accuracies."""
    samples = {names[0]: list(a), names[1]: list(b)}
    (row,) = battery(samples, [names], permutation=True)
    return {**row.row(), "h": stats.cohens_h(row.mean_a, row.mean_b)}


def compare_to_level(a: Sequence[float], level: float, name: str = "a") -> dict[str, Any]:
    """A one-sided one-sample t-test of mean(a) > ``level``, in the battery's columns."""
    x = np.asarray(a, dtype=float)
    ci = stats.mean_ci(x)
    spread = np.ptp(x) > 0
    if spread:
        test = scipy.stats.ttest_1samp(x, level, alternative="greater")
        statistic, p = float(test.statistic), float(test.pvalue)
    else:  # no spread: the t statistic is undefined, the answer is not
        statistic, p = float("nan"), 0.0 if x.mean() > level else 1.0
    return {
        "a": name,
        "b": f"level {level:g}",
        "n_a": int(x.size),
        "n_b": 0,
        "mean_a": float(x.mean()),
        "mean_b": level,
        "diff": float(x.mean() - level),
        "diff_low": ci.low - level,
        "diff_high": ci.high - level,
        "test": "one-sample",
        "statistic": statistic,
        "p": p,
        "p_holm": p,
        "significant": p < 0.05,
        "cohens_d": float((x.mean() - level) / x.std(ddof=1)) if spread else float("inf"),
        "d_low": float("nan"),
        "d_high": float("nan"),
        "p_perm": None,
        "h": stats.cohens_h(float(x.mean()), level),
    }


def compare_to(a: Sequence[float], b: Sequence[float] | None, level: float, names: tuple[str, str]) -> dict:
    """``compare(a, b)``, or with ``b`` None ``compare_to_level(a, level)``."""
    return compare(a, b, names) if b is not None else compare_to_level(a, level, names[0])


def correct_family(rows: list[dict[str, Any]], alpha: float) -> None:
    """Holm over the family's ``p`` (in place, before the rows are frozen): ``p_holm`` and
    ``significant`` then describe the whole family, not each pair alone."""
    if not rows:
        return
    reject, holm = stats.correct([r["p"] for r in rows], "holm", alpha)
    for r, rej, hp in zip(rows, reject, holm, strict=True):
        r.update(p_holm=float(hp), significant=bool(rej))


def holds(row: dict[str, Any]) -> bool:
    """A hypothesis's verdict: significant after Holm and, when directional, a positive diff."""
    return bool(row["significant"] and (row["diff"] > 0 or not row.get("directional", True)))


def binding(cfg: Config, by_condition: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Secondary family: does each trained memory beat the value-set level 1/n_pairs (what a
    model gets by knowing which values appeared, not their keys)? Above it, evicted *bindings*
    come back, not only evicted tokens. One-sided one-sample t-tests, Holm over the memories;
    full attention is tested the same way as a reference, outside the family."""
    level = 1.0 / cfg.n_pairs
    family = [m for m in MEMORIES if m in cfg.conditions]
    reference = ["full"] if "full" in cfg.conditions else []
    rows = []
    for c in [*family, *reference]:
        acc = np.asarray(by_condition[c], dtype=float)
        rows.append(
            {
                **compare_to_level(acc, level, c),
                "seeds_at_least_0.75": int((acc >= 0.75).sum()),
                "in_family": c in family,
            }
        )
    correct_family(rows[: len(family)], cfg.alpha)
    return rows


def escapes(a: list[float], b: list[float], threshold: float = 0.75) -> dict[str, Any]:
    """Seeds at ≥ ``threshold`` in each group and Fisher's exact test on those counts: with
    bimodal seeds, how often a memory escapes the 1/N plateau is the quantity that differs."""
    ka, kb = int(np.sum(np.asarray(a) >= threshold)), int(np.sum(np.asarray(b) >= threshold))
    table = [[ka, len(a) - ka], [kb, len(b) - kb]]
    return {
        "escaped_a": f"{ka}/{len(a)}",
        "escaped_b": f"{kb}/{len(b)}",
        "fisher_p": float(scipy.stats.fisher_exact(table).pvalue),
    }

