"""The MQAR generator (Zoology's multi-query associative recall): structure, vocabulary split,
power-law query gaps, seeding and refused settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engram.streaming.mqar import IGNORE, MQARTask, make_mqar

TASK = MQARTask(n_pairs=16, length=256, vocab_size=8192)


def test_shapes_dtypes_and_one_query_per_pair():
    batch = make_mqar(TASK, 8, 0)
    assert batch.tokens.shape == batch.targets.shape == batch.distance.shape == (8, 256)
    assert batch.tokens.dtype == batch.targets.dtype == torch.int64
    assert (batch.queries.sum(1) == 16).all()
    assert int(batch.tokens.min()) >= 0 and int(batch.tokens.max()) < 8192


def test_every_query_answer_is_the_value_bound_to_that_key_earlier():
    batch = make_mqar(TASK, 32, 1)
    for tokens, targets, distance in zip(batch.tokens, batch.targets, batch.distance, strict=True):
        context = tokens[: 2 * TASK.n_pairs].tolist()
        bound = dict(zip(context[0::2], context[1::2], strict=True))
        assert len(bound) == TASK.n_pairs  # keys distinct
        assert len(set(bound.values())) == TASK.n_pairs  # values distinct
        positions = (targets != IGNORE).nonzero().flatten().tolist()
        assert sorted(tokens[positions].tolist()) == sorted(bound)  # every key asked once
        for t in positions:
            key = int(tokens[t])
            assert int(targets[t]) == bound[key]
            # the distance points back at that key's place in the context
            assert context[t - int(distance[t])] == key and t - int(distance[t]) < 2 * TASK.n_pairs
            assert t >= 2 * TASK.n_pairs and (t - 2 * TASK.n_pairs) % 2 == 0


def test_the_vocabulary_splits_into_keys_below_half_and_values_above():
    batch = make_mqar(TASK, 16, 2)
    context = batch.tokens[:, : 2 * TASK.n_pairs]
    keys, values = context[:, 0::2], context[:, 1::2]
    assert int(keys.min()) >= 1 and int(keys.max()) < 4096
    assert int(values.min()) >= 4096 and int(values.max()) < 8192
    assert int(batch.targets[batch.queries].min()) >= 4096


def test_fillers_are_random_tokens_or_the_blank():
    random = make_mqar(TASK, 16, 3)
    filler = random.tokens[:, 2 * TASK.n_pairs :][~random.queries[:, 2 * TASK.n_pairs :]]
    assert len(set(filler.tolist())) > 1000  # uniform over the vocabulary
    blank_task = MQARTask(n_pairs=16, length=256, random_fillers=False)
    blank = make_mqar(blank_task, 16, 3)
    rest = blank.tokens[:, 2 * TASK.n_pairs :][~blank.queries[:, 2 * TASK.n_pairs :]]
    assert (rest == 0).all()


def test_query_gaps_follow_the_power_law():
    task = MQARTask(n_pairs=4, length=128)
    n = 4000
    batch = make_mqar(task, n, 4)
    p = task.gap_probabilities()
    assert p[0] > 10 * p[-1] and np.all(np.diff(p) < 0)  # a = 0.01: early slots far likelier
    # the first key's query is the first draw of successive sampling: its slot is drawn from p
    first = ((batch.tokens == batch.tokens[:, :1]) & batch.queries).nonzero()
    slots = ((first[:, 1] - 2 * task.n_pairs) // 2).numpy()
    freq = np.bincount(slots, minlength=task.slots) / n
    assert 0.5 * np.abs(freq - p).sum() < 0.08  # total variation (sampling noise ~0.05)
    np.testing.assert_allclose(freq[:3], p[:3], atol=0.03)
    uniform = make_mqar(MQARTask(n_pairs=4, length=128, power_a=1.0), n, 4)
    u_slots = ((uniform.queries.nonzero()[:, 1] - 8) // 2).numpy()
    u_freq = np.bincount(u_slots, minlength=task.slots) / (4 * n)
    assert np.abs(u_freq - 1 / task.slots).max() < 0.01


def test_seeded_draws_repeat_and_different_seeds_differ():
    a, b, c = make_mqar(TASK, 4, 7), make_mqar(TASK, 4, 7), make_mqar(TASK, 4, 8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.tokens, c.tokens)
    gen = np.random.default_rng(0)
    first, second = make_mqar(TASK, 4, gen), make_mqar(TASK, 4, gen)
    assert not torch.equal(first.tokens, second.tokens)  # a Generator moves on


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"length": 255}, "length"),
        ({"n_pairs": 65, "length": 256}, "n_pairs"),
        ({"n_pairs": 0}, "n_pairs"),
        ({"vocab_size": 20, "n_pairs": 16}, "vocab_size"),
        ({"power_a": 0.0}, "power_a"),
    ],
)
def test_unusable_settings_are_refused_by_name(settings, name):
    with pytest.raises(ValueError, match=name):
        MQARTask(**settings)


def test_bad_batch_or_seed_is_refused_by_name():
    with pytest.raises(ValueError, match="batch"):
        make_mqar(TASK, 0, 0)
    with pytest.raises(TypeError, match="seed"):
        make_mqar(TASK, 2, "0")
