"""Theory curves and the lab's shared measures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engram import codes
from engram.ca3 import AttractorMemory
from engram.ca3 import theory as theory
from engram.ca3.experiments.measure import crossing, nearest_neighbour, recall


def test_mceliece_limits_follow_their_formulas():
    assert theory.all_exact_limit(1000) == pytest.approx(1000 / (4 * math.log(1000)))
    assert theory.most_exact_limit(1000) == pytest.approx(2 * theory.all_exact_limit(1000))
    with pytest.raises(ValueError, match="n_units"):
        theory.all_exact_limit(1)


def test_ags_retrieval_overlap_vanishes_above_alpha_c():
    m = theory.retrieval_overlap(np.array([0.01, 0.1, 0.13, 0.15, 0.3]))
    assert m[0] > 0.9999 and 0.99 < m[1] < 1.0 and 0.96 < m[2] < m[1]
    assert m[3] == 0.0 and m[4] == 0.0
    # the notebook's 8,000 / 900 network: about 17 wrong units in the retrieval state
    assert 15 < theory.retrieval_error_fraction(900 / 8000)[0] * 8000 < 20


def test_sparse_capacity_grows_as_coding_level_falls():
    values = theory.sparse_capacity(np.array([0.01, 0.05, 0.2]))
    assert np.all(np.diff(values) < 0)
    assert theory.sparse_capacity(0.05) == pytest.approx(1 / (0.1 * abs(math.log(0.05))))


def test_fixed_point_share_matches_a_direct_count(rng):
    n, p = 200, 20
    counts = []
    for _ in range(30):
        patterns = codes.random_bipolar(p, n, rng)
        memory = AttractorMemory(n).store(patterns)
        out = memory.complete_batch(patterns)
        counts.append(np.mean(out.converged & (out.iterations == 1)))
    assert np.mean(counts) == pytest.approx(float(theory.fixed_point_share(n, p)), abs=0.12)


def test_crossing_interpolates_and_reports_bounds():
    x = np.array([0.1, 0.2, 0.3])
    assert crossing(x, np.array([1.0, 0.8, 0.2]), 0.5) == pytest.approx(0.25)
    assert crossing(x, np.array([1.0, 1.0, 0.9]), 0.5) == 0.3
    assert crossing(x, np.array([0.1, 0.0, 0.0]), 0.5) == 0.1


def test_nearest_neighbour_ignores_unknown_units(rng):
    patterns = codes.random_bipolar(10, 64, rng)
    cues = codes.partial_cue(patterns, 0.3, rng)
    assert np.array_equal(nearest_neighbour(cues, patterns, "bipolar"), np.arange(10))


def test_recall_scores_a_stored_pattern_as_recalled_and_not_spurious(rng):
    patterns = codes.random_sparse(8, 200, 0.05, rng)
    memory = AttractorMemory(200, code="sparse", sparsity=0.05).store(patterns)
    out = recall(memory, patterns, np.arange(8), patterns)
    assert out.recalled.all() and not out.spurious.any() and (out.hamming == 0).all()
