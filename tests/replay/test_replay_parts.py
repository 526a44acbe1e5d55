"""Priority signals, the memory graph's dreams, and online EWC."""

import pytest
import torch
from torch import nn

from engram.replay import (
    EWC,
    EpisodicBuffer,
    MemoryGraph,
    PrioritySignals,
    fisher_diagonal,
    fisher_diagonal_loop,
)


def test_each_signal_raises_priority_and_can_be_switched_off():
    buf = EpisodicBuffer(3)
    buf.add(torch.eye(3), torch.arange(3), reward=torch.tensor([0.0, 1.0, 0.0]),
            novelty=torch.tensor([0.0, 0.0, 1.0]))
    signals = PrioritySignals(reward=1.0, novelty=1.0, salience=0.0, unfinished=0.0)
    p = signals.score(buf.metadata())
    assert p[1] > p[0] and p[2] > p[0]
    p = signals.without("reward").score(buf.metadata())
    assert p[1] == p[0] < p[2]


def test_unfinished_items_rise_in_priority_after_replay():
    buf = EpisodicBuffer(4)
    buf.add(torch.eye(4), torch.arange(4))
    signals = PrioritySignals(reward=0, novelty=0, salience=0, unfinished=1.0)
    buf.update_losses(torch.arange(4), torch.tensor([0.1, 0.1, 2.0, 0.1]), threshold=0.5)
    signals.refresh(buf)
    assert int(buf.priority[:4].argmax()) == 2 and bool(buf.unfinished[2])


def test_priority_signals_reject_bad_weights():
    with pytest.raises(ValueError, match="reward"):
        PrioritySignals(reward=-1.0)
    with pytest.raises(ValueError, match="signal"):
        PrioritySignals().without("curiosity")


def test_graph_links_similar_episodes_of_one_class_and_neighbours_in_time():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(2, 8, generator=gen) * 5
    labels = torch.arange(40) % 2
    feats = centres[labels] + 0.1 * torch.randn(40, 8, generator=gen)
    graph = MemoryGraph(k=3).build(feats, labels, order=torch.arange(40))
    sim = graph.neighbours[:, :3]
    assert torch.all(labels[sim] == labels[:, None])
    assert torch.equal(graph.neighbours[5, 3:], torch.tensor([4, 6]))
    assert not graph.mask[0, 3] and not graph.mask[39, 4]


def test_blend_dreams_are_convex_mixtures_with_matching_soft_targets():
    x = torch.rand(30, 16)
    y = torch.arange(30) % 3
    graph = MemoryGraph(k=2, same_class=False).build(x, y)
    dream = graph.dream(x, y, 3, n=50, length=3, generator=torch.Generator().manual_seed(1))
    assert dream.x.shape == (50, 16) and dream.target.shape == (50, 3)
    assert torch.allclose(dream.target.sum(1), torch.ones(50))
    walk_x = x[dream.walks]
    assert torch.all(dream.x <= walk_x.max(1).values + 1e-6)
    assert torch.all(dream.x >= walk_x.min(1).values - 1e-6)


def test_patch_dreams_take_every_pixel_from_a_walk_episode():
    x = torch.arange(4)[:, None].float().expand(4, 16).clone()  # episode i is all i
    y = torch.arange(4) % 2
    graph = MemoryGraph(k=1, same_class=False).build(torch.rand(4, 5), y)
    dream = graph.dream(x, y, 2, n=20, length=2, mode="patch")
    for d, walk in zip(dream.x, dream.walks, strict=True):
        assert set(d.tolist()) <= set(walk.float().tolist())
    with pytest.raises(ValueError, match="mode"):
        graph.dream(x, y, 2, n=2, mode="swap")


def test_graph_needs_building_and_two_episodes():
    with pytest.raises(ValueError, match="build"):
        MemoryGraph().walk(2, 3)
    with pytest.raises(ValueError, match="features"):
        MemoryGraph().build(torch.rand(1, 3))


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 4))


@pytest.mark.parametrize("masked", [False, True])
def test_vectorised_fisher_matches_the_per_sample_loop(masked):
    model = small_net()
    x, y = torch.randn(37, 6), torch.randint(2, (37,))
    mask = torch.tensor([True, True, False, False]) if masked else None
    fast = fisher_diagonal(model, x, y, logit_mask=mask, chunk=10)
    slow = fisher_diagonal_loop(model, x, y, logit_mask=mask)
    for name in slow:
        assert torch.allclose(fast[name], slow[name], atol=1e-6, rtol=1e-4), name


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_drift():
    model = small_net()
    ewc = EWC(strength=10.0)
    assert float(ewc.penalty(model).detach()) == 0.0
    ewc.consolidate(model, torch.randn(20, 6), torch.randint(4, (20,)))
    assert float(ewc.penalty(model).detach()) == 0.0
    with torch.no_grad():
        model[0].weight.add_(0.1)
    small = float(ewc.penalty(model).detach())
    with torch.no_grad():
        model[0].weight.add_(0.1)
    assert float(ewc.penalty(model).detach()) > 3 * small > 0


def test_online_ewc_decays_the_old_fisher():
    model = small_net()
    ewc = EWC(decay=0.5)
    x, y = torch.randn(20, 6), torch.randint(4, (20,))
    ewc.consolidate(model, x, y)
    first = {k: v.clone() for k, v in ewc.fisher.items()}
    ewc.consolidate(model, x, y)
    for k in first:
        assert torch.allclose(ewc.fisher[k], 1.5 * first[k])
    with pytest.raises(ValueError, match="decay"):
        EWC(decay=2.0)


def test_weighted_priority_is_one_formula_for_tensors_and_arrays():
    import numpy as np

    from engram.replay.priority import weighted_priority

    cols = (np.array([1.0, 0.0]), np.array([0.0, 2.0]))
    assert np.allclose(weighted_priority(cols, (0.5, 1.0), floor=0.1), [0.6, 2.1])
    tensors = tuple(torch.as_tensor(c) for c in cols)
    assert torch.allclose(weighted_priority(tensors, (0.5, 1.0)), torch.tensor([0.5, 2.0],
                                                                             dtype=torch.float64))
    with pytest.raises(ValueError, match="weights"):
        weighted_priority(cols, (1.0,))


def test_random_walks_follow_live_links_from_rows_built_on_demand():
    from engram.replay.graph import random_walks

    # A path 0 - 1 - 2 and an isolated node 3, links padded to width 2 on request.
    table = {0: [1], 1: [0, 2], 2: [1], 3: []}

    def links_of(node):
        ends = torch.zeros(node.shape[0], 2, dtype=torch.long)
        live = torch.zeros(node.shape[0], 2, dtype=torch.bool)
        for r, i in enumerate(node.tolist()):
            ends[r, : len(table[i])] = torch.tensor(table[i], dtype=torch.long)
            live[r, : len(table[i])] = True
        return ends, live

    walks = random_walks(torch.tensor([0, 1, 2, 3] * 25), 6, links_of,
                         torch.Generator().manual_seed(0))
    assert walks.nodes.shape == (100, 6) and walks.links.shape == (100, 5)
    for path, links in zip(walks.nodes.tolist(), walks.links.tolist(), strict=True):
        for a, b, link in zip(path, path[1:], links, strict=False):
            assert (b in table[a] and table[a][link] == b) if table[a] else (b == a == 3
                                                                              and link == -1)
    assert set(walks.nodes[:, -1].tolist()) >= {0, 2}  # both ends of the path are reached
    with pytest.raises(ValueError, match="length"):
        random_walks(torch.tensor([0]), 0, links_of)
