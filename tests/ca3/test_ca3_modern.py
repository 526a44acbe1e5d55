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
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        hopfield.store([1, 2, 3, 4])
