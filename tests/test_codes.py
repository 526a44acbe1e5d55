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


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_kwta_ties_go_to_the_lower_index(backend):
    x = np.array([[0, 2, 1, 2, 2, 0, 2, 1], [1, 1, 1, 1, 1, 1, 1, 1]], dtype=np.float32)
    got = codes.kwta(torch.from_numpy(x) if backend == "torch" else x, 3)
    got = got.numpy() if backend == "torch" else got
    np.testing.assert_array_equal(got, [[0, 1, 0, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_winners_come_largest_first_then_by_index_as_a_stable_full_sort_would(backend, rng):
    x = rng.integers(0, 6, size=(40, 30)).astype(np.float32)  # many ties
    got = codes.winners(torch.from_numpy(x) if backend == "torch" else x, 7)
    got = got.numpy() if backend == "torch" else got
    np.testing.assert_array_equal(got, np.argsort(-x, axis=1, kind="stable")[:, :7])


def test_kwta_keeps_leading_axes_and_integer_inputs():
    x = np.arange(24, dtype=np.int8).reshape(2, 3, 4)
    assert codes.kwta(x, 1)[..., -1].all() and codes.kwta(x, 1).sum() == 6


def test_winners_refuse_nan():
    with pytest.raises(ValueError, match="x: contains NaN"):
        codes.winners(np.array([1.0, np.nan, 0.0]), 1)


@pytest.mark.parametrize("code", codes.CODES)
def test_overlap_is_the_same_measure_for_numpy_and_torch(code, rng):
    patterns = codes.random_sparse(5, 60, 0.1, rng) if code == "sparse" else codes.random_bipolar(5, 60, rng)
    states = codes.flip_bits(patterns, 4, rng)
    expected = codes.overlap(states, patterns, code)
    got = codes.overlap(torch.from_numpy(states).float(), torch.from_numpy(patterns).float(), code)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    assert np.allclose(np.diag(codes.overlap(patterns, patterns, code)), 1.0)


def test_overlap_names_a_bad_code():
    with pytest.raises(ValueError, match="code: expected one of 'bipolar', 'sparse', got 'dense'"):
        codes.overlap(np.ones(3), np.ones((1, 3)), "dense")


def test_noisy_partial_cues_know_a_share_of_dimensions_and_add_scaled_noise(rng):
    vectors = rng.standard_normal((400, 64)).astype(np.float32)
    cues, known = codes.noisy_partial_cues(vectors, (0.3, 0.7), 0.0, rng)
    assert known.any(1).all() and 0.3 < known.mean() < 0.7
    np.testing.assert_array_equal(cues, vectors)  # no noise: the vectors themselves
    noisy, _ = codes.noisy_partial_cues(vectors, (1.0, 1.0), 0.5, rng)
    rms = np.sqrt((vectors**2).mean(1))
    assert np.std((noisy - vectors) / rms[:, None]) == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep": (0.5, 0.2)}, "keep: expected .* low ≤ high"),
        ({"keep": (0.5, 1.2)}, r"keep: expected a value in \[0, 1\], got 1.2"),
        ({"noise": -1.0}, "noise: expected a number ≥ 0, got -1.0"),
        ({"vectors": np.ones(4)}, r"vectors: expected shape \(n, d\)"),
    ],
)
def test_noisy_partial_cues_name_bad_arguments(kwargs, match, rng):
    arguments = {"vectors": np.ones((2, 4)), "keep": (0.2, 0.5), "noise": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        codes.noisy_partial_cues(arguments["vectors"], arguments["keep"], arguments["noise"], rng)


def test_kwta_takes_read_only_arrays_without_a_warning(recwarn):
    x = np.arange(5.0)
    x.flags.writeable = False
    np.testing.assert_array_equal(codes.kwta(x, 2), [0, 0, 0, 1, 1])
    assert not recwarn.list
