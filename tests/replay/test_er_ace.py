"""ER-ACE's asymmetric loss on a linear classifier small enough to check by hand."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engram.replay import EpisodicBuffer
from engram.replay.strategies import ERACE, FineTune


def sgd(lr=0.1):
    return lambda params: torch.optim.SGD(params, lr=lr)


def linear(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(3, 5)  # five classes; 4 is never shown


def rows_changed(before: nn.Linear, after: nn.Linear) -> list[int]:
    """Output classes whose weights or bias moved."""
    moved = ((before.weight - after.weight).abs().sum(1) + (before.bias - after.bias).abs()) > 0
    return [int(i) for i in torch.nonzero(moved).ravel()]


def snapshot(model: nn.Linear) -> nn.Linear:
    copy = nn.Linear(3, 5)
    copy.load_state_dict(model.state_dict())
    return copy


def test_the_incoming_batch_moves_only_the_current_classes():
    x, y = torch.randn(6, 3), torch.tensor([2, 3, 2, 3, 2, 3])
    ace = ERACE(linear(), EpisodicBuffer(10), replay_batch=4, optimizer=sgd())
    ace.before_experience(1)  # a later experience with nothing stored: no replay
    before = snapshot(ace.model)
    ace.observe(x, y)
    assert rows_changed(before, ace.model) == [2, 3]
    # Plain training on the same batch pushes every other logit down as well.
    plain = FineTune(linear(), optimizer=sgd())
    plain.before_experience(1)
    plain.observe(x, y)
    assert rows_changed(before, plain.model) == [0, 1, 2, 3, 4]


def test_replay_spans_the_classes_seen_and_the_loss_is_the_two_masked_terms():
    model = linear()
    ace = ERACE(model, EpisodicBuffer(1, seed=0), replay_batch=3, optimizer=sgd())
    ace.before_experience(0)
    old_x, old_y = torch.randn(1, 3), torch.tensor([0])
    ace.observe(old_x, old_y)
    ace.observe(torch.randn(1, 3), torch.tensor([1]))  # classes 0 and 1 seen
    stored_x, stored_y = ace.buffer.x.clone(), ace.buffer.y[:1].clone()

    ace.before_experience(1)
    x, y = torch.randn(4, 3), torch.tensor([2, 3, 3, 2])
    before = snapshot(model)
    with torch.no_grad():
        current = model(x)
        current[:, [0, 1, 4]] = -float("inf")
        replayed = model(stored_x).repeat(3, 1)
        replayed[:, 4] = -float("inf")
        expected = F.cross_entropy(current, y) + F.cross_entropy(replayed, stored_y.repeat(3))
    loss = ace.observe(x, y)
    assert loss == pytest.approx(float(expected), rel=1e-6)
    # The stored item moves the classes seen so far; class 4, never seen, stays where it was.
    assert rows_changed(before, model) == [0, 1, 2, 3]


def test_the_first_experience_is_not_replayed():
    ace = ERACE(linear(), EpisodicBuffer(50, seed=0), replay_batch=8, optimizer=sgd())
    ace.before_experience(0)
    ace.observe(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    x, y = torch.randn(4, 3), torch.tensor([1, 0, 0, 1])
    with torch.no_grad():
        logits = ace.model(x)
        logits[:, 2:] = -float("inf")
        expected = F.cross_entropy(logits, y)
    assert ace.observe(x, y) == pytest.approx(float(expected), rel=1e-6)
    assert len(ace.buffer) == 8


def test_current_classes_restart_with_each_experience():
    ace = ERACE(linear(), EpisodicBuffer(10), optimizer=sgd())
    ace.before_experience(0)
    ace.observe(torch.randn(2, 3), torch.tensor([0, 1]))
    ace.before_experience(1)
    ace.observe(torch.randn(2, 3), torch.tensor([2, 2]))
    assert ace.current_classes.tolist() == [False, False, True, False, False]
    assert ace.seen_classes.tolist() == [True, True, True, False, False]


def test_bad_targets_are_refused():
    ace = ERACE(linear(), EpisodicBuffer(10), optimizer=sgd())
    ace.before_experience(0)
    with pytest.raises(ValueError, match="targets: ER-ACE masks classes"):
        ace.observe(torch.randn(2, 3), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"targets: expected labels in \[0, 5\)"):
        ace.observe(torch.randn(2, 3), torch.tensor([0, 7]))
