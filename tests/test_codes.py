import numpy as np
import pytest
import torch

from engram import codes


def test_random_sparse_has_exactly_k_active_units(rng):
    patterns = codes.random_sparse(50, 768, 0.05, rng)
    assert set(np.unique(patterns)) == {0, 1}
    assert codes.active_count(768, 0.05) == 38
    assert np.all(patterns.sum(axis=1) == 38)


def test_random_bipolar_is_balanced(rng):
    patterns = codes.random_bipolar(100, 500, rng)
    assert set(np.unique(patterns)) == {-1, 1}
    assert abs(patterns.mean()) < 0.02


def test_orthogonal_patterns_are_mutually_orthogonal(rng):
    patterns = codes.orthogonal_bipolar(20, 64, rng).astype(int)
    gram = patterns @ patterns.T
    assert np.array_equal(gram, 64 * np.eye(20, dtype=int))


def test_orthogonal_needs_power_of_two(rng):
    with pytest.raises(ValueError, match="n_units"):
        codes.orthogonal_bipolar(4, 100, rng)


def test_correlated_patterns_share_their_prototype(rng):
    patterns = codes.correlated_bipolar(40, 1000, 1, 0.1, rng).astype(float)
    mean_overlap = (patterns @ patterns.T / 1000)[np.triu_indices(40, 1)].mean()
    assert mean_overlap == pytest.approx(0.64, abs=0.05)


def test_flip_bits_flips_exactly_n(rng):
    pattern = codes.random_bipolar(3, 200, rng)
    noisy = codes.flip_bits(pattern, 17, rng)
    assert np.all((noisy != pattern).sum(axis=1) == 17)


def test_flip_bits_keeps_sparse_activity(rng):
    pattern = codes.random_sparse(5, 400, 0.05, rng)
    noisy = codes.flip_bits(pattern, 6, rng)
    assert np.all(noisy.sum(axis=1) == pattern.sum(axis=1))
    assert np.all((noisy != pattern).sum(axis=1) == 6)


def test_partial_cue_keeps_fraction_of_active_units(rng):
    pattern = codes.random_sparse(4, 768, 0.05, rng)
    cue = codes.partial_cue(pattern, 0.3, rng)
    assert np.all(cue.sum(axis=1) == round(0.3 * 38))
    assert np.all(cue <= pattern)


def test_partial_bipolar_cue_marks_unknown_as_zero(rng):
    pattern = codes.random_bipolar(2, 100, rng)
    cue = codes.partial_cue(pattern, 0.4, rng)
    known = cue != 0
    assert np.all(known.sum(axis=1) == 40)
    assert np.array_equal(cue[known], pattern[known])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_kwta_selects_the_k_largest(backend, rng):
    x = rng.standard_normal((6, 300)).astype(np.float32)
    expected = np.zeros_like(x, dtype=np.int8)
    np.put_along_axis(expected, np.argsort(-x, axis=1)[:, :15], 1, axis=1)
    got = codes.kwta(torch.from_numpy(x) if backend == "torch" else x, 15)
    got = got.numpy() if backend == "torch" else got
    assert np.array_equal(got, expected)


def test_kwta_rejects_k_out_of_range():
    with pytest.raises(ValueError, match="k"):
        codes.kwta(np.zeros(10), 11)


def test_sparsity_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="sparsity"):
        codes.active_count(100, 0.0)
    with pytest.raises(ValueError, match="sparsity"):
        codes.active_count(100, 0.9)
