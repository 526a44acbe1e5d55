"""LwF: the distillation term is zero at the snapshot and pulls toward the old outputs; the new
data's loss spans the classes seen so far; the first experience is plain training."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engram.replay.strategies import LwF
from engram.replay.strategies.lwf import distillation


def sgd(lr=0.1):
    return lambda params: torch.optim.SGD(params, lr=lr)


OLD = torch.tensor([True, True, False, False, False])


def test_the_distillation_is_zero_at_the_snapshot_and_positive_elsewhere():
    torch.manual_seed(0)
    old = torch.randn(6, 5)
    assert float(distillation(old.clone(), old, OLD)) == pytest.approx(0.0, abs=1e-7)
    # Outputs of classes outside the old ones do not count.
    moved = old.clone()
    moved[:, 2:] += 5.0
    assert float(distillation(moved, old, OLD)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation(old + torch.randn(6, 5), old, OLD)) > 1e-3


def test_the_distillation_is_the_papers_cross_entropy_less_a_constant():
    torch.manual_seed(1)
    old, now = torch.randn(4, 5), torch.randn(4, 5, requires_grad=True)
    p_old = F.softmax(old[:, :2] / 2, -1)
    cross = -(p_old * F.log_softmax(now[:, :2] / 2, -1)).sum(-1).mean()
    entropy = -(p_old * p_old.log()).sum(-1).mean()
    kl = distillation(now, old, OLD, temperature=2.0)
    assert float(kl.detach()) == pytest.approx(float((cross - entropy).detach()), rel=1e-5)
    g_kl, = torch.autograd.grad(kl, now)
    g_cross, = torch.autograd.grad(cross, now)
    torch.testing.assert_close(g_kl, g_cross)


def test_its_gradient_pulls_the_outputs_toward_the_old_ones():
    torch.manual_seed(2)
    old = torch.randn(8, 5)
    now = (old + 2 * torch.randn(8, 5)).requires_grad_(True)
    start = float(distillation(now, old, OLD).detach())
    for _ in range(50):
        loss = distillation(now, old, OLD)
        g, = torch.autograd.grad(loss, now)
        with torch.no_grad():
            now -= 20.0 * g
    end = float(distillation(now, old, OLD).detach())
    assert end < 0.1 * start
    p = F.softmax(now[:, :2].detach() / 2, -1)
    q = F.softmax(old[:, :2] / 2, -1)
    assert (p - q).abs().max() < 0.1


def linear():
    torch.manual_seed(3)
    return nn.Linear(3, 5)


def test_the_first_experience_is_cross_entropy_over_the_classes_seen():
    lwf = LwF(linear(), optimizer=sgd())
    lwf.before_experience(0)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        logits = lwf.model(x)
        logits[:, 2:] = -float("inf")
        expected = F.cross_entropy(logits, y)
    assert lwf.observe(x, y) == pytest.approx(float(expected), rel=1e-6)
    assert lwf.old_model is None


def test_a_later_experience_adds_alpha_times_the_distillation_toward_the_snapshot():
    lwf = LwF(linear(), alpha=0.7, temperature=2.0, optimizer=sgd(0.5))
    lwf.before_experience(0)
    for _ in range(5):
        lwf.observe(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    lwf.before_experience(1)
    snapshot = nn.Linear(3, 5)
    snapshot.load_state_dict(lwf.model.state_dict())
    x, y = torch.randn(4, 3), torch.tensor([2, 3, 2, 3])
    with torch.no_grad():
        logits = lwf.model(x)
        masked = logits.clone()
        masked[:, 4] = -float("inf")
        expected = F.cross_entropy(masked, y) + 0.7 * distillation(logits, snapshot(x), OLD)
    assert lwf.observe(x, y) == pytest.approx(float(expected), rel=1e-5)
    # The snapshot stays frozen while the network moves on.
    for p, q in zip(lwf.old_model.parameters(), snapshot.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert lwf.old_classes.tolist() == OLD.tolist()


def test_distillation_keeps_the_old_classes_outputs_closer_than_plain_training():
    def drift(alpha):
        lwf = LwF(linear(), alpha=alpha, optimizer=sgd(0.5))
        lwf.before_experience(0)
        gen = torch.Generator().manual_seed(0)
        for _ in range(30):
            lwf.observe(torch.randn(8, 3, generator=gen), torch.randint(2, (8,), generator=gen))
        lwf.before_experience(1)
        probe = torch.randn(64, 3, generator=gen)
        with torch.no_grad():
            before = lwf.model(probe)
        for _ in range(30):
            lwf.observe(torch.randn(8, 3, generator=gen), 2 + torch.randint(2, (8,), generator=gen))
        with torch.no_grad():
            return float(distillation(lwf.model(probe), before, OLD))
    assert drift(alpha=5.0) < 0.5 * drift(alpha=0.0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="alpha: expected a weight"):
        LwF(linear(), alpha=-1.0)
    with pytest.raises(ValueError, match="temperature: expected > 0"):
        distillation(torch.zeros(1, 5), torch.zeros(1, 5), OLD, temperature=0.0)
    with pytest.raises(ValueError, match="old_classes: expected a bool mask"):
        distillation(torch.zeros(1, 5), torch.zeros(1, 5), torch.ones(5))
    lwf = LwF(linear())
    lwf.before_experience(0)
    with pytest.raises(ValueError, match=r"targets: expected labels in \[0, 5\)"):
        lwf.observe(torch.randn(2, 3), torch.tensor([0, 9]))
