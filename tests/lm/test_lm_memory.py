"""Episodic memory: exact retrieval, faiss agreement, kNN-LM interpolation, inspection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engram.lm.memory import EpisodicMemory
from engram.lm.model import HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.sample import SamplingConfig, generate


def test_exact_search_recalls_a_stored_key():
    rng = np.random.default_rng(0)
    memory = EpisodicMemory(dim=8, k=3)
    keys = rng.standard_normal((50, 8)).astype(np.float32)
    memory.store(keys, np.arange(50) % 7)
    found = memory.recall(keys[17:18])
    assert found.indices[0, 0] == 17 and found.distances[0, 0] == pytest.approx(0.0, abs=1e-4)
    assert found.tokens.tolist() == [(found.indices[0] % 7).tolist()]
    assert memory.backend == "exact"


def test_faiss_search_agrees_with_exact_search():
    rng = np.random.default_rng(1)
    keys = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((10, 16)).astype(np.float32)
    exact = EpisodicMemory(dim=16, k=5)
    fast = EpisodicMemory(dim=16, k=5, faiss_threshold=100)
    for memory in (exact, fast):
        memory.store(keys[:200], np.zeros(200))
        memory.store(keys[200:], np.ones(100))
    assert fast.backend == "faiss" and exact.backend == "exact"
    slow, quick = exact.recall(queries), fast.recall(queries)
    assert np.array_equal(slow.indices, quick.indices)
    assert np.array_equal(slow.tokens, quick.tokens)
    np.testing.assert_allclose(slow.distances, quick.distances, rtol=1e-4, atol=1e-4)


def test_a_recall_is_frozen_and_logged():
    memory = EpisodicMemory(dim=2, k=2)
    memory.store(np.eye(2, dtype=np.float32), np.array([4, 5]))
    found = memory.recall(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert found.indices.shape == found.tokens.shape == found.distances.shape == (3, 2)
    assert memory.log == [found]
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.tokens = np.zeros((3, 2))
    with pytest.raises(ValueError, match="read-only"):
        found.tokens[0, 0] = 9


def test_interpolation_mixes_the_memory_distribution_and_logs_retrievals():
    memory = EpisodicMemory(dim=2, k=2, interpolation=0.5, temperature=1.0)
    memory.store(torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]]), torch.tensor([3, 3, 1]))
    logits = torch.zeros(1, 4)  # the model is uniform
    logp = memory.interpolate(logits, torch.tensor([[0.0, 0.0]]))
    p = logp.exp()[0]
    assert p[3] == pytest.approx(0.5 * 0.25 + 0.5, abs=1e-6)
    assert p[1] == pytest.approx(0.125, abs=1e-6)
    assert memory.log[-1].tokens.tolist() == [[3, 3]]
    assert sorted(memory.log[-1].indices[0].tolist()) == [0, 1]


def test_memory_of_the_context_steers_generation_towards_it():
    torch.manual_seed(0)
    config = HippocampalTransformerConfig(vocab_size=9, block_size=32, n_layer=1, n_head=1, n_embd=16)
    model = HippocampalTransformer(config)
    text = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8] * 3)
    memory = EpisodicMemory(dim=16, k=1, interpolation=1.0)
    memory.store_text(model, text)
    assert len(memory) == len(text) - 1
    out = torch.stack(
        list(generate(model, text[None, :3], 5, SamplingConfig("greedy"), memory=memory))
    )[:, 0]
    assert out.tolist() == [4, 5, 6, 7, 8]  # λ = 1: the memory alone continues the episode


def test_bad_memory_input_is_a_clear_error():
    with pytest.raises(ValueError, match="interpolation"):
        EpisodicMemory(dim=4, interpolation=1.5)
    memory = EpisodicMemory(dim=4)
    with pytest.raises(ValueError, match="empty"):
        memory.recall(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="keys"):
        memory.store(np.zeros((3, 5)), np.zeros(3))


def test_memory_validation_loss_is_the_model_loss_at_lambda_zero_and_lower_on_seen_text():
    from engram.lm.evaluate import memory_validation_loss, validation_loss

    torch.manual_seed(0)
    config = HippocampalTransformerConfig(vocab_size=9, block_size=16, n_layer=1, n_head=1, n_embd=16)
    model = HippocampalTransformer(config)
    text = np.tile(np.arange(1, 9), 12)
    plain = validation_loss(model, text, n_chars=len(text))
    off = EpisodicMemory(dim=16, k=4, interpolation=0.0, keep_log=False)
    off.store_text(model, torch.from_numpy(text))
    assert memory_validation_loss(model, off, text, len(text)).nats_per_token == pytest.approx(
        plain.nats_per_token, rel=1e-5
    )
    on = EpisodicMemory(dim=16, k=4, interpolation=0.5, keep_log=False)
    on.store_text(model, torch.from_numpy(text))
    assert memory_validation_loss(model, on, text, len(text)).nats_per_token < plain.nats_per_token


def test_retrieval_accuracy_counts_queries_whose_neighbours_hold_the_true_next_token():
    memory = EpisodicMemory(dim=1, k=3)
    memory.store(np.array([[0.0], [1.0], [2.0], [10.0]]), np.array([5, 6, 7, 8]))
    queries = np.array([[0.1], [0.9], [9.0], [2.2]])
    # nearest first: q0 → 5, 6, 7; q1 → 6, 5, 7; q2 → 8, 7, 6; q3 → 7, 6, 5
    targets = np.array([6, 6, 5, 8])
    accuracy = memory.retrieval_accuracy(queries, targets, ks=(1, 2, 3))
    assert accuracy == {1: 0.25, 2: 0.5, 3: 0.5}
    with pytest.raises(ValueError, match="ks"):
        memory.retrieval_accuracy(queries, targets, ks=(4,))
    with pytest.raises(ValueError, match="targets"):
        memory.retrieval_accuracy(queries, targets[:3], ks=(1,))


def test_retrieval_report_sets_the_memory_beside_the_model_and_the_mixture():
    from engram.lm.memory import retrieval_report

    torch.manual_seed(0)
    config = HippocampalTransformerConfig(vocab_size=9, block_size=16, n_layer=1, n_head=1, n_embd=16)
    model = HippocampalTransformer(config)
    text = np.tile(np.arange(1, 9), 8)
    memory = EpisodicMemory(dim=16, k=4, interpolation=0.9, keep_log=False)
    memory.store_text(model, torch.from_numpy(text))
    report = retrieval_report(model, memory, text, ks=(1, 4))
    assert report.positions == 3 * 16  # three whole windows of 16 in 64 tokens
    assert report.memory[0] == 1.0  # every state is stored, with the token that followed it
    assert report.model[0] < 0.5 and report.mixed[0] == 1.0  # an untrained model, rescued


def test_a_saved_memory_loads_back_exactly_and_a_damaged_one_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    memory = EpisodicMemory(dim=6, k=4, interpolation=0.4, temperature=2.0, faiss_threshold=10)
    memory.store(rng.standard_normal((30, 6)).astype(np.float32), rng.integers(0, 50, 30))
    path = memory.save(tmp_path / "memory.npz")
    memory.store(np.ones((1, 6), dtype=np.float32), np.array([3]))
    memory.save(path)  # overwritten whole, through a temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.npz"]
    loaded = EpisodicMemory.load(path)
    assert (loaded.dim, loaded.k, loaded.interpolation, loaded.temperature, loaded.faiss_threshold) == (
        6, 4, 0.4, 2.0, 10)
    assert np.array_equal(loaded._keys, memory._keys) and np.array_equal(loaded._tokens, memory._tokens)
    queries = rng.standard_normal((5, 6)).astype(np.float32)
    a, b = memory.recall(queries), loaded.recall(queries)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.distances, b.distances)
    data = dict(np.load(path))
    data["tokens"] = data["tokens"] + 1
    np.savez(tmp_path / "changed.npz", **data)
    with pytest.raises(ValueError, match="checksum"):
        EpisodicMemory.load(tmp_path / "changed.npz")
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a saved EpisodicMemory"):
        EpisodicMemory.load(tmp_path / "cut.npz")
    with pytest.raises(FileNotFoundError, match="missing"):
        EpisodicMemory.load(tmp_path / "missing.npz")
