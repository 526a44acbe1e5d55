"""AttractorMemory as a user sees it: storing, completing, the CA1 gate, monitoring, saving."""

import json
import warnings

import numpy as np
import pytest
import torch

from engram import codes, hebb
from engram.ca3 import AttractorMemory, reference


@pytest.fixture(scope="module")
def sparse_memory():
    """The benchmark's setting: 768 units, 5% sparse, 100 stored patterns."""
    gen = np.random.default_rng(7)
    patterns = codes.random_sparse(100, 768, 0.05, gen)
    memory = AttractorMemory(768, code="sparse", sparsity=0.05)
    memory.store(patterns)
    return memory, patterns


@pytest.mark.parametrize(("code", "rule"), [("bipolar", "hebbian"), ("bipolar", "storkey"),
                                            ("bipolar", "pseudoinverse"), ("sparse", "covariance"),
                                            ("sparse", "pseudoinverse")])
def test_incremental_store_equals_storing_at_once(code, rule, rng):
    make = (lambda: codes.random_sparse(12, 128, 0.1, rng)) if code == "sparse" else (
        lambda: codes.random_bipolar(12, 128, rng))
    patterns = make()
    at_once = AttractorMemory(128, code=code, sparsity=0.1, rule=rule).store(patterns)
    one_by_one = AttractorMemory(128, code=code, sparsity=0.1, rule=rule)
    one_by_one.store(patterns[0])
    one_by_one.store(patterns[1:5])
    for pattern in patterns[5:]:
        one_by_one.store(pattern)
    assert one_by_one.n_stored == 12
    assert torch.allclose(at_once.weights, one_by_one.weights, atol=1e-5)


def test_hebbian_weights_are_the_outer_product_over_n(rng):
    patterns = codes.random_bipolar(5, 64, rng)
    memory = AttractorMemory(64).store(patterns)
    x = patterns.astype(np.float32)
    expected = x.T @ x / 64
    np.fill_diagonal(expected, 0)
    assert np.allclose(memory.weights.numpy(), expected)


def test_pseudoinverse_rule_completes_correlated_patterns(rng):
    patterns = codes.correlated_bipolar(16, 256, 2, 0.15, rng)
    cues = codes.flip_bits(patterns, 12, rng)
    hebbian = AttractorMemory(256).store(patterns).complete_batch(cues)
    better = AttractorMemory(256, rule="pseudoinverse").store(patterns).complete_batch(cues)
    exact = np.all(better.states == patterns, axis=1).mean()
    assert exact >= 0.9
    assert exact > np.all(hebbian.states == patterns, axis=1).mean() + 0.3


def test_storkey_rule_stores_more_random_patterns_than_hebbian(rng):
    patterns = codes.random_bipolar(32, 128, rng)  # α = 0.25, above the Hebbian limit
    hebbian = AttractorMemory(128).store(patterns).complete_batch(patterns)
    storkey = AttractorMemory(128, rule="storkey").store(patterns).complete_batch(patterns)
    fixed = lambda result: np.all(result.states == patterns, axis=1).mean()  # noqa: E731
    assert fixed(storkey) >= 0.9
    assert fixed(storkey) > fixed(hebbian) + 0.3


def test_sparse_partial_cue_completes_to_its_pattern(sparse_memory, rng):
    memory, patterns = sparse_memory
    result = memory.complete(codes.partial_cue(patterns[17], 0.3, rng)[0])
    assert result.converged and result.nearest == 17
    assert result.overlap == 1.0 and np.array_equal(result.state, patterns[17])
    assert result.iterations <= 7 and len(result.energy) == result.iterations


@pytest.mark.parametrize("update", ["sync", "async"])
def test_bipolar_noisy_cue_completes(update, rng):
    memory = AttractorMemory(512, update=update)
    patterns = codes.random_bipolar(20, 512, rng)
    memory.store(patterns)
    result = memory.complete(codes.flip_bits(patterns[3], 80, rng)[0])
    assert result.converged and result.nearest == 3 and result.overlap == 1.0
    assert result.accepted and np.array_equal(result.answer, patterns[3])


