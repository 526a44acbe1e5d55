"""Synaptic intelligence: the importance is the path integral of the loss drop, normalised."""

import pytest
import torch
from torch import nn

from engram.replay.strategies import SynapticIntelligence

A = torch.tensor([2.0, 0.5])  # curvature of each coordinate's quadratic
B = torch.tensor([0.0, 1.0])  # its minimum
START = torch.tensor([1.0, -2.0])


class Point(nn.Module):
    """Two free weights: the tiny quadratic's parameters."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(START.clone())


def quadratic_learner(lr: float, strength: float = 1.0, damping: float = 0.1):
    return SynapticIntelligence(
        Point(), strength, damping=damping,
        optimizer=lambda params: torch.optim.SGD(params, lr=lr),
        logits_fn=lambda model, x, task: model.theta.expand(x.shape[0], -1),
        loss_fn=lambda out, target: (0.5 * A * (out - target) ** 2).sum(1),
    )


def descend(learner: SynapticIntelligence, steps: int, index: int = 0) -> None:
    learner.before_experience(index)
    for _ in range(steps):
        learner.observe(torch.zeros(1, 2), B[None])
    learner.after_experience()


def expected_importance(d0: torch.Tensor, lr: float, n: int, damping: float) -> torch.Tensor:
    """Gradient descent on ½a(θ − b)² from θ − b = d_0: d_t = r^t d_0 with r = 1 − ηa; each
    step drops the loss by −g·Δθ = η a² d_t², so ω = η a² d_0² (1 − r^{2n}) / (1 − r²); the
    total change is Δ = d_0 (r^n − 1) and Ω = ω / (Δ² + ξ)."""
    r = 1 - lr * A
    omega = lr * A ** 2 * d0 ** 2 * (1 - r ** (2 * n)) / (1 - r ** 2)
    return omega / ((d0 * (r ** n - 1)) ** 2 + damping)


def test_importance_is_the_hand_computed_path_integral():
    lr, n, damping = 0.1, 15, 0.1
    learner = quadratic_learner(lr, damping=damping)
    descend(learner, n)
    d0 = START - B
    assert torch.allclose(learner.importance["theta"], expected_importance(d0, lr, n, damping),
                          rtol=1e-4)
    assert torch.allclose(learner.anchor["theta"], B + d0 * (1 - lr * A) ** n, rtol=1e-5)


def test_penalty_pulls_toward_the_anchor_with_the_importance_as_weight():
    learner = quadratic_learner(0.1, strength=3.0)
    descend(learner, 10)
    assert float(learner.penalty().detach()) == 0.0  # at the anchor
    omega = learner.importance["theta"].clone()
    with torch.no_grad():
        learner.model.theta += torch.tensor([0.5, -1.0])
    expected = 3.0 * float((omega * torch.tensor([0.25, 1.0])).sum())
    assert float(learner.penalty().detach()) == pytest.approx(expected, rel=1e-5)


def test_importance_adds_up_over_experiences_and_the_path_restarts():
    lr, damping = 0.1, 0.1
    learner = quadratic_learner(lr, strength=0.0, damping=damping)  # no pull: pure descent
    descend(learner, 10)
    first = learner.importance["theta"].clone()
    assert torch.count_nonzero(learner.path["theta"]) == 0
    d1 = learner.model.theta.detach() - B
    descend(learner, 7, index=1)
    assert torch.allclose(learner.importance["theta"],
                          first + expected_importance(d1, lr, 7, damping), rtol=1e-4)


@pytest.mark.parametrize("kwargs, name", [({"strength": -1.0}, "strength"),
                                          ({"strength": 1.0, "damping": 0.0}, "damping")])
def test_bad_settings_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SynapticIntelligence(Point(), **kwargs)
