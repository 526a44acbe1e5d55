"""The tests behind every verdict: two-group comparisons, one-sample tests against the value-set
level, Holm/BH corrections, the power rules that fix seed counts, and escape counts."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.stats

from engram import stats
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


def compare(a: list[float], b: list[float]) -> dict[str, Any]:
    """Welch and permutation p, Cohen's d with a bootstrap interval and Cohen's h of a vs b."""
    same = np.allclose(a, a[0]) and np.allclose(b, b[0]) and np.isclose(a[0], b[0])
    welch = stats.welch_test(a, b) if not same else stats.TestResult("welch", 0.0, 1.0)
    perm = stats.permutation_test(a, b, n_resamples=2000)
    d = stats.cohens_d(a, b, n_resamples=1000)
    return {
        "mean_a": float(np.mean(a)),
        "mean_b": float(np.mean(b)),
        "diff": float(np.mean(a) - np.mean(b)),
        "welch_p": welch.p_value,
        "perm_p": perm.p_value,
        "d": d.estimate,
        "d_low": d.low,
        "d_high": d.high,
        "h": stats.cohens_h(float(np.mean(a)), float(np.mean(b))),
    }


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
        ci = stats.mean_ci(acc)
        if len(acc) > 1 and np.ptp(acc) > 0:
            p = float(scipy.stats.ttest_1samp(acc, level, alternative="greater").pvalue)
        else:  # no spread: the t statistic is undefined, the answer is not
            p = 0.0 if acc.mean() > level else 1.0
        rows.append(
            {
                "condition": c,
                "n": len(acc),
                "accuracy": ci.estimate,
                "t_low": ci.low,
                "t_high": ci.high,
                "value_set_level": level,
                "p_greater": p,
                "seeds_at_least_0.75": int((acc >= 0.75).sum()),
                "in_family": c in family,
            }
        )
    if family:
        reject, holm = stats.correct(
            [r["p_greater"] for r in rows[: len(family)]], "holm", cfg.alpha
        )
        for r, rej, hp in zip(rows, reject, holm, strict=False):
            r.update(holm_p=float(hp), binding_shown=bool(rej))
    return rows


def compare_to(a: list[float], b: list[float] | None, level: float) -> dict[str, Any]:
    """``compare(a, b)``, or with ``b`` None a one-sided one-sample t-test of a against ``level``."""
    if b is None:  # one-sample, one-sided against the value-set level
        x = np.asarray(a, dtype=float)
        if np.ptp(x) > 0:
            p = float(scipy.stats.ttest_1samp(x, level, alternative="greater").pvalue)
        else:
            p = 0.0 if x.mean() > level else 1.0
        return {
            "mean_a": float(x.mean()),
            "mean_b": level,
            "diff": float(x.mean() - level),
            "welch_p": p,
            "perm_p": float("nan"),
            "d": float((x.mean() - level) / x.std(ddof=1)) if np.ptp(x) > 0 else float("inf"),
            "d_low": float("nan"),
            "d_high": float("nan"),
            "h": stats.cohens_h(float(x.mean()), level),
        }
    return compare(a, b)


def correct_family(rows: list[dict], alpha: float) -> None:
    """Add Holm and BH p-values and the verdict to each row (in place, before the rows are frozen)."""
    if not rows:
        return
    reject, holm = stats.correct([r["welch_p"] for r in rows], "holm", alpha)
    _, bh = stats.correct([r["welch_p"] for r in rows], "fdr_bh", alpha)
    for r, rej, hp, bp in zip(rows, reject, holm, bh, strict=True):
        r.update(
            holm_p=float(hp),
            bh_p=float(bp),
            supported=bool(rej and (r["diff"] > 0 or not r.get("directional", False))),
        )


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