@pytest.mark.parametrize("keep", [0.3, 0.5, 1.0])
def test_gate_accepts_stored_pattern_cues(sparse_memory, keep):
    memory, patterns = sparse_memory
    gen = np.random.default_rng(11)
    cues = np.concatenate([codes.partial_cue(patterns, keep, gen) for _ in range(4)])
    result = memory.complete_batch(cues)
    assert result.accepted.mean() >= 0.95
    assert np.mean(result.nearest[result.accepted] == np.tile(np.arange(100), 4)[result.accepted]) == 1.0


def test_gate_rejects_random_cues_of_the_same_density(sparse_memory):
    memory, _ = sparse_memory
    gen = np.random.default_rng(12)
    cues = np.zeros((400, 768), dtype=np.int8)
    for row in cues:
        row[gen.choice(768, round(0.3 * 38), replace=False)] = 1
    result = memory.complete_batch(cues)
    assert 1 - result.accepted.mean() >= 0.95
    assert all(result[i].answer is None for i in np.flatnonzero(~result.accepted))


def test_gate_separates_bipolar_noisy_from_random_cues(rng):
    memory = AttractorMemory(512)
    patterns = codes.random_bipolar(30, 512, rng)
    memory.store(patterns)
    stored = memory.complete_batch(codes.flip_bits(np.repeat(patterns, 4, 0), 51, rng))
    with pytest.warns(RuntimeWarning, match="convergence rate"):  # random cues wander
        novel = memory.complete_batch(codes.random_bipolar(120, 512, rng))
    assert stored.accepted.mean() >= 0.95
    assert 1 - novel.accepted.mean() >= 0.95


def test_single_and_batched_gate_agree(sparse_memory, rng):
    memory, patterns = sparse_memory
    cues = codes.partial_cue(patterns[:20], 0.5, rng)
    batch = memory.complete_batch(cues)
    for i, cue in enumerate(cues):
        one = memory.complete(cue)
        if np.array_equal(one.state, batch.states[i]):
            assert one.nearest == batch.nearest[i]
            assert one.overlap_score == pytest.approx(batch.overlap_score[i], abs=1e-6)
            assert one.novelty == pytest.approx(batch.novelty[i], abs=1e-6)


def test_stats_histogram_and_rates_track_every_completion(rng):
    memory = AttractorMemory(256)
    patterns = codes.random_bipolar(10, 256, rng)
    memory.store(patterns)
    memory.complete_batch(codes.flip_bits(patterns, 20, rng))
    memory.complete(patterns[0])
    stats = memory.stats
    assert stats.completions == 11 == stats.iteration_histogram.sum()
    assert stats.convergence_rate == 1.0
    assert stats.mean_change_per_step > 0
    assert stats.as_dict()["energy_decrease_rate"] == 1.0
    stats.reset()
    assert stats.completions == 0


def test_low_convergence_rate_warns(rng):
    memory = AttractorMemory(200, max_iterations=1)
    patterns = codes.random_bipolar(40, 200, rng)
    memory.store(patterns)
    with pytest.warns(RuntimeWarning, match="below 90%"):
        memory.complete_batch(codes.flip_bits(patterns, 60, rng))
        memory.complete_batch(codes.flip_bits(patterns, 60, rng))


def test_async_energy_rise_warns_when_weights_are_broken(rng):
    memory = AttractorMemory(64, update="async")
    memory.store(codes.random_bipolar(3, 64, rng))
    memory.set_weights(rng.standard_normal((64, 64)).astype(np.float32))  # asymmetric
    with pytest.warns(RuntimeWarning, match="energy rose"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="convergence rate")
        for _ in range(20):
            memory.complete_batch(codes.random_bipolar(20, 64, rng))


@pytest.mark.parametrize("code", ["bipolar", "sparse"])
def test_save_and_load_round_trip_exactly(code, tmp_path, rng):
    sparse = code == "sparse"
    patterns = codes.random_sparse(9, 200, 0.1, rng) if sparse else codes.random_bipolar(9, 200, rng)
    memory = AttractorMemory(200, code=code, sparsity=0.1, rule="pseudoinverse", max_iterations=5,
                             threshold=0.6)
    memory.store(patterns)
    path = memory.save(tmp_path / "memory.safetensors")
    loaded = AttractorMemory.load(path)
    assert loaded.config() == memory.config()
    assert torch.equal(loaded.weights, memory.weights)
    assert torch.equal(loaded.patterns, memory.patterns)
    cue = codes.flip_bits(patterns[2], 6, rng)[0]
    assert np.array_equal(loaded.complete(cue).state, memory.complete(cue).state)
    assert [p.name for p in tmp_path.iterdir()] == ["memory.safetensors"]


