import dataclasses

import pytest
import torch

from engram.streaming import (
    MEMORY_KINDS,
    Evicted,
    KNNMemory,
    MatrixMemory,
    StreamingConfig,
    StreamingTransformer,
)
from engram.streaming.memories import feature_map


def _perturbed_model(cfg: StreamingConfig) -> StreamingTransformer:
    torch.manual_seed(0)
    model = StreamingTransformer(cfg)
    with torch.no_grad():  # away from the small initialisation, so memories matter
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("memory", MEMORY_KINDS)
def test_parallel_and_streaming_forms_agree(memory):
    cfg = StreamingConfig(
        vocab_size=20,
        d_model=16,
        n_heads=2,
        window=5,
        n_sink=1,
        memory=memory,
        knn_capacity=3,
        projection_rate=0.05,
    )
    model = _perturbed_model(cfg)
    tokens = torch.randint(0, 20, (3, 26), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        parallel, streamed = model(tokens), model.stream(tokens)
    torch.testing.assert_close(parallel, streamed, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("memory", [m for m in MEMORY_KINDS if m != "none"])
def test_every_memory_changes_the_output_once_something_is_evicted(memory):
    base = StreamingConfig(
        vocab_size=20, d_model=16, n_heads=2, window=5, n_sink=1, projection_rate=0.05
    )
    model = _perturbed_model(StreamingConfig(**{**base.__dict__, "memory": memory}))
    plain = StreamingTransformer(base)
    plain.load_state_dict(model.state_dict(), strict=False)
    tokens = torch.randint(0, 20, (2, 14), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = plain(tokens), model(tokens)
    # Before the first eviction is read (t < window + n_sink) nothing differs.
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert (a[:, 7:] - b[:, 7:]).abs().max() > 1e-3


@pytest.mark.parametrize("memory", [m for m in MEMORY_KINDS if m != "none"])
def test_memory_is_trainable_end_to_end(memory):
    cfg = StreamingConfig(
        vocab_size=20,
        d_model=16,
        n_heads=2,
        window=4,
        n_sink=1,
        memory=memory,
        projection_trainable=True,
    )
    model = StreamingTransformer(cfg)
    tokens = torch.randint(0, 20, (2, 12))
    model(tokens).square().mean().backward()
    qkv = model.blocks[0].attn.qkv.weight.grad
    assert qkv is not None and torch.isfinite(qkv).all() and qkv.abs().sum() > 0


def _events(n: int, heads: int = 1, d: int = 4, seed: int = 0) -> list[Evicted]:
    gen = torch.Generator().manual_seed(seed)
    return [
        Evicted(
            0,
            i,
            torch.randn(1, heads, d, generator=gen),
            torch.randn(1, heads, d, generator=gen),
            torch.randn(1, 8, generator=gen),
            torch.rand(1, heads, generator=gen) * 3,
            torch.randn(1, heads, d, generator=gen),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("delta", [False, True])
def test_matrix_memory_state_is_the_hebbian_or_widrow_hoff_matrix_of_its_writes(delta):
    memory = MatrixMemory("importance", delta=delta)
    state = memory.init_state(1, 1, 4, 8)
    expected = torch.zeros(4, 4)  # (d_value, d_key), as engram.hebb lays it out
    for ev in _events(6):
        state = memory.write(state, ev)
        phi = feature_map(ev.key[0, 0])
        key = phi / (phi.norm() + 1e-6) if delta else phi
        imp = ev.importance[0, 0]
        rate = imp / (1 + imp) if delta else imp
        error = ev.value[0, 0] - (expected @ key if delta else 0.0)
        expected = expected + rate * torch.outer(error, key)
    torch.testing.assert_close(state["M"][0, 0], expected, atol=1e-5, rtol=1e-5)


def test_bounded_knn_keeps_the_most_important_evicted_tokens():
    memory = KNNMemory(top_k=2, capacity=3)
    state = memory.init_state(1, 1, 4, 8)
    events = _events(7, seed=5)
    for ev in events:
        state = memory.write(state, ev)
    kept = state["alive"][0, 0].nonzero().flatten().tolist()
    by_importance = sorted(range(7), key=lambda i: -events[i].importance.item())[:3]
    assert sorted(kept) == sorted(by_importance)


def test_knn_read_of_a_stored_key_returns_its_value_when_keys_are_distinct():
    memory = KNNMemory(top_k=1)
    state = memory.init_state(1, 1, 4, 8)
    events = [
        dataclasses.replace(ev, key=10 * torch.nn.functional.normalize(ev.key, dim=-1))
        for ev in _events(5, seed=7)
    ]
    for ev in events:
        state = memory.write(state, ev)
    torch.testing.assert_close(memory.read(state, events[3].key), events[3].value)


def test_state_bytes_match_for_the_matrix_and_the_equal_size_knn():
    cfg = StreamingConfig(vocab_size=20, d_model=16, n_heads=2, window=4, memory="matrix")
    capacity = cfg.equal_state_capacity()
    matrix = MatrixMemory().state_bytes(2, 8, 16, n_evicted=100)
    knn = KNNMemory(capacity=capacity).state_bytes(2, 8, 16, n_evicted=100)
    assert abs(matrix - knn) <= 2 * 2 * 8 * 4  # within one entry per head
