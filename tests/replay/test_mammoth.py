"""The mammoth protocol: arms resolve to mammoth's settings, the losses are the published ones,
and one short run on MNIST reads class-IL and task-IL from the same network."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engram.errors import ConfigError
from engram.replay import EpisodicBuffer
from engram.replay.experiments.mammoth import Config, _peers, parse_arm, resolve_arm
from engram.replay.experiments.mammoth_train import (
    Arm,
    Cell,
    SampleCounter,
    TwoDrawDERPP,
    build,
    final_accuracy,
    mammoth_mlp,
    mean_forgetting,
    sgd,
    stream_for,
    train_one,
)


# ------------------------------------------------------------------------ arms
def test_arms_take_mammoths_best_args():
    derpp = resolve_arm("derpp-500", "seq-mnist", 6000, 10, 5)
    assert (derpp.lr, derpp.minibatch, derpp.alpha, derpp.beta) == (0.03, 10, 1.0, 0.5)
    ewc = resolve_arm("ewc_on", "perm-mnist", 9380, 128, 20)
    assert (ewc.lr, ewc.e_lambda, ewc.gamma) == (0.1, 0.7, 1.0)
    assert resolve_arm("er-200", "seq-mnist", 6000, 10, 5).lr == 0.01
    assert resolve_arm("sgd", "perm-mnist", 9380, 128, 20).lr == 0.2


def test_a_sleeping_arm_gets_derpp_compute_unless_told():
    steps = 6000
    sleep = resolve_arm("sleep-200", "seq-mnist", steps, 10, 5)
    # DER++ at 200 draws 128 twice per step; sleep draws 10 awake, the rest in 5 sleeps of 128.
    assert sleep.sleep_steps == math.ceil(steps * (2 * 128 - 10) / (5 * 128))
    assert (sleep.lr, sleep.minibatch) == (0.01, 10)
    response = resolve_arm("sleep_response-500", "seq-mnist", steps, 10, 5)
    assert (response.lr, response.minibatch, response.alpha) == (0.03, 10, 1.0)
    assert response.sleep_steps == math.ceil(steps * (2 * 10 - 10) / (5 * 128))
    told = resolve_arm("er_rehearse-500:sleep_steps=7,sleep_lr=0.0003", "seq-mnist", steps, 10, 5)
    assert (told.sleep_steps, told.sleep_lr) == (7, 0.0003)


def test_online_ewc_takes_mammoths_fisher_unless_told():
    ewc = resolve_arm("ewc_on", "perm-mnist", 9380, 128, 20)
    # mammoth's ewc_on: every training item of the task (60,000), each weighted by p(y|x).
    assert (ewc.fisher_items, ewc.fisher) == (60_000, "weighted")
    told = resolve_arm("ewc_on:fisher=empirical,fisher_items=2000", "perm-mnist", 9380, 128, 20)
    assert (told.fisher_items, told.fisher) == (2000, "empirical")
    with pytest.raises(ConfigError, match="fisher expected one of"):
        resolve_arm("ewc_on:fisher=exact", "perm-mnist", 9380, 128, 20)


def test_each_variant_of_a_method_is_compared_with_the_one_before_it():
    specs = ("ewc_on", "ewc_on:fisher=empirical", "ewc_on:fisher=empirical,fisher_items=2000",
             "er-200", "sleep-200", "er-500")
    arms = {s: resolve_arm(s, "perm-mnist", 9380, 128, 20) for s in specs}
    assert _peers(arms) == [("ewc_on:fisher=empirical", "ewc_on"),
                            ("ewc_on:fisher=empirical,fisher_items=2000", "ewc_on:fisher=empirical"),
                            ("sleep-200", "er-200")]


@pytest.mark.parametrize("items, kind", [(7, "weighted"), (30, "weighted"), (7, "empirical")])
def test_the_fisher_reads_fisher_items_items_of_the_kind_asked(items, kind):
    torch.manual_seed(1)
    x, y = torch.randn(30, 4), torch.randint(3, (30,))
    asked = []

    def sample(n):
        asked.append(n)
        return x[:n], y[:n]

    arm = Arm("ewc_on", "ewc_on", lr=0.1, e_lambda=0.7, fisher_items=items, fisher=kind)
    learner = build(arm, tiny(), 3, 10, 0)
    learner.before_experience(0, sample)
    learner.after_experience()
    assert asked == [items]
    model = learner.model
    want = {k: v.clone() for k, v in learner.ewc.fisher.items()}
    for k, v in model.named_parameters():  # by hand: the mean of w·g² over those items
        total = torch.zeros_like(v)
        for i in range(items):
            log_p = F.log_softmax(model(x[i : i + 1])[0], -1)[y[i]]
            g = torch.autograd.grad(log_p, [v])[0]
            total += (float(log_p.detach().exp()) if kind == "weighted" else 1.0) * g**2
        assert torch.allclose(want[k], total / items, rtol=1e-5, atol=1e-8)
    anchor = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        model[0].weight += 0.3
    # mammoth's penalty: e_lambda · Σ F (θ − θ*)².
    by_hand = 0.7 * sum((want[k] * (v - anchor[k]) ** 2).sum() for k, v in model.named_parameters())
    assert torch.allclose(learner.ewc.penalty(model), by_hand)


@pytest.mark.parametrize("spec, message", [
    ("adam", "expected a method"),
    ("er", "take a buffer size"),
    ("sgd-200", "take a buffer size"),
    ("er-x", "integer buffer size"),
    ("er-200:speed=2", "expected key=value"),
    ("er-200:lr=fast", "lr expected a number"),
])
def test_bad_arm_names_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_arm(spec)


def test_a_buffer_mammoth_did_not_tune_is_refused():
    with pytest.raises(ConfigError, match="for buffers"):
        resolve_arm("derpp-1000", "seq-mnist", 6000, 10, 5)
    with pytest.raises(ConfigError, match="n_tasks: Seq-MNIST has 5 tasks"):
        Config(n_tasks=20)
    with pytest.raises(ConfigError, match="arms: expected distinct"):
        Config(arms=("sgd", "sgd"))


# ------------------------------------------------------------------------ losses
def tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3))


def test_er_at_half_rate_takes_mammoths_step_on_the_concatenated_batch():
    model = tiny()
    arm = Arm(name="er-1", method="er", buffer=1, lr=0.2, minibatch=1)
    learner = build(arm, model, 3, steps=2, seed=0)
    learner.before_experience(0)
    old_x, old_y = torch.randn(1, 4), torch.tensor([2])
    learner.observe(old_x, old_y)  # the buffer now holds this item
    x, y = torch.randn(1, 4), torch.tensor([0])
    expected = nn.Sequential(nn.Linear(4, 3))
    expected.load_state_dict(model.state_dict())
    F.cross_entropy(expected(torch.cat([x, old_x])), torch.cat([y, old_y])).backward()
    with torch.no_grad():
        for p in expected.parameters():
            p -= 0.2 * p.grad
    learner.observe(x, y)
    for got, want in zip(model.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(got, want)


def test_derpp_weighs_the_logit_and_the_label_draws_apart():
    model = tiny()
    learner = TwoDrawDERPP(model, EpisodicBuffer(1), replay_batch=2, alpha=0.3, beta=0.5,
                           optimizer=sgd(0.1))
    learner.before_experience(0)
    old_x, old_y = torch.randn(1, 4), torch.tensor([1])
    with torch.no_grad():
        stored = model(old_x)
    learner.observe(old_x, old_y)
    x, y = torch.randn(3, 4), torch.tensor([0, 2, 1])
    with torch.no_grad():
        replayed = model(old_x).repeat(2, 1)
        expected = (F.cross_entropy(model(x), y)
                    + 0.3 * F.mse_loss(replayed, stored.repeat(2, 1))
                    + 0.5 * F.cross_entropy(replayed, old_y.repeat(2)))
    assert learner.observe(x, y) == pytest.approx(float(expected), rel=1e-6)


def test_the_backbone_is_mammoths_and_the_counter_counts_training_items():
    net = mammoth_mlp(784, 10)
    sizes = [(100, 784), (100, 100), (10, 100)]
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == sizes
    for m, (fan_out, fan_in) in zip(linears, sizes, strict=True):
        assert float(m.bias.detach().abs().max()) == 0.0
        assert float(m.weight.detach().abs().max()) <= math.sqrt(6 / (fan_in + fan_out))
    counter = SampleCounter(net)
    net(torch.rand(7, 784)).sum().backward()
    with torch.no_grad():
        net(torch.rand(50, 784))
    assert counter.items == 7


def test_metrics_of_a_lower_triangular_record():
    rows = [[0.9], [0.5, 0.8], [0.3, 0.6, 0.7]]
    assert final_accuracy(rows) == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    assert mean_forgetting(rows) == pytest.approx(((0.9 - 0.3) + (0.8 - 0.6)) / 2)


# ------------------------------------------------------------------------ a short run
def test_one_run_reads_both_scenarios_from_the_same_network(data_dir):
    arm = Arm(name="er-50", method="er", buffer=50, lr=0.05, minibatch=10)
    c = Cell("seq-mnist", 5, 10, str(data_dir / "mnist" / "mnist.npz"), False, 40, 60, arm)
    out = train_one(c, seed=3)
    assert [len(r) for r in out["accuracy"]] == [1, 2, 3, 4, 5]
    assert out["steps"] == 5 * 4
    # The first step has nothing to replay; every later one trains 10 + 10 items.
    assert out["trained_items"] == 10 + (out["steps"] - 1) * 20
    for every, own in zip(out["accuracy"], out["task_accuracy"], strict=True):
        # The arg-max over a task's own classes is right wherever the one over all ten is.
        assert all(o >= e for o, e in zip(own, every, strict=True))
    again = train_one(c, seed=3)  # one thread, one seed: the same numbers
    assert again["accuracy"] == out["accuracy"]


def test_permuted_mnist_permutes_every_task_anew_for_each_seed(data_dir):
    arm = Arm(name="sgd", method="sgd", lr=0.2)
    c = Cell("perm-mnist", 3, 128, str(data_dir / "mnist" / "mnist.npz"), False, 40, 60, arm)
    a, b = stream_for(c, 0), stream_for(c, 1)
    assert len(a) == 3 and all(t.perm is not None for t in a.tasks)
    assert not torch.equal(a.tasks[0].perm, b.tasks[0].perm)
    assert not torch.equal(a.tasks[0].perm, a.tasks[1].perm)
    assert a.tasks[0].n_train == 40 and a.tasks[0].test_set()[0].shape == (60, 784)


def test_lwf_and_agem_take_mammoths_best_args_and_agem_an_equal_share_per_task(data_dir):
    lwf = resolve_arm("lwf", "seq-mnist", 6000, 10, 5)
    assert (lwf.lr, lwf.alpha) == (0.03, 1.0)
    agem = resolve_arm("agem-500", "perm-mnist", 9380, 128, 20)
    assert (agem.lr, agem.minibatch) == (0.1, 128)
    with pytest.raises(ConfigError, match="mammoth runs no lwf on perm-mnist"):
        resolve_arm("lwf", "perm-mnist", 9380, 128, 20)
    arm = Arm(name="agem-50", method="agem", buffer=50, lr=0.1, minibatch=128)
    c = Cell("seq-mnist", 5, 10, str(data_dir / "mnist" / "mnist.npz"), False, 40, 60, arm)
    out = train_one(c, seed=0)
    # Tasks 2…5 each step twice (the batch and the whole memory, 10 items per past task).
    assert out["trained_items"] == 40 + sum(40 + 4 * 10 * t for t in range(1, 5))
