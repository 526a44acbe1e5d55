"""Generative replay: the VAE's samples, targets from the frozen previous model, less forgetting."""

import dataclasses

import pytest
import torch
from torch import nn

from engram.data.streams import make_stream
from engram.replay.experiments.vandeven_train import ProtocolConfig, train_protocol
from engram.replay.strategies import GenerativeReplay
from engram.replay.vae import VAE


def test_vae_samples_have_the_input_shape_and_lie_in_the_unit_interval():
    torch.manual_seed(0)
    vae = VAE(12, hidden=8, z_dim=3)
    x = vae.sample(50)
    assert x.shape == (50, 12)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    loss = vae.loss(torch.rand(7, 12))
    assert loss.shape == (7,) and bool(torch.isfinite(loss).all()) and bool((loss > 0).all())


def test_vae_learning_lowers_its_loss():
    torch.manual_seed(0)
    vae = VAE(16, hidden=16, z_dim=4)
    data = (torch.rand(32, 16) < torch.linspace(0.05, 0.95, 16)).float()
    opt = torch.optim.Adam(vae.parameters(), lr=2e-2)
    before = float(vae.loss(data).mean().detach())
    for _ in range(60):
        opt.zero_grad()
        vae.loss(data).mean().backward()
        opt.step()
    assert float(vae.loss(data).mean().detach()) < 0.8 * before


@pytest.mark.parametrize("bad, name", [(dict(n_in=0), "n_in"), (dict(z_dim=2.5), "z_dim")])
def test_vae_refuses_bad_sizes(bad, name):
    with pytest.raises(ValueError, match=name):
        VAE(**{"n_in": 4, **bad})


def test_vae_refuses_inputs_of_the_wrong_width():
    with pytest.raises(ValueError, match="x: expected shape"):
        VAE(4).encode(torch.rand(3, 5))


def _learner(targets: str, mask=None) -> GenerativeReplay:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    return GenerativeReplay(model, VAE(6, hidden=8, z_dim=2), replay_batch=32, targets=targets,
                            target_mask=mask)


def _train(learner: GenerativeReplay, index: int, label: int, steps: int = 20) -> None:
    learner.before_experience(index)
    for _ in range(steps):
        learner.observe(torch.rand(16, 6), torch.full((16,), label))


@pytest.mark.parametrize("targets", ["hard", "soft"])
def test_replayed_targets_come_from_the_frozen_previous_model(targets):
    old = torch.tensor([True, True, False, False])
    learner = _learner(targets, mask=lambda k: old)
    _train(learner, 0, label=1)
    learner.after_experience()
    frozen = [p.clone() for p in learner.previous_model.parameters()]
    _train(learner, 1, label=3)  # the live model moves on to class 3
    assert all(torch.equal(a, b) for a, b in zip(frozen, learner.previous_model.parameters(), strict=False))
    with torch.no_grad():  # the live model now answers 0 whatever it sees
        learner.model[-1].bias.copy_(torch.tensor([1e3, -1e3, 0.0, 0.0]))
    torch.manual_seed(5)
    x, labelled = learner.replay()
    (_, target), = labelled
    with torch.no_grad():
        logits = learner.previous_model(x).masked_fill(~old, -float("inf"))
    if targets == "hard":
        assert torch.equal(target, logits.argmax(-1))
        assert bool(old[target].all())  # only classes the frozen model was trained on
        assert bool((target == 1).any())  # not the live model's 0
    else:
        assert torch.allclose(target, (logits / 2.0).softmax(-1))
        assert float(target[:, ~old].sum()) == 0.0


def test_replay_draws_from_the_frozen_generator():
    learner = _learner("hard")
    _train(learner, 0, label=0)
    learner.after_experience()
    torch.manual_seed(9)
    x, _ = learner.replay()
    torch.manual_seed(9)
    assert torch.equal(x, learner.previous_generator.sample(32))


def test_generative_replay_keeps_the_first_task_better_than_fine_tuning():
    # Split digits (8×8, bundled with scikit-learn), class-incremental, tasks 0/1 then 2/3:
    # fine-tuning forgets 0/1 entirely; replay from a VAE labelled by the old model keeps some.
    full = make_stream("split-digits", "class")
    stream = dataclasses.replace(full, tasks=full.tasks[:2])
    cfg = ProtocolConfig(hidden=64, iters=150, batch=32, z_dim=8)
    first = {m: train_protocol(stream, dataclasses.replace(cfg, method=m), 0)["final"][0]
             for m in ("none", "dgr")}
    assert first["none"] < 0.05
    assert first["dgr"] > first["none"] + 0.3


def test_bad_settings_are_refused():
    model = nn.Linear(6, 4)
    with pytest.raises(TypeError, match="generator"):
        GenerativeReplay(model, nn.Linear(2, 2))
    with pytest.raises(ValueError, match="targets"):
        GenerativeReplay(model, VAE(6), targets="argmax")
    with pytest.raises(ValueError, match="replay_batch"):
        GenerativeReplay(model, VAE(6), replay_batch=0)