def test_truncated_file_is_a_clear_error(tmp_path, rng):
    memory = AttractorMemory(64).store(codes.random_bipolar(3, 64, rng))
    path = memory.save(tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or foreign"):
        AttractorMemory.load(path)


def test_foreign_files_are_clear_errors(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a memory at all")
    with pytest.raises(ValueError, match="truncated or foreign"):
        AttractorMemory.load(junk)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(3)}, str(other))
    with pytest.raises(ValueError, match="not an Engram memory"):
        AttractorMemory.load(other)
    with pytest.raises(FileNotFoundError, match="path"):
        AttractorMemory.load(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------- bad input


def test_tuple_instead_of_a_size_is_a_type_error():
    n_units = 8,000  # the typo that motivated this check
    with pytest.raises(TypeError, match=r"n_units: expected a positive integer, got tuple \(8, 0\)"):
        AttractorMemory(n_units)
    with pytest.raises(TypeError):
        AttractorMemory(8,000)  # options are keyword-only


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"code": "dense"}, "code: expected one of"),
        ({"rule": "oja"}, "rule: expected one of"),
        ({"update": "parallel"}, "update: expected one of"),
        ({"code": "sparse", "sparsity": 0.0}, "sparsity"),
        ({"code": "sparse", "sparsity": 0.7}, "sparsity"),
        ({"code": "sparse", "k": 100}, "k: expected"),
        ({"code": "sparse", "k": 0}, "k: expected"),
        ({"rule": "covariance"}, "rule: 'covariance' is for sparse"),
        ({"code": "sparse", "rule": "storkey"}, "rule: 'storkey' is for bipolar"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"threshold": 1.5}, "threshold"),
        ({"prune": 1.0}, "prune"),
    ],
)
def test_bad_constructor_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttractorMemory(100, **kwargs)


def test_completing_with_nothing_stored_is_an_error():
    with pytest.raises(ValueError, match="nothing is stored"):
        AttractorMemory(10).complete(np.ones(10))


@pytest.mark.parametrize(
    ("code", "cue", "match"),
    [
        ("bipolar", np.ones(9), r"cue: expected shape \(10,\), got \(9,\)"),
        ("bipolar", np.ones((2, 10)), r"cue: expected shape \(10,\), got \(2, 10\)"),
        ("bipolar", np.r_[np.ones(9), np.nan], "takes values .* got nan"),
        ("bipolar", np.r_[np.ones(9), np.inf], "takes values .* got inf"),
        ("bipolar", np.r_[np.ones(9), 0.5], r"bipolar code takes values \{-1, 0, \+1\}.* got 0.5"),
        ("sparse", np.r_[np.ones(3), -np.ones(7)], r"sparse code takes values \{0, 1\}, got -1"),
        ("sparse", np.zeros(10), "no known"),
        ("bipolar", "1111111111", "cue: expected an array"),
    ],
)
def test_bad_cues_are_clear_errors(code, cue, match):
    memory = AttractorMemory(10, code=code, sparsity=0.2)
    memory.store(np.r_[np.ones(2), np.zeros(8)] if code == "sparse" else np.r_[np.ones(5), -np.ones(5)])
    with pytest.raises((ValueError, TypeError), match=match):
        memory.complete(cue)


def test_bad_patterns_and_batches_are_clear_errors():
    memory = AttractorMemory(10)
    with pytest.raises(ValueError, match=r"patterns: a bipolar code takes values \{-1, \+1\}, got 0"):
        memory.store(np.r_[np.ones(5), np.zeros(5)])
    with pytest.raises(ValueError, match=r"patterns: expected shape"):
        memory.store(np.ones((2, 11)))
    memory.store(np.r_[np.ones(5), -np.ones(5)])
    with pytest.raises(ValueError, match=r"cues: expected shape \(10,\) or \(B, 10\), got \(3, 4\)"):
        memory.complete_batch(np.ones((3, 4)))


