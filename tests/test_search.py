"""Exact top-k against a brute-force reference (a full stable sort of every score), and the
faiss index against the exact answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engram import search
from engram.params import InvalidParameterError
from engram.search import topk


def _reference(queries, database, k, metric, exclude=None):
    """Every score, sorted best first with ties to the lower index; −1 / ∓inf padding."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
    x = np.asarray(database, dtype=np.float64).reshape(-1, q.shape[1])
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    good = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1) if metric == "l2" else q @ x.T
    rows, values = [], []
    for i, row in enumerate(good):
        allowed = np.ones(len(x), bool) if exclude is None else ~np.broadcast_to(exclude, good.shape)[i]
        eligible = np.flatnonzero(allowed)
        order = eligible[np.argsort(-row[eligible], kind="stable")][:k]
        pad = k - len(order)
        rows.append(np.r_[order, -np.ones(pad, int)])
        values.append(np.r_[row[order], np.full(pad, -np.inf)])
    values = np.array(values)
    return (-values if metric == "l2" else values), np.array(rows)


@pytest.mark.parametrize("metric", search.METRICS)
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_exact_top_k_equals_a_full_sort(metric, chunk):
    rng = np.random.default_rng(0)
    database = rng.standard_normal((60, 8)).astype(np.float32)
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    got = topk(queries, database, 6, metric=metric, chunk=chunk)
    values, rows = _reference(queries, database, 6, metric)
    np.testing.assert_array_equal(got.indices, rows)
    np.testing.assert_allclose(got.values, values, rtol=1e-5, atol=1e-5)
    assert isinstance(got.values, np.ndarray) and got.indices.dtype == np.int64


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_ties_go_to_the_lower_index_whatever_the_chunking(chunk):
    database = np.array([[1.0], [2.0], [2.0], [1.0], [2.0], [0.0], [2.0]], dtype=np.float32)
    got = topk(np.ones((2, 1), np.float32), database, 5, chunk=chunk)
    np.testing.assert_array_equal(got.indices, [[1, 2, 4, 6, 0]] * 2)
    np.testing.assert_array_equal(got.values[0], [2, 2, 2, 2, 1])


def test_all_equal_scores_return_the_first_rows_in_order():
    got = topk(np.zeros(4, np.float32), np.ones((50, 4), np.float32), 3, chunk=16)
    np.testing.assert_array_equal(got.indices, [0, 1, 2])


def test_k_above_n_pads_with_minus_one_and_infinities():
    database = np.eye(3, dtype=np.float32)
    got = topk(database[:1], database, 5)
    np.testing.assert_array_equal(got.indices, [[0, 1, 2, -1, -1]])
    assert np.isneginf(got.values[0, 3:]).all()
    far = topk(database[:1], database, 5, metric="l2")
    assert np.isposinf(far.values[0, 3:]).all() and far.values[0, 0] == 0.0


def test_an_empty_database_gives_only_padding():
    got = topk(np.ones((2, 4), np.float32), np.zeros((0, 4), np.float32), 3)
    assert got.indices.shape == (2, 3) and (got.indices == -1).all()


@pytest.mark.parametrize("shared", [True, False])
def test_excluded_rows_are_never_returned(shared):
    rng = np.random.default_rng(1)
    database = rng.standard_normal((40, 6)).astype(np.float32)
    queries = rng.standard_normal((4, 6)).astype(np.float32)
    exclude = rng.random(40 if shared else (4, 40)) < 0.8
    got = topk(queries, database, 12, exclude=exclude, chunk=9)
    values, rows = _reference(queries, database, 12, "ip", exclude)
    np.testing.assert_array_equal(got.indices, rows)
    np.testing.assert_allclose(got.values, values, rtol=1e-5)


def test_torch_inputs_give_the_same_answer_as_numpy_and_carry_gradients():
    rng = np.random.default_rng(2)
    database = rng.standard_normal((30, 5)).astype(np.float32)
    queries = rng.standard_normal((3, 5)).astype(np.float32)
    q = torch.tensor(queries, requires_grad=True)
    got = topk(q, torch.tensor(database), 4, chunk=8)
    np.testing.assert_array_equal(got.indices.numpy(), topk(queries, database, 4).indices)
    got.values.sum().backward()
    expected = database[got.indices.numpy()].sum(1)  # d(Σ q·x)/dq over each query's winners
    np.testing.assert_allclose(q.grad.numpy(), expected, rtol=1e-5)


