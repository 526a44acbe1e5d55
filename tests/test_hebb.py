import numpy as np
import pytest
import torch

from engram import codes, hebb


def _fixed_points(weights: torch.Tensor, patterns: np.ndarray) -> float:
    x = torch.from_numpy(patterns).float()
    return float((torch.sign(x @ weights) == x).all(dim=1).float().mean())


def test_hebbian_is_symmetric_with_zero_diagonal(rng):
    w = hebb.hebbian(torch.from_numpy(codes.random_bipolar(10, 100, rng)))
    assert torch.equal(w, w.T)
    assert torch.all(torch.diagonal(w) == 0)


def test_hebbian_stores_few_random_patterns_as_fixed_points(rng):
    patterns = codes.random_bipolar(5, 200, rng)
    assert _fixed_points(hebb.hebbian(torch.from_numpy(patterns)), patterns) == 1.0


def test_storkey_matches_naive_loop(rng):
    patterns = codes.random_bipolar(3, 12, rng).astype(float)
    n = patterns.shape[1]
    w = np.zeros((n, n))
    for xi in patterns:
        h = np.array(
            [
                [sum(w[i, k] * xi[k] for k in range(n) if k not in (i, j)) for j in range(n)]
                for i in range(n)
            ]
        )
        w = w + (np.outer(xi, xi) - xi[:, None] * h.T - h * xi[None, :]) / n
        np.fill_diagonal(w, 0)
    got = hebb.storkey(torch.from_numpy(patterns))
    assert np.allclose(got.numpy(), w, atol=1e-6)


def test_pseudoinverse_stores_correlated_patterns_that_hebbian_loses(rng):
    patterns = codes.correlated_bipolar(20, 200, 2, 0.1, rng)
    x = torch.from_numpy(patterns)
    assert _fixed_points(hebb.hebbian(x), patterns) < 0.5
    assert _fixed_points(hebb.pseudoinverse(x), patterns) == 1.0


def test_covariance_rule_centres_on_coding_level(rng):
    patterns = codes.random_sparse(5, 400, 0.05, rng)
    w = hebb.covariance(torch.from_numpy(patterns), 0.05)
    x = torch.from_numpy(patterns).float()
    expected = (x - 0.05).T @ (x - 0.05) / (400 * 0.05 * 0.95)
    expected.fill_diagonal_(0)
    assert torch.allclose(w, expected)


def test_prune_keeps_largest_weights():
    signs = torch.tensor([1.0, -1.0]).repeat(8)
    w = (torch.arange(1, 17, dtype=torch.float32) * signs).reshape(4, 4)
    sparse = hebb.prune(w, 0.5).to_dense()
    assert int((sparse != 0).sum()) == 8
    assert torch.all(sparse[sparse != 0].abs() > 8)


def test_associative_matrix_recalls_orthogonal_keys():
    keys = torch.eye(8)[:4]
    values = torch.randn(4, 5)
    memory = hebb.AssociativeMatrix(8, 5)
    memory.write(keys, values)
    assert torch.allclose(memory.read(keys), values)


def test_delta_rule_overwrites_a_rebound_key():
    key = torch.eye(6)[:1]
    memory = hebb.AssociativeMatrix(6, 3)
    memory.write(key, torch.tensor([[1.0, 0.0, 0.0]]), delta=True)
    memory.write(key, torch.tensor([[0.0, 1.0, 0.0]]), delta=True)
    assert torch.allclose(memory.read(key), torch.tensor([[0.0, 1.0, 0.0]]))


def test_associative_matrix_rejects_wrong_width():
    with pytest.raises(ValueError, match="keys/values"):
        hebb.AssociativeMatrix(4, 4).write(torch.zeros(1, 3), torch.zeros(1, 4))


@pytest.mark.parametrize("delta", [False, True])
def test_functional_write_on_stacked_memories_equals_one_class_per_memory(delta):
    g = torch.Generator().manual_seed(0)
    keys, values = torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 6, generator=g)
    rates = torch.rand(2, 3, 5, generator=g)
    state = hebb.write(torch.zeros(2, 3, 6, 4), keys, values, rates, delta=delta)
    for b in range(2):
        for h in range(3):
            one = hebb.AssociativeMatrix(4, 6)
            one.write(keys[b, h], values[b, h], rate=rates[b, h], delta=delta)
            torch.testing.assert_close(state[b, h], one.matrix)
            torch.testing.assert_close(hebb.read(state, keys)[b, h], one.read(keys[b, h]))


def test_functional_write_is_out_of_place_and_differentiable():
    state = torch.zeros(3, 3)
    keys = torch.eye(3)[:2].requires_grad_()
    written = hebb.write(state, keys, torch.ones(2, 3), delta=True)
    assert not state.any()
    hebb.read(written, torch.ones(1, 3)).sum().backward()
    assert keys.grad is not None and keys.grad.abs().sum() > 0


def test_store_and_recall_are_write_and_read():
    memory = hebb.AssociativeMatrix(8, 2)
    memory.store(torch.eye(8)[3], torch.tensor([1.0, -1.0]))
    assert torch.equal(memory.recall(torch.eye(8)[3]), memory.read(torch.eye(8)[3]))
    assert torch.equal(memory.recall(torch.eye(8)[3]), torch.tensor([[1.0, -1.0]]))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: hebb.AssociativeMatrix(0, 3), "d_key: expected a positive integer, got 0"),
        (lambda: hebb.AssociativeMatrix(3, 2.5), "d_value: expected a positive integer, got float 2.5"),
        (lambda: hebb.write(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(5, 2)), "keys/values"),
        (lambda: hebb.read(torch.zeros(2, 3), torch.zeros(1, 4)), "queries: expected width 3"),
        (lambda: hebb.covariance(torch.zeros(2, 4), 0.0), "sparsity: expected a coding level"),
        (lambda: hebb.prune(torch.zeros(2, 2), 1.0), r"fraction: expected a value in \[0, 1\), got 1.0"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
