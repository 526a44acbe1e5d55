"""A-GEM: the projection keeps the step from raising the memory's loss, the memory holds only
past experiences, and a step without conflict is plain SGD."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engram.replay import EpisodicBuffer
from engram.replay.strategies import AGEM
from engram.replay.strategies.agem import project


def sgd(lr=0.1):
    return lambda params: torch.optim.SGD(params, lr=lr)


def test_a_conflicting_gradient_is_projected_onto_the_reference_plane():
    gen = torch.Generator().manual_seed(0)
    conflicts = 0
    for _ in range(200):
        g, ref = torch.randn(7, generator=gen), torch.randn(7, generator=gen)
        out = project(g, ref)
        assert torch.dot(out, ref) >= -1e-5
        if torch.dot(g, ref) < 0:
            conflicts += 1
            # On the plane g̃ · g_ref = 0, and g̃ differs from g only along g_ref.
            assert torch.dot(out, ref) == pytest.approx(0.0, abs=1e-5)
            rest = (g - out) - torch.dot(g - out, ref) / torch.dot(ref, ref) * ref
            assert rest.abs().max() < 1e-5
        else:
            assert torch.equal(out, g)
    assert 50 < conflicts < 150  # both branches were exercised


def test_project_refuses_vectors_of_other_shapes():
    with pytest.raises(ValueError, match="gradient, reference"):
        project(torch.zeros(3), torch.zeros(4))


def two_memories():
    """A linear model and a memory holding one item of experience 0."""
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    learner = AGEM(model, EpisodicBuffer(10), replay_batch=5, per_experience=2, optimizer=sgd())
    items = (torch.randn(2, 3), torch.tensor([0, 1]))
    learner.before_experience(0, lambda n: (items[0][:n], items[1][:n]))
    learner.observe(*items)
    learner.after_experience()
    return model, learner, items


def test_the_memory_takes_its_share_when_an_experience_ends_and_only_then():
    _, learner, (x, y) = two_memories()
    assert len(learner.buffer) == 2
    torch.testing.assert_close(learner.buffer.x, x)
    assert learner.buffer.y[:2].tolist() == y.tolist()
    assert learner.buffer.task[:2].tolist() == [0, 0]
    learner.before_experience(1, lambda n: (torch.randn(n, 3), torch.full((n,), 2)))
    learner.observe(torch.randn(4, 3), torch.tensor([2, 3, 2, 3]))
    assert len(learner.buffer) == 2  # experience 1 is stored when it ends, not during it


def test_a_step_that_conflicts_with_the_memory_does_not_raise_its_loss_to_first_order():
    model, learner, (old_x, old_y) = two_memories()
    learner.before_experience(1)
    # Relabel the stored inputs: their gradient now opposes the memory's.
    new_x, new_y = old_x.clone(), torch.tensor([2, 3])
    params = list(model.parameters())
    g_ref = torch.autograd.grad(F.cross_entropy(model(old_x), old_y), params)
    g_new = torch.autograd.grad(F.cross_entropy(model(new_x), new_y), params)
    ref = torch.cat([t.reshape(-1) for t in g_ref])
    raw = torch.cat([t.reshape(-1) for t in g_new])
    assert torch.dot(raw, ref) < 0
    expected = project(raw, ref)
    before = torch.cat([p.detach().reshape(-1) for p in params])
    learner.observe(new_x, new_y)
    after = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(before - after, 0.1 * expected)
    assert learner.projected == 1
    # To first order the memory's loss changes by g_ref · Δθ: up under plain SGD, not here.
    assert torch.dot(ref, -0.1 * raw) > 0
    assert torch.dot(ref, after - before) <= 1e-6


def test_a_step_that_agrees_with_the_memory_is_plain_sgd():
    model, learner, (old_x, old_y) = two_memories()
    learner.before_experience(1)
    params = list(model.parameters())
    raw = torch.cat([t.reshape(-1) for t in torch.autograd.grad(
        F.cross_entropy(model(old_x), old_y), params)])
    before = torch.cat([p.detach().reshape(-1) for p in params])
    learner.observe(old_x, old_y)  # the memory's own items: the gradients agree
    after = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(before - after, 0.1 * raw)
    assert learner.projected == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="per_experience: expected at most"):
        AGEM(nn.Linear(2, 2), EpisodicBuffer(3), per_experience=4)
    with pytest.raises(ValueError, match="replay_batch: expected a positive integer"):
        AGEM(nn.Linear(2, 2), EpisodicBuffer(3), replay_batch=0, per_experience=1)
    with pytest.raises(TypeError, match="buffer: expected an EpisodicBuffer"):
        AGEM(nn.Linear(2, 2), [], per_experience=1)