def test_pruning_helper_is_used_by_the_memory(rng):
    memory = AttractorMemory(128, prune=0.5).store(codes.random_bipolar(40, 128, rng))
    kept = memory.weights != 0
    assert 0.3 <= float(kept.float().mean()) <= 0.5  # ties at the cut-off are dropped together
    dense = hebb.hebbian(torch.from_numpy(memory.patterns.numpy()))
    assert torch.equal(memory.weights[kept], dense[kept])
    assert dense[~kept].abs().max() <= dense[kept].abs().min()


def test_no_warning_in_normal_use(sparse_memory, rng):
    memory, patterns = sparse_memory
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        memory.complete_batch(codes.partial_cue(patterns, 0.5, rng))


def test_batches_from_several_threads_give_the_sequential_answers(sparse_memory, rng):
    from concurrent.futures import ThreadPoolExecutor

    memory, patterns = sparse_memory
    batches = [codes.partial_cue(patterns, 0.3, rng) for _ in range(6)]
    expected = [memory.complete_batch(b).states for b in batches]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda b: memory.complete_batch(b).states, batches))
    assert all(np.array_equal(e, g) for e, g in zip(expected, got, strict=True))


def test_a_saved_hebbian_memory_keeps_its_exact_ties_after_loading(tmp_path):
    gen = np.random.default_rng(1)
    patterns = codes.random_bipolar(100, 768, gen)
    cues = codes.partial_cue(patterns, 0.5, gen)
    memory = AttractorMemory(768).store(patterns)
    loaded = AttractorMemory.load(memory.save(tmp_path / "m.safetensors"))
    assert torch.equal(loaded.weights, memory.weights)
    with pytest.warns(RuntimeWarning, match="convergence rate"):
        before, after = memory.complete_batch(cues), loaded.complete_batch(cues)
    assert np.array_equal(before.states, after.states)
    assert np.array_equal(before.energy, after.energy, equal_nan=True)


