"""The van de Ven protocol's learners: its ER store, EWC per task, equal compute, verdicts."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from engram.data.streams import make_stream
from engram.errors import ConfigError
from engram.replay.experiments.continual_train import Heads, mlp
from engram.replay.experiments.vandeven import PUBLISHED, Config, published_verdict
from engram.replay.experiments.vandeven_train import (
    ExemplarReplay,
    OfflineEWC,
    ProtocolConfig,
    build,
    replay_items,
    train_protocol,
    wake_iters,
)
from engram.replay.strategies import adam

TINY = ProtocolConfig(hidden=16, iters=6, batch=8, budget=4, fisher_samples=8, sleep_steps=4)


@pytest.fixture(scope="module")
def stream():
    return make_stream("split-digits", "class")


def _through(learner, stream, heads, n_tasks, steps=3):
    _more(learner, stream, heads, 0, n_tasks, steps)


def _more(learner, stream, heads, first, last, steps=3):
    """Tasks ``first`` … ``last`` − 1 of ``stream``, ``steps`` batches of 8 each."""
    gen = torch.Generator().manual_seed(first)
    for task in stream.tasks[first:last]:
        heads.see(task.index)

        def sample(n, task=task):
            return task.train_batch(torch.randint(task.n_train, (n,), generator=gen))

        learner.before_experience(task.index, sample)
        for _ in range(steps):
            x, y = sample(8)
            learner.observe(x, y, torch.full((8,), task.index))
        learner.after_experience()


def test_er_stores_budget_distinct_items_of_each_class_of_each_task(stream):
    heads = Heads(stream, torch.device("cpu"))
    learner = build(stream, dataclasses.replace(TINY, method="er"), heads, seed=0)
    assert isinstance(learner, ExemplarReplay)
    _through(learner, stream, heads, 3)
    assert learner.stored_items == 3 * 2 * TINY.budget
    for task, (x, y) in zip(stream.tasks, learner.stored, strict=False):
        assert sorted(y.tolist()) == sorted(list(task.classes) * TINY.budget)
        assert len(torch.unique(x, dim=0)) == len(y)  # distinct items
        same = (x[:, None, :] == task.x_train[None]).all(-1)
        assert bool(same.any(1).all())  # each one of that task's training items


def test_er_draws_each_replayed_item_from_the_store_of_the_task_it_names(stream):
    heads = Heads(stream, torch.device("cpu"))
    learner = build(stream, dataclasses.replace(TINY, method="er"), heads, seed=0)
    for first, n_tasks in ((0, 2), (2, 4)):  # the stores' union is joined anew after each task
        _more(learner, stream, heads, first, n_tasks)
        x, y, t = learner._draw(list(range(n_tasks)), 500)
        assert set(t.tolist()) == set(range(n_tasks))  # every store, the newest included
        for k, (xs, _) in enumerate(learner.stored):
            picked = t == k
            assert bool((x[picked][:, None, :] == xs[None]).all(-1).any(1).all())
            assert set(y[picked].tolist()) <= set(stream.tasks[k].classes)


def test_the_adam_factory_moves_weights_as_the_per_tensor_adam_bit_for_bit():
    torch.manual_seed(0)
    ours = mlp(20, 16, 4)
    reference = copy.deepcopy(ours)
    optimisers = (adam(1e-2)(ours.parameters()),
                  torch.optim.Adam(reference.parameters(), lr=1e-2, foreach=False))
    for _ in range(5):
        x, y = torch.rand(32, 20), torch.randint(4, (32,))
        for model, opt in zip((ours, reference), optimisers, strict=True):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), reference.parameters(),
                                                  strict=True))
    assert not torch.equal(ours[0].weight, mlp(20, 16, 4)[0].weight)  # they did move


def test_ewc_keeps_one_penalty_per_past_task(stream):
    heads = Heads(stream, torch.device("cpu"))
    learner = build(stream, dataclasses.replace(TINY, method="ewc", ewc_lambda=10.0), heads, 0)
    assert isinstance(learner, OfflineEWC)
    _through(learner, stream, heads, 3)
    assert len(learner.penalties) == 3
    anchors = [e.anchor["0.weight"] for e in learner.penalties]
    assert not torch.equal(anchors[0], anchors[2])  # each anchored where its task ended
    with torch.no_grad():
        learner.model[0].weight.add_(0.1)
    total = sum(float(e.penalty(learner.model).detach()) for e in learner.penalties)
    assert total > 0


def test_sleep_replay_back_propagates_as_many_items_as_er(stream):
    runs = {m: train_protocol(stream, dataclasses.replace(TINY, method=m), 0)
            for m in ("er", "sleep-replay")}
    assert runs["er"]["items"] == replay_items(TINY, 5)
    # Rounding w costs at most half a wake step per task.
    assert abs(runs["sleep-replay"]["items"] - runs["er"]["items"]) <= 5 * TINY.batch
    assert runs["sleep-replay"]["stored"] == TINY.budget * 10  # the same store when full
    assert wake_iters(TINY, 5) < TINY.iters


def test_the_equal_compute_control_rehearses_as_long_as_sleep_but_uniformly_and_without_dreams(
        stream):
    heads = {m: Heads(stream, torch.device("cpu")) for m in ("sleep-replay", "replay-equal-compute")}
    learners = {m: build(stream, dataclasses.replace(TINY, method=m), h, seed=0)
                for m, h in heads.items()}
    for m, learner in learners.items():
        _through(learner, stream, heads[m], 3)
    sleep, control = (learners[m].sleep for m in ("sleep-replay", "replay-equal-compute"))
    assert control.signals is None and sleep.signals is not None
    assert [r.steps for r in control.history] == [r.steps for r in sleep.history] == [4, 4, 4]
    assert all(r.dreamed == 0 and r.replayed == 4 * TINY.batch for r in control.history)
    assert all(r.dreamed > 0 for r in sleep.history)
    runs = {m: train_protocol(stream, dataclasses.replace(TINY, method=m), 0) for m in learners}
    assert runs["replay-equal-compute"]["items"] == runs["sleep-replay"]["items"]
    assert runs["replay-equal-compute"]["final"] != runs["sleep-replay"]["final"]


def test_equal_compute_refuses_sleep_that_leaves_no_wake_steps():
    with pytest.raises(ConfigError, match="sleep_steps"):
        wake_iters(dataclasses.replace(TINY, sleep_steps=1000), 5)


def test_joint_trains_once_on_every_task(stream):
    run = train_protocol(stream, dataclasses.replace(TINY, method="joint"), 0)
    assert len(run["accuracy"]) == 1 and run["items"] == TINY.iters * TINY.batch


def test_task_incremental_runs_score_within_each_head():
    task_stream = make_stream("split-digits", "task")
    run = train_protocol(task_stream, dataclasses.replace(TINY, method="si", iters=20, si_c=10.0), 0)
    assert len(run["accuracy"]) == 5 and min(run["final"]) >= 0.0
    assert run["final_mean"] > 0.6  # two-way choices, each learned: far above 0.5 chance


@pytest.mark.parametrize("low, high, verdict", [
    (0.84, 0.87, "below the published figure"),
    (0.88, 0.90, "within the published figure"),
    (0.91, 0.93, "above the published figure"),
])
def test_published_verdict_compares_intervals_with_the_reading(low, high, verdict):
    assert PUBLISHED["class"]["er"] == (89.0, 1.5)
    assert published_verdict("class", "er", low, high) == verdict


def test_a_method_without_a_published_figure_says_so():
    assert published_verdict("class", "sleep-replay", 0.9, 0.95) == "no published figure"


@pytest.mark.parametrize("bad, name", [
    (dict(methods=("none", "lwf")), "methods"),
    (dict(methods=("er", "er")), "methods"),
    (dict(scenario="instance"), "scenario"),
    (dict(n_seeds=0), "n_seeds"),
])
def test_config_refuses_bad_values(bad, name):
    with pytest.raises(ConfigError, match=name):
        Config(**bad)


def test_protocol_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="method"):
        ProtocolConfig(method="icarl")
    with pytest.raises(ConfigError, match="budget"):
        ProtocolConfig(budget=0)
    with pytest.raises(ConfigError, match="ewc_gamma"):
        ProtocolConfig(ewc_gamma=1.5)
