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
