"""The consolidation loop: replay measurably reduces forgetting on a two-task stream."""

import functools

import numpy as np
import pytest
import torch
from torch import nn

from engram.data.streams import Stream, Task
from engram.replay import (
    EpisodicBuffer,
    FastSlowPair,
    Sleep,
    SleepPhaseConfig,
    normalise_weights,
    response_distance,
)
from engram.replay.experiments.continual_train import LearnerConfig, train_stream


def two_task_stream(seed=0):
    """Two tasks of two Gaussian classes each, on overlapping inputs (class-incremental)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 20, generator=gen) * 1.5
    tasks = []
    for t in range(2):
        def draw(n, t=t):
            y = 2 * t + torch.randint(2, (n,), generator=gen)
            return centres[y] + torch.randn(n, 20, generator=gen), y
        (xtr, ytr), (xte, yte) = draw(400), draw(200)
        tasks.append(Task(t, f"t{t}", xtr, ytr, xte, yte, (2 * t, 2 * t + 1)))
    return Stream("toy", "class", tuple(tasks), 20, 4)


@functools.cache
def final_first_task(strategy, seed, **kw):
    """Accuracy on the first task after both (cached: several tests share the baselines)."""
    cfg = LearnerConfig(strategy=strategy, hidden=32, iters=60, batch=32, buffer_size=60,
                      replay_batch=32, sleep_steps=40, **kw)
    return train_stream(two_task_stream(seed), cfg, seed).accuracy[-1, 0]


def test_replay_reduces_forgetting_against_fine_tuning():
    finetune = [final_first_task("finetune", s) for s in range(3)]
    replay = [final_first_task("replay", s) for s in range(3)]
    sleep_replay = [final_first_task("sleep-replay", s) for s in range(3)]
    assert np.mean(finetune) < 0.3  # the old classes are overwritten
    assert np.mean(replay) > np.mean(finetune) + 0.4
    assert np.mean(sleep_replay) > np.mean(finetune) + 0.4


def test_compressed_replay_of_a_hidden_layer_keeps_the_first_task_in_less_memory():
    finetune = np.mean([final_first_task("finetune", s) for s in range(2)])
    latent = np.mean([final_first_task("sleep-replay", s, latent=1, storage="float16") for s in range(2)])
    assert latent > finetune + 0.4
    cfg = dict(hidden=8, iters=20, batch=16, buffer_size=30, replay_batch=16, sleep_steps=5)
    raw = train_stream(two_task_stream(), LearnerConfig(strategy="sleep-replay", **cfg), 0)
    small = train_stream(two_task_stream(), LearnerConfig(strategy="sleep-replay", latent=1,
                                                        storage="float16", **cfg), 0)
    # 8 float16 hidden units instead of 20 float32 inputs per stored item.
    assert raw.buffer_items == small.buffer_items == 30
    assert raw.buffer_bytes - small.buffer_bytes == 30 * (20 * 4 - 8 * 2)
    with pytest.raises(ValueError, match="uint8"):
        LearnerConfig(latent=1, storage="uint8")
    with pytest.raises(ValueError, match="latent"):
        LearnerConfig(latent=3)


def fitted(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    stream = two_task_stream(seed)
    task = stream.tasks[0]
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(100):
        loss = nn.functional.cross_entropy(model(task.x_train), task.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    buf = EpisodicBuffer(200)
    buf.add(task.x_train[:200], task.y_train[:200], 0)
    return model, buf, task


def test_adaptive_trigger_fires_only_after_forgetting():
    model, buf, _ = fitted()
    sleep = Sleep(SleepPhaseConfig(schedule="adaptive", probe_every=5, threshold=0.1, steps=5),
                  buf, 4, recombine=False)
    sleep.sleep(model)
    assert sleep.probe_baseline > 0.9
    assert not any(sleep.tick(model) for _ in range(10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    assert any(sleep.tick(model) for _ in range(5))


def test_sleep_restores_an_old_task_from_replay_and_dreams():
    model, buf, task = fitted()
    with torch.no_grad():
        model[2].weight.mul_(-1)  # damage: the old task is forgotten
    damaged = float((model(task.x_test).argmax(1) == task.y_test).float().mean())
    sleep = Sleep(SleepPhaseConfig(steps=150, lr=3e-3, batch=64), buf, 4, recombine=True)
    report = sleep.sleep(model)
    healed = float((model(task.x_test).argmax(1) == task.y_test).float().mean())
    assert damaged < 0.5 < 0.9 < healed
    assert report.dreamed > 0 and report.replayed > 0


def test_fast_slow_pair_tracks_slowly():
    fast = nn.Linear(3, 2)
    pair = FastSlowPair(fast, decay=0.9)
    with torch.no_grad():
        fast.weight.add_(1.0)
    before = pair.slow.weight.clone()
    pair.track()
    assert torch.allclose(pair.slow.weight, before + 0.1, atol=1e-6)
    with pytest.raises(ValueError, match="decay"):
        FastSlowPair(fast, decay=1.0)


def test_sleep_config_rejects_bad_values():
    with pytest.raises(ValueError, match="schedule"):
        SleepPhaseConfig(schedule="nightly")
    with pytest.raises(ValueError, match="dream_fraction"):
        SleepPhaseConfig(dream_fraction=0.6, current_fraction=0.5)
    with pytest.raises(ValueError, match="steps"):
        SleepPhaseConfig(steps=0)
    with pytest.raises(ValueError, match="weight_norm"):
        SleepPhaseConfig(weight_norm="sum")


def test_importance_weights_normalised_by_max_or_mean():
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    assert float(normalise_weights(w, "max").max()) == pytest.approx(1.0)
    by_mean = normalise_weights(w, "mean")
    assert float(by_mean.mean()) == pytest.approx(1.0)
    # Same relative weights either way: only the replay term's overall scale differs.
    assert torch.allclose(by_mean / by_mean.max(), normalise_weights(w, "max"))
    with pytest.raises(ValueError, match="how"):
        normalise_weights(w, "median")


@pytest.mark.parametrize("variant", [{"pair": True}, {"strategy": "sleep-replay+ewc"},
                                     {"schedule": "adaptive"},
                                     {"weight_norm": "mean", "reset_optimizer": False},
                                     {"distill": 0.5}, {"strategy": "replay", "distill": 0.5}])
def test_every_variant_of_sleep_replay_keeps_the_first_task(variant):
    variant = {"strategy": "sleep-replay", **variant}
    strategy = variant.pop("strategy")
    finetune = np.mean([final_first_task("finetune", s) for s in range(2)])
    kept = np.mean([final_first_task(strategy, s, **variant) for s in range(2)])
    assert kept > finetune + 0.4


def test_response_distance_leaves_masked_outputs_out():
    inf = float("inf")
    logits = torch.tensor([[1.0, 2.0, -inf], [0.0, 0.0, 0.0]])
    stored = torch.tensor([[0.0, 2.0, 5.0], [1.0, -inf, 3.0]])
    assert torch.allclose(response_distance(logits, stored), torch.tensor([0.5, 5.0]))


def test_sleep_with_responses_pulls_outputs_back_to_what_was_stored():
    def distance_after(distill):
        torch.manual_seed(0)
        model, _, task = fitted()
        buf = EpisodicBuffer(200, seed=0)
        with torch.no_grad():
            buf.add(task.x_train[:200], task.y_train[:200], response=model(task.x_train[:200]))
            model[2].weight.add_(0.3 * torch.randn_like(model[2].weight))  # damage
        cfg = SleepPhaseConfig(steps=100, lr=3e-3, batch=64, current_fraction=0.0, distill=distill)
        Sleep(cfg, buf, 4, recombine=False, seed=0).sleep(model)
        stored = buf.state_dict()["response"][: len(buf)]
        with torch.no_grad():
            return float(response_distance(model(buf.x), stored).mean())

    # Labels alone fix the answers but not the outputs; the stored responses fix both.
    assert distance_after(1.0) < 0.1 * distance_after(0.0)


def test_response_replay_needs_a_replaying_strategy_and_a_non_negative_weight():
    with pytest.raises(ValueError, match="distill: needs a replaying strategy"):
        LearnerConfig(strategy="finetune", distill=0.5)
    with pytest.raises(ValueError, match="distill"):
        LearnerConfig(distill=-1.0)
    with pytest.raises(ValueError, match="distill"):
        SleepPhaseConfig(distill=-1.0)
