"""The comparison battery: Welch or paired t, Holm over the family, difference and Cohen's d
with intervals, one set of column names; checked against scipy directly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp

from engram.runs import COLUMNS, against, compare


def _samples() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.normal(0.5, 0.05, 8)
    # "same" holds base's values in another order (equal means); "better" is 0.2 above
    return {"base": base, "same": rng.permutation(base), "better": rng.normal(0.7, 0.05, 8)}


def test_welch_rows_match_scipy_and_holm_adjusts_over_the_family():
    s = _samples()
    rows = against(s, "base")
    assert [(r.a, r.b) for r in rows] == [("same", "base"), ("better", "base")]
    raw = [sp.ttest_ind(s[r.a], s["base"], equal_var=False).pvalue for r in rows]
    assert [r.p for r in rows] == pytest.approx(raw)
    smaller, larger = sorted(raw)
    assert sorted(r.p_holm for r in rows) == pytest.approx([2 * smaller, max(2 * smaller, larger)])
    better = rows[1]
    assert better.significant and not rows[0].significant
    assert better.diff == pytest.approx(s["better"].mean() - s["base"].mean())
    assert better.diff_low < better.diff < better.diff_high
    assert better.d_low < better.cohens_d < better.d_high and better.cohens_d > 2
    assert tuple(better.row()) == COLUMNS


def test_paired_rows_test_the_per_seed_differences():
    s = _samples()
    (row,) = compare(s, [("better", "base")], paired=True)
    assert row.test == "paired"
    assert row.p == pytest.approx(sp.ttest_rel(s["better"], s["base"]).pvalue)
    ci = sp.t.interval(0.95, 7, loc=(s["better"] - s["base"]).mean(),
                       scale=sp.sem(s["better"] - s["base"]))
    assert (row.diff_low, row.diff_high) == pytest.approx(ci)


def test_arms_without_spread_are_answered_not_undefined():
    (differ, same) = compare({"a": [1.0, 1.0], "b": [0.0, 0.0], "c": [1.0, 1.0]},
                             [("a", "b"), ("a", "c")])
    assert differ.p == 0.0 and differ.significant
    assert same.p == 1.0 and not same.significant


def test_permutation_p_on_request():
    (row,) = compare(_samples(), [("better", "base")], permutation=True)
    assert row.p_perm is not None and row.p_perm < 0.01


def test_bad_families_are_refused_by_name():
    with pytest.raises(ValueError, match="arm 'nope' is not one of"):
        compare(_samples(), [("nope", "base")])
    with pytest.raises(ValueError, match=r"samples\['a'\]: expected at least 2 finite"):
        compare({"a": [1.0], "b": [1.0, 2.0]}, [("a", "b")])
    with pytest.raises(ValueError, match="paired with 'a'"):
        compare({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0]}, [("a", "b")], paired=True)
    with pytest.raises(ValueError, match="reference: expected one of"):
        against(_samples(), "full")
    with pytest.raises(ValueError, match="alpha"):
        compare(_samples(), [("same", "base")], alpha=1.5)
