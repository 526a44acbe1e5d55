"""The Fisher estimates online EWC consolidates: mammoth's p(y|x)-weighted one, and the closed
form the mammoth protocol computes it with, against one backward pass per item (``fisher_diagonal_loop``)."""

import pytest
import torch
from torch import nn

from engram.replay.ewc import EWC, fisher_diagonal, fisher_diagonal_loop
from engram.replay.experiments.mammoth_train import MLPFisherEWC, mlp_fisher


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-8) for k in a)


@pytest.mark.parametrize("masked", [False, True])
def test_the_weighted_fisher_weighs_each_squared_gradient_by_the_probability_of_its_label(masked):
    model, x = net(), torch.randn(9, 6)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    mask = torch.tensor([True, True, True, False]) if masked else None
    weighted = fisher_diagonal(model, x, y, "weighted", mask, chunk=4)
    assert close(weighted, fisher_diagonal_loop(model, x, y, logit_mask=mask, weighted=True))
    empirical = fisher_diagonal(model, x, y, "empirical", mask)
    # p(y|x) < 1, so the weighted estimate is smaller everywhere the gradient is not zero.
    assert all((weighted[k] <= empirical[k]).all() for k in weighted)
    assert any((weighted[k] < 0.9 * empirical[k]).any() for k in weighted)


@pytest.mark.parametrize("kind", ["empirical", "weighted"])
def test_the_closed_form_equals_the_per_item_estimate(kind):
    model, x, y = net(), torch.randn(11, 6), torch.randint(4, (11,))
    mask = torch.tensor([True, False, True, True])
    reference = fisher_diagonal_loop(model, x, y, weighted=kind == "weighted")
    assert close(mlp_fisher(model, x, y, kind, chunk=4), reference)
    assert close(mlp_fisher(model, x, y, kind, mask), fisher_diagonal(model, x, y, kind, mask))


def test_the_closed_form_refuses_what_it_cannot_compute():
    model, x, y = net(), torch.randn(3, 6), torch.randint(4, (3,))
    with pytest.raises(ValueError, match="fisher: expected 'empirical' or 'weighted'"):
        mlp_fisher(model, x, y, "sampled")
    with pytest.raises(ValueError, match=r"model: expected every parameter in an nn\.Linear"):
        mlp_fisher(nn.Sequential(nn.Linear(6, 4), nn.LayerNorm(4)), x, y)
    shared = nn.Linear(6, 6)
    with pytest.raises(ValueError, match=r"each nn\.Linear applied once"):
        mlp_fisher(nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(6, 4)), x, y)
    with pytest.raises(ValueError, match="y: expected 3 labels"):
        mlp_fisher(model, x, y[:2])


def test_an_ewc_with_the_closed_form_consolidates_as_the_plain_one():
    model, x, y = net(), torch.randn(20, 6), torch.randint(4, (20,))
    fast, plain = MLPFisherEWC(1.4, fisher="weighted", samples=20), EWC(1.4, fisher="weighted",
                                                                          samples=20)
    for ewc in (fast, plain):
        ewc.consolidate(model, x, y)
        ewc.consolidate(model, x, y)  # γ = 1: the second Fisher adds to the first
    assert close(fast.fisher, plain.fisher)
    assert close(fast.fisher, {k: 2 * v for k, v in fisher_diagonal_loop(model, x, y, weighted=True).items()})
    with torch.no_grad():
        model[0].weight += 0.1
    assert torch.allclose(fast.penalty(model), plain.penalty(model))
