import pytest
import torch

from engram.ca3 import ModernHopfield


@pytest.fixture
def memory():
    torch.manual_seed(0)
    patterns = torch.sign(torch.randn(50, 64))
    return ModernHopfield(64, beta=1.0).store(patterns), patterns


def test_one_step_retrieves_the_stored_pattern_from_a_noisy_query(memory):
    hopfield, patterns = memory
    noisy = patterns[7].clone()
    noisy[:16] *= -1
    out = hopfield.recall(noisy)
    assert torch.allclose(out, patterns[7], atol=1e-3)
    assert int(hopfield.attention(noisy).argmax()) == 7


def test_energy_does_not_rise_along_iterated_retrieval(memory):
    hopfield, patterns = memory
    state = patterns[:10] + 0.8 * torch.randn(10, 64)
    energies = [hopfield.energy(state)]
    for _ in range(4):
        state = hopfield.recall(state, steps=1)
        energies.append(hopfield.energy(state))
    stacked = torch.stack(energies)
    assert torch.all(stacked[1:] <= stacked[:-1] + 1e-4)


def test_layer_on_batches_with_per_batch_patterns_and_learned_beta():
    layer = ModernHopfield(16, beta=1.0, learn_beta=True)
    queries = torch.randn(4, 3, 16, requires_grad=True)
    patterns = torch.randn(4, 10, 16)
    out = layer(queries, patterns)
    assert out.shape == (4, 3, 16)
    out.sum().backward()
    assert layer.log_beta.grad is not None and queries.grad is not None


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="dim"):
        ModernHopfield(0)
    with pytest.raises(ValueError, match="beta"):
        ModernHopfield(4, beta=-1.0)
    hopfield = ModernHopfield(4)
    with pytest.raises(ValueError, match="nothing is stored"):
        hopfield.recall(torch.zeros(4))
    with pytest.raises(ValueError, match="patterns: expected last dimension 4"):
        hopfield.store(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        hopfield.store(torch.full((1, 4), float("nan")))
    with pytest.raises(TypeError, match="patterns: expected an array of numbers, got dict"):
        hopfield.store({"a": 1})


def test_beta_beyond_float32_is_rejected_by_name():
    for beta in (1e39, float("inf"), 1e-46):
        with pytest.raises(ValueError, match=r"beta: expected a positive value .* got"):
            ModernHopfield(4, beta=beta)
    with pytest.raises(TypeError, match="beta: expected a number, got str"):
        ModernHopfield(4, beta="8")


def test_the_largest_beta_still_retrieves_and_gives_a_finite_energy(memory):
    _, patterns = memory
    sharp = ModernHopfield(64, beta=3e38).store(patterns)  # β·(x·ξ) overflows float32
    noisy = patterns[7].clone()
    noisy[:16] *= -1
    out = sharp.recall(noisy)
    assert torch.isfinite(out).all() and torch.equal(out, patterns[7])
    assert torch.isfinite(sharp.energy(noisy)).all()
    assert torch.isfinite(sharp.attention(noisy)).all()


def test_numpy_and_list_inputs_work_like_tensors(memory):
    hopfield, patterns = memory
    query = patterns[3].numpy()
    assert torch.equal(hopfield.recall(query), hopfield.recall(patterns[3]))
    assert torch.equal(hopfield.recall(query.tolist()), hopfield.recall(patterns[3]))
    assert torch.equal(hopfield.attention(query), hopfield.attention(patterns[3]))
    assert torch.equal(hopfield.energy(query), hopfield.energy(patterns[3]))
    assert ModernHopfield(2).store([[1.0, -1.0]]).memory.shape == (1, 2)
    with pytest.raises(TypeError, match="queries: expected an array of numbers, got str"):
        hopfield.recall("1, 2")


def test_energy_of_an_empty_memory_is_a_clear_error():
    with pytest.raises(ValueError, match="memory: nothing is stored yet"):
        ModernHopfield(4).energy(torch.zeros(4))