def _flip_bits(path, load, digest, gen):
    """Load ``path`` with single-bit flips (500 in the header, 200 in the tensors): every load
    must fail naming the file, or give back exactly what was saved. Returns (tried, errors)."""
    original = path.read_bytes()
    header = 8 + int.from_bytes(original[:8], "little")
    positions = list(gen.choice(header * 8, min(header * 8, 500), replace=False)) + list(
        gen.choice(np.arange(header * 8, len(original) * 8), 200, replace=False))
    expected, errors = digest(load(path)), 0
    damaged = path.with_name("damaged.safetensors")
    for position in positions:
        data = bytearray(original)
        data[position // 8] ^= 1 << (position % 8)
        damaged.write_bytes(bytes(data))
        try:
            loaded = load(damaged)
        except ValueError as error:
            assert str(damaged) in str(error), error
            errors += 1
        else:
            assert digest(loaded) == expected, f"bit {position} loaded silently"
    return len(positions), errors


def test_every_bit_flip_in_a_memory_file_is_an_error_or_changes_nothing(tmp_path, rng):
    memory = AttractorMemory(32, max_iterations=5).store(codes.random_bipolar(3, 32, rng))
    path = memory.save(tmp_path / "m.safetensors")

    def digest(m):
        return (json.dumps(m.config()), m.weights.numpy().tobytes(), m.patterns.numpy().tobytes())

    tried, errors = _flip_bits(path, AttractorMemory.load, digest, rng)
    assert errors >= tried - 20  # only flips the format ignores may load, and only unchanged


def test_a_memory_file_written_before_checksums_still_loads(tmp_path, rng):
    from safetensors.torch import save_file

    memory = AttractorMemory(32).store(codes.random_bipolar(3, 32, rng))
    metadata = {"format": "engram.AttractorMemory", "version": "1",
                "config": json.dumps(memory.config())}  # what save wrote before checksums
    old = tmp_path / "old.safetensors"
    save_file({"weights": memory.weights, "patterns": memory.patterns}, str(old), metadata=metadata)
    loaded = AttractorMemory.load(old)
    assert torch.equal(loaded.weights, memory.weights)
    save_file({"weights": memory.weights, "patterns": memory.patterns}, str(old),
              metadata={**metadata, "sha2v6": "0"})  # a checksum key with a flipped bit
    with pytest.raises(ValueError, match="unknown metadata"):
        AttractorMemory.load(old)


# ---------------------------------------------------------------- weights stay in step


@pytest.mark.parametrize("rule", ["hebbian", "storkey"])
def test_assigning_the_weights_is_refused_instead_of_desyncing_the_kernels(rule, rng):
    memory = AttractorMemory(32, rule=rule).store(codes.random_bipolar(2, 32, rng))
    with pytest.raises(AttributeError, match="set_weights"):
        memory.weights = torch.zeros(32, 32)
    with pytest.raises(AttributeError, match="patterns: read-only"):
        memory.patterns = torch.zeros(1, 32, dtype=torch.int8)


@pytest.mark.parametrize("rule", ["hebbian", "storkey"])
def test_editing_the_returned_weights_changes_nothing(rule, rng):
    patterns = codes.random_bipolar(3, 64, rng)
    memory = AttractorMemory(64, rule=rule).store(patterns)
    before = memory.weights
    cue = codes.flip_bits(patterns[:1], 8, rng)[0]
    expected = memory.complete(cue).state.copy()
    memory.weights.zero_()
    memory.patterns.zero_()
    assert torch.equal(memory.weights, before)
    np.testing.assert_array_equal(memory.complete(cue).state, expected)


@pytest.mark.parametrize(("update", "device"), [("sync", "cpu"), ("async", "cpu")])
def test_set_weights_re_syncs_every_completion_path(update, device, rng):
    patterns = codes.random_bipolar(4, 48, rng)
    memory = AttractorMemory(48, update=update, device=device, max_iterations=6).store(patterns)
    replacement = hebb.hebbian(torch.from_numpy(-patterns[:2]))  # another pair of attractors
    memory.set_weights(replacement)
    assert torch.equal(memory.weights, replacement)
    cues = codes.flip_bits(-patterns[:2], 3, rng)
    for cue, target in zip(cues, -patterns[:2], strict=True):
        expected = reference.complete_sync(replacement.numpy(), cue, "bipolar", 48, 6).state
        if update == "sync":
            np.testing.assert_array_equal(memory.complete(cue).state, expected)
        np.testing.assert_array_equal(memory.complete_batch(cue[None]).states[0], target)


def test_set_weights_names_a_bad_matrix():
    memory = AttractorMemory(8)
    with pytest.raises(ValueError, match=r"weights: expected shape \(8, 8\), got \(8, 7\)"):
        memory.set_weights(torch.zeros(8, 7))
    with pytest.raises(ValueError, match="weights: expected a finite"):
        memory.set_weights(torch.full((8, 8), float("nan")))


# ---------------------------------------------------------------- results and vocabulary


def test_results_cannot_be_changed_after_construction(sparse_memory, rng):
    sparse_memory, patterns = sparse_memory
    batch = sparse_memory.complete_batch(codes.partial_cue(patterns[:3], 0.5, rng))
    one = sparse_memory.complete(codes.partial_cue(patterns[:1], 0.5, rng)[0])
    for array in (batch.states, batch.overlap_score, batch[0].state, one.state, one.energy):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    with pytest.raises(AttributeError):
        one.accepted = False


def test_recall_is_complete_under_the_common_name(sparse_memory, rng):
    sparse_memory, patterns = sparse_memory
    cues = codes.partial_cue(patterns[:4], 0.4, rng)
    assert AttractorMemory.recall is AttractorMemory.complete
    assert AttractorMemory.recall_batch is AttractorMemory.complete_batch
    np.testing.assert_array_equal(sparse_memory.recall(cues[0]).state, sparse_memory.complete(cues[0]).state)
    batch = sparse_memory.recall_batch(cues)
    np.testing.assert_array_equal(batch.states, sparse_memory.complete_batch(cues).states)


def test_a_completed_state_fed_back_as_a_cue_completes_to_itself(sparse_memory, rng):
    sparse_memory, patterns = sparse_memory
    state = sparse_memory.complete(codes.partial_cue(patterns[:1], 0.5, rng)[0]).state
    again = sparse_memory.complete(state)  # a read-only array is accepted as input
    np.testing.assert_array_equal(again.state, state)