def test_batched_databases_broadcast_per_leading_dimension():
    g = torch.Generator().manual_seed(3)
    database = torch.randn(2, 3, 10, 4, generator=g)  # e.g. (batch, heads, entries, d)
    queries = torch.randn(2, 3, 5, 4, generator=g)
    got = topk(queries, database, 3, chunk=4)
    for b in range(2):
        for h in range(3):
            one = topk(queries[b, h].numpy(), database[b, h].numpy(), 3)
            np.testing.assert_array_equal(got.indices[b, h].numpy(), one.indices)


def test_integer_tensors_are_scored_as_floats():
    got = topk(torch.tensor([[1, 0]]), torch.tensor([[0, 1], [2, 0], [1, 0]]), 2)
    assert got.values.dtype == torch.float32
    np.testing.assert_array_equal(got.indices.numpy(), [[1, 2]])


def test_one_query_gives_one_row():
    got = topk(np.ones(3, np.float32), np.eye(3, dtype=np.float32) * [1, 3, 2], 2)
    np.testing.assert_array_equal(got.indices, [1, 2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    database = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    got = topk(torch.tensor(queries).cuda(), torch.tensor(database).cuda(), 9, chunk=100)
    assert got.indices.device.type == "cuda"
    np.testing.assert_array_equal(got.indices.cpu().numpy(), topk(queries, database, 9).indices)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, InvalidParameterError, "k: expected a positive integer, got 0"),
        ({"k": 2.0}, TypeError, "k: expected a positive integer, got float 2.0"),
        ({"k": True}, TypeError, "k: expected a positive integer, got bool True"),
        ({"metric": "dot"}, ValueError, "metric: expected one of 'ip', 'cosine', 'l2', got 'dot'"),
        ({"chunk": 0}, ValueError, "chunk: expected a positive integer"),
        ({"queries": np.ones((2, 3))}, ValueError, "queries: expected last dimension 4"),
        ({"queries": "abcd"}, TypeError, "queries: expected an array of numbers, got str"),
        ({"queries": np.full(4, np.nan)}, ValueError, "queries: contains NaN"),
        ({"database": np.full((3, 4), np.inf)}, ValueError, "database: contains NaN or infinite"),
        ({"database": np.ones(4)}, ValueError, "queries/database: expected shapes"),
        ({"exclude": np.zeros(2, bool)}, ValueError, "exclude: expected a bool mask over the 3"),
        ({"exclude": np.zeros(3)}, ValueError, "exclude: expected a bool mask"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    arguments = {"queries": np.ones(4), "database": np.ones((3, 4)), "k": 2} | kwargs
    with pytest.raises(error, match=match):
        topk(arguments.pop("queries"), arguments.pop("database"), arguments.pop("k"), **arguments)


faiss_only = pytest.mark.skipif(not search.HAS_FAISS, reason="faiss is an optional extra")


@faiss_only
@pytest.mark.parametrize("metric", search.METRICS)
def test_a_flat_faiss_index_finds_the_exact_neighbours(metric):
    rng = np.random.default_rng(5)
    database = rng.standard_normal((200, 12)).astype(np.float32)
    queries = rng.standard_normal((6, 12)).astype(np.float32)
    index = search.ApproximateIndex(12, metric=metric)
    index.add(database[:150])
    index.add(database[150:])  # grows: rows keep their order of arrival
    assert len(index) == 200
    got = index.search(queries, 5)
    exact = topk(queries, database, 5, metric=metric)
    np.testing.assert_array_equal(got.indices, exact.indices)
    np.testing.assert_allclose(got.values, exact.values, rtol=1e-4, atol=1e-4)


@faiss_only
def test_an_ivf_index_finds_stored_vectors_and_skips_excluded_rows():
    rng = np.random.default_rng(6)
    database = rng.standard_normal((2000, 16)).astype(np.float32)
    index = search.ApproximateIndex(16, metric="cosine", lists="auto", nprobe=64)
    index.add(database)
    exclude = np.zeros(2000, bool)
    exclude[:5] = True
    got = index.search(database[:10], 1, exclude=exclude)
    np.testing.assert_array_equal(got.indices[5:, 0], np.arange(5, 10))  # each finds itself
    assert not np.isin(got.indices[:5], np.arange(5)).any()
    with pytest.raises(ValueError, match="exclude: expected shape"):
        index.search(database[:1], 1, exclude=exclude[:3])
    with pytest.raises(ValueError, match="vectors: expected shape"):
        index.add(np.ones((2, 3), np.float32))
