"""The fast kernels against the slow reference, and the dynamics' promises."""

import numpy as np
import pytest
import torch

from engram import codes
from engram.ca3 import AttractorMemory, dynamics, reference, single
from engram.ca3 import memory as memory_module


def _random_symmetric(n: int, rng: np.random.Generator) -> np.ndarray:
    """Tie-free symmetric weights with a zero diagonal: any kernel disagreement is a bug."""
    w = rng.standard_normal((n, n)).astype(np.float32)
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0)
    return w


@pytest.mark.parametrize("code", ["bipolar", "sparse"])
def test_compiled_single_cue_matches_reference(code, rng):
    n, k, steps = 96, 9, 7
    w = _random_symmetric(n, rng)
    patterns_t = np.ones((n, 1), dtype=np.float32)
    for _ in range(40):
        if code == "sparse":
            cue = np.zeros(n, dtype=np.float32)
            cue[rng.choice(n, 4, replace=False)] = 1
        else:
            cue = rng.choice([-1.0, 0.0, 1.0], size=n).astype(np.float32)
        expected = reference.complete_sync(w, cue, code, k, steps)
        state = np.empty(n, dtype=np.int8)
        energy = np.empty(steps, dtype=np.float32)
        if code == "sparse":
            out = single.complete_sparse(w, patterns_t, np.ones(1, np.float32), cue, k, steps, state, energy)
        else:
            out = single.complete_bipolar(w, patterns_t, cue, steps, state, energy, np.empty(0), 1.0)
        iterations, converged, cycled = out[:3]
        assert np.array_equal(state, expected.state)
        assert (iterations, converged, cycled) == (expected.iterations, expected.converged, expected.cycled)
        assert np.allclose(energy[:iterations], expected.energy, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("code", ["bipolar", "sparse"])
def test_batched_sync_matches_reference(code, rng):
    n, k, steps = 80, 8, 7
    w = _random_symmetric(n, rng)
    if code == "sparse":
        cues = np.zeros((30, n), dtype=np.float32)
        for row in cues:
            row[rng.choice(n, 5, replace=False)] = 1
    else:
        cues = rng.choice([-1.0, 1.0], size=(30, n)).astype(np.float32)
    out = dynamics.run_sync(torch.from_numpy(w), torch.from_numpy(cues), code, k, steps)
    for i, cue in enumerate(cues):
        expected = reference.complete_sync(w, cue, code, k, steps)
        assert np.array_equal(out.states[i].numpy(), expected.state)
        assert int(out.iterations[i]) == expected.iterations
        assert bool(out.converged[i]) == expected.converged
        assert bool(out.cycled[i]) == expected.cycled
        trace = out.energy[i, : expected.iterations].numpy()
        assert np.allclose(trace, expected.energy, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("code", ["bipolar", "sparse"])
def test_batched_async_matches_reference_with_the_same_orders(code, rng):
    n, k, steps, b = 48, 6, 7, 12
    w = _random_symmetric(n, rng)
    if code == "sparse":
        cues = np.zeros((b, n), dtype=np.float32)
        for row in cues:
            row[rng.choice(n, 3, replace=False)] = 1
    else:
        cues = rng.choice([-1.0, 0.0, 1.0], size=(b, n)).astype(np.float32)
    orders = np.stack([np.stack([rng.permutation(n) for _ in range(b)]) for _ in range(steps)])
    out = dynamics.run_async(
        torch.from_numpy(w), torch.from_numpy(cues), code, k, steps, orders=torch.from_numpy(orders)
    )
    for i, cue in enumerate(cues):
        expected = reference.complete_async(w, cue, code, k, steps, orders[:, i])
        assert np.array_equal(out.states[i].numpy(), expected.state)
        assert int(out.iterations[i]) == expected.iterations
        assert bool(out.converged[i]) == expected.converged
        trace = out.energy[i, : expected.iterations].numpy()
        assert np.allclose(trace, expected.energy, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("code", ["bipolar", "sparse"])
def test_async_energy_never_rises(code, rng):
    n = 256
    if code == "sparse":
        memory = AttractorMemory(n, code="sparse", sparsity=0.1, update="async")
        patterns = codes.random_sparse(40, n, 0.1, rng)
        cues = codes.flip_bits(patterns, 10, rng)
    else:
        memory = AttractorMemory(n, update="async")
        patterns = codes.random_bipolar(45, n, rng)  # α ≈ 0.18: many cues wander
        cues = codes.flip_bits(patterns, 60, rng)
    memory.store(patterns)
    result = memory.complete_batch(cues)
    steps = np.diff(result.energy, axis=1)
    steps = steps[~np.isnan(steps)]
    assert steps.size > 0
    assert np.all(steps <= 1e-3)
    assert memory.stats.energy_rises == 0


def test_sync_energy_rises_are_counted_not_hidden(rng):
    memory = AttractorMemory(256, code="sparse", sparsity=0.05)
    patterns = codes.random_sparse(150, 256, 0.05, rng)
    memory.store(patterns)
    with pytest.warns(RuntimeWarning, match="convergence rate"):
        result = memory.complete_batch(codes.flip_bits(patterns, 8, rng))
    diffs = np.diff(result.energy, axis=1)
    before = result.energy[:, :-1]
    valid = ~np.isnan(diffs)
    counted = np.count_nonzero(diffs[valid] > 1e-5 * np.abs(before[valid]) + 1e-6)
    assert memory.stats.energy_rises == counted
    assert memory.stats.energy_steps == int(valid.sum())


def test_energy_trace_matches_the_states_energy(rng):
    memory = AttractorMemory(200)
    patterns = codes.random_bipolar(10, 200, rng)
    memory.store(patterns)
    result = memory.complete(codes.flip_bits(patterns[0], 30, rng)[0])
    assert len(result.energy) == result.iterations
    assert result.energy[-1] == pytest.approx(memory.energy(result.state), rel=1e-5)


def test_theta_deadline_bounds_iterations(rng):
    memory = AttractorMemory(300, max_iterations=2)
    patterns = codes.random_bipolar(60, 300, rng)  # over capacity: slow, wandering dynamics
    memory.store(patterns)
    with pytest.warns(RuntimeWarning, match="convergence rate"):
        result = memory.complete_batch(codes.flip_bits(patterns, 90, rng))
    assert result.iterations.max() <= 2
    assert not result.converged[result.iterations == 2].all()
    assert memory.stats.iteration_histogram[3:].sum() == 0


def test_stored_pattern_is_a_fixed_point_after_one_update(rng):
    memory = AttractorMemory(400)
    patterns = codes.random_bipolar(10, 400, rng)
    memory.store(patterns)
    result = memory.complete(patterns[4])
    assert result.converged and result.iterations == 1
    assert np.array_equal(result.state, patterns[4])


@pytest.mark.parametrize("path", ["single", "batch"])
def test_two_cycle_is_reported_as_not_converged(path):
    memory = AttractorMemory(2)
    memory.store(np.array([1, -1]))  # W12 = −½: the state (1, 1) flips to (−1, −1) and back
    cue = np.array([1, 1])
    result = memory.complete(cue) if path == "single" else memory.complete_batch(cue[None])[0]
    assert result.cycled and not result.converged
    assert result.iterations == 2
    assert memory.stats.cycles == 1


def test_batched_path_drops_converged_cues_and_agrees_with_single(rng):
    memory = AttractorMemory(768, code="sparse", sparsity=0.05)
    patterns = codes.random_sparse(100, 768, 0.05, rng)
    memory.store(patterns)
    cues = codes.partial_cue(patterns, 0.3, rng)
    batch = memory.complete_batch(cues)
    singles = [memory.complete(c) for c in cues]
    agree = np.mean([np.array_equal(s.state, batch.states[i]) for i, s in enumerate(singles)])
    assert agree >= 0.97  # only exact field ties may be broken differently by torch.topk
    assert len(set(batch.iterations.tolist())) > 1  # cues stopped at different steps


def test_pruned_weights_use_a_sparse_matrix_and_still_complete(rng):
    memory = AttractorMemory(512, prune=0.92)
    patterns = codes.random_bipolar(8, 512, rng)
    memory.store(patterns)
    assert memory._product_weights.layout == torch.sparse_csr
    result = memory.complete_batch(codes.flip_bits(patterns, 50, rng))
    assert np.mean(result.nearest == np.arange(8)) == 1.0
    assert np.mean(result.overlap) > 0.95


devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", devices)
@pytest.mark.parametrize("update", ["sync", "async"])
def test_completion_runs_on_the_given_device(device, update, rng):
    memory = AttractorMemory(512, code="sparse", sparsity=0.05, update=update, device=device)
    patterns = codes.random_sparse(30, 512, 0.05, rng)
    memory.store(patterns)
    assert memory.weights.device.type == device
    result = memory.complete_batch(codes.partial_cue(patterns, 0.4, rng))
    assert np.mean(result.nearest == np.arange(30)) == 1.0
    assert result.converged.mean() > 0.95


def test_cpu_batch_kernel_matches_single_cue_kernel_for_bipolar_codes(rng):
    memory = AttractorMemory(300)
    patterns = codes.random_bipolar(40, 300, rng)  # α ≈ 0.13: long, varied trajectories
    memory.store(patterns)
    cues = np.concatenate([codes.flip_bits(patterns, 60, rng), codes.partial_cue(patterns, 0.4, rng)])
    with pytest.warns(RuntimeWarning, match="convergence rate"):
        batch = memory.complete_batch(cues)
    for i, cue in enumerate(cues):
        one = memory.complete(cue)
        assert np.array_equal(one.state, batch.states[i])
        assert (one.iterations, one.converged, one.cycled) == (
            batch.iterations[i], batch.converged[i], batch.cycled[i])
        assert np.allclose(one.energy, batch.energy[i, : one.iterations], rtol=1e-5)


def _hebbian_tie_setting():
    """768 units, 100 Hebbian patterns, 120 half cues: many units meet an exact field of 0."""
    gen = np.random.default_rng(1)
    patterns = codes.random_bipolar(100, 768, gen)
    cues = codes.partial_cue(np.concatenate([patterns, patterns[:20]]), 0.5, gen)
    counts = patterns.astype(np.int64).T @ patterns.astype(np.int64)
    np.fill_diagonal(counts, 0)
    return patterns, cues, counts.astype(np.float64)  # integer weights: every field exact


def test_hebbian_ties_follow_the_documented_rule_in_every_sync_path():
    patterns, cues, counts = _hebbian_tie_setting()
    assert np.mean([np.any(counts @ cue == 0) for cue in cues]) > 0.2  # exact ties are common
    memory = AttractorMemory(768).store(patterns)
    expected = [reference.complete_sync(counts, cue, "bipolar", 0, 7) for cue in cues]
    torch_path = AttractorMemory(768).store(patterns)
    torch_path._single_path = False  # the path CUDA takes, here on the CPU
    with pytest.warns(RuntimeWarning, match="convergence rate"):  # α = 0.13, half cues
        batch = memory.complete_batch(cues)
        on_torch = torch_path.complete_batch(cues)
    for i, (cue, spec) in enumerate(zip(cues, expected, strict=True)):
        assert np.array_equal(memory.complete(cue).state, spec.state), f"single cue {i}"
        assert np.array_equal(batch.states[i], spec.state), f"batch cue {i}"
        assert np.array_equal(on_torch.states[i], spec.state), f"torch cue {i}"
        assert batch.iterations[i] == spec.iterations
        assert np.allclose(batch.energy[i, : spec.iterations], np.array(spec.energy) / 768,
                           rtol=1e-5)


def test_hebbian_ties_follow_the_documented_rule_in_the_async_path():
    patterns, cues, counts = _hebbian_tie_setting()
    cues, steps = cues[:12], 3
    gen = np.random.default_rng(2)
    orders = np.stack([np.stack([gen.permutation(768) for _ in cues]) for _ in range(steps)])
    memory = AttractorMemory(768, update="async", max_iterations=steps).store(patterns)
    out = memory.complete_batch(cues, orders=torch.from_numpy(orders))
    for i, cue in enumerate(cues):
        spec = reference.complete_async(counts, cue, "bipolar", 0, steps, orders[:, i])
        assert np.array_equal(out.states[i], spec.state), f"cue {i}"


def test_torch_path_sums_hebbian_counts_in_float64_past_float32s_exact_integers(monkeypatch):
    patterns, cues, counts = _hebbian_tie_setting()
    monkeypatch.setattr(memory_module, "_EXACT_FLOAT32", 0)  # as if (N − 1)·P exceeded 2^24
    memory = AttractorMemory(768).store(patterns)
    memory._single_path = False
    assert memory._product_weights.dtype == torch.float64
    with pytest.warns(RuntimeWarning, match="convergence rate"):
        out = memory.complete_batch(cues)
    for i, cue in enumerate(cues):
        assert np.array_equal(out.states[i], reference.complete_sync(counts, cue, "bipolar", 0, 7).state)
