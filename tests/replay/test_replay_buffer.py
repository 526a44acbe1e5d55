import numpy as np
import pytest
import torch

from engram.replay import EpisodicBuffer


def filled(capacity=50, n=50, dim=6, **kwargs):
    buf = EpisodicBuffer(capacity, **kwargs)
    gen = torch.Generator().manual_seed(0)
    buf.add(torch.rand(n, dim, generator=gen), torch.arange(n) % 5, task=torch.arange(n) // 10,
            reward=torch.rand(n, generator=gen), novelty=torch.rand(n, generator=gen))
    return buf


def test_capacity_zero_is_a_clear_error():
    with pytest.raises(ValueError, match="capacity"):
        EpisodicBuffer(0)
    with pytest.raises(TypeError, match="capacity"):
        EpisodicBuffer(2.5)


def test_mismatched_item_shapes_are_rejected():
    buf = EpisodicBuffer(10)
    buf.add(torch.zeros(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"x: expected items of shape \(4,\)"):
        buf.add(torch.zeros(2, 5), torch.zeros(2))
    with pytest.raises(ValueError, match="y: expected"):
        buf.add(torch.zeros(2, 4), torch.zeros(3))


def test_unknown_modes_name_the_argument():
    with pytest.raises(ValueError, match="eviction"):
        EpisodicBuffer(5, eviction="fifo")
    with pytest.raises(ValueError, match="mode"):
        filled().sample(4, mode="greedy")
    with pytest.raises(ValueError, match="empty"):
        EpisodicBuffer(5).sample(2)


def test_reservoir_keeps_an_unbiased_sample_of_the_stream():
    first_half = []
    for seed in range(20):
        buf = EpisodicBuffer(100, seed=seed)
        for start in range(0, 4000, 128):
            idx = torch.arange(start, min(start + 128, 4000))
            buf.add(idx[:, None].float(), torch.zeros(len(idx)))
        assert len(buf) == 100 and buf.seen == 4000
        first_half.append(float((buf.x[:, 0] < 2000).float().mean()))
    # Each kept item is from the first half with probability 1/2; 2000 draws → sd ≈ 0.011.
    assert abs(np.mean(first_half) - 0.5) < 0.04


def test_priority_eviction_keeps_the_highest_priorities():
    buf = EpisodicBuffer(10, eviction="priority")
    prio = torch.randperm(40).float()
    buf.add(prio[:, None], torch.zeros(40), priority=prio)
    assert sorted(buf.priority.tolist()) == list(range(30, 40))
    assert torch.equal(buf.x[:, 0], buf.priority[: len(buf)])


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_prioritized_sampling_follows_priorities(alpha):
    buf = EpisodicBuffer(4, alpha=alpha)
    buf.add(torch.eye(4), torch.arange(4), priority=torch.tensor([1.0, 2.0, 3.0, 10.0]))
    batch = buf.sample(40_000, mode="prioritized", beta=1.0)
    freq = torch.bincount(batch.indices, minlength=4).float() / 40_000
    expected = torch.tensor([1.0, 2.0, 3.0, 10.0]) ** alpha
    expected /= expected.sum()
    assert torch.allclose(freq, expected, atol=0.01)
    # Importance weights undo the bias: rarest item gets weight 1, the commonest the least.
    w = {int(i): float(v) for i, v in zip(batch.indices, batch.weights, strict=True)}
    assert w[0] == pytest.approx(1.0) and w[3] < w[2] < w[1] < w[0]


def test_update_priorities_changes_what_is_sampled():
    buf = EpisodicBuffer(3, alpha=1.0)
    buf.add(torch.eye(3), torch.arange(3))
    buf.update_priorities(torch.tensor([0, 1, 2]), torch.tensor([0.0, 0.0, 5.0]))
    assert set(buf.sample(500, mode="prioritized").indices.tolist()) == {2}
    with pytest.raises(ValueError, match="priorities"):
        buf.update_priorities(torch.tensor([0, 1]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="indices"):
        buf.update_priorities(torch.tensor([7]), torch.tensor([1.0]))


def test_balanced_sampling_evens_out_rare_classes():
    buf = EpisodicBuffer(100)
    buf.add(torch.rand(100, 3), (torch.arange(100) >= 90).long())
    y = buf.sample(20_000, mode="balanced").y
    assert abs(float(y.float().mean()) - 0.5) < 0.02
    assert abs(float(buf.sample(20_000, mode="uniform").y.float().mean()) - 0.1) < 0.02


@pytest.mark.parametrize("storage", ["float32", "float16", "uint8"])
def test_saved_buffer_loads_back_exactly(tmp_path, storage):
    buf = filled(capacity=20, n=50, storage=storage, eviction="reservoir", seed=3)
    buf.update_losses(torch.tensor([1, 2]), torch.tensor([0.1, 2.0]), threshold=0.5)
    path = buf.save(tmp_path / "buffer.safetensors")
    back = EpisodicBuffer.load(path)
    for name in ("capacity", "eviction", "storage", "alpha", "seen", "size", "item_shape"):
        assert getattr(back, name) == getattr(buf, name)
    for key, value in buf.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    # The generator state travels too: both draw the same next batch.
    a, b = buf.sample(16, mode="prioritized"), back.sample(16, mode="prioritized")
    assert torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x)
    assert not list(tmp_path.glob(".*.tmp"))


def test_loading_a_missing_or_foreign_file_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError, match="path"):
        EpisodicBuffer.load(tmp_path / "nope.safetensors")
    save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a saved EpisodicBuffer"):
        EpisodicBuffer.load(tmp_path / "other.safetensors")


def test_compressed_storage_saves_memory_and_stays_close():
    x = torch.rand(64, 784)
    full, small = EpisodicBuffer(64), EpisodicBuffer(64, storage="uint8")
    full.add(x, torch.zeros(64))
    small.add(x, torch.zeros(64))
    assert small.memory_bytes < 0.3 * full.memory_bytes
    assert float((small.x - x).abs().max()) <= 0.5 / 255 + 1e-6


def test_stored_responses_travel_with_their_items_and_through_save(tmp_path):
    buf = EpisodicBuffer(capacity=8, seed=1)
    x = torch.rand(30, 4)
    y = torch.arange(30) % 3
    logits = torch.randn(30, 3)
    for start in range(0, 30, 10):
        sl = slice(start, start + 10)
        buf.add(x[sl], y[sl], task=0, response=logits[sl])
    batch = buf.sample(20)
    assert batch.response is not None
    # Each sampled item carries the response it was stored with (matched by its input).
    for xi, ri in zip(batch.x, batch.response, strict=True):
        source = int(torch.nonzero((x == xi).all(1))[0, 0])
        assert torch.equal(ri, logits[source])
    back = EpisodicBuffer.load(buf.save(tmp_path / "b.safetensors"))
    assert torch.equal(back.state_dict()["response"], buf.state_dict()["response"])
    plain = EpisodicBuffer(capacity=8, seed=1)
    plain.add(x[:8], y[:8])
    assert buf.memory_bytes - plain.memory_bytes == 8 * 3 * 4


def test_responses_are_kept_for_every_item_or_for_none():
    buf = EpisodicBuffer(capacity=4)
    buf.add(torch.rand(2, 4), torch.zeros(2), response=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="response: this buffer keeps"):
        buf.add(torch.rand(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="expected 3 outputs"):
        buf.add(torch.rand(2, 4), torch.zeros(2), response=torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"expected shape \(2, n_outputs\)"):
        buf.add(torch.rand(2, 4), torch.zeros(2), response=torch.zeros(3, 3))
    bare = EpisodicBuffer(capacity=4)
    bare.add(torch.rand(2, 4), torch.zeros(2))
    assert bare.sample(2).response is None
    with pytest.raises(ValueError, match="filled without responses"):
        bare.add(torch.rand(2, 4), torch.zeros(2), response=torch.zeros(2, 3))


def test_a_rejected_first_add_leaves_no_trace_of_its_responses():
    buf = EpisodicBuffer(capacity=4)
    with pytest.raises(ValueError, match="task"):
        buf.add(torch.rand(2, 4), torch.zeros(2), task=torch.zeros(3), response=torch.zeros(2, 3))
    buf.add(torch.rand(2, 4), torch.zeros(2))  # the buffer is still free to keep no responses
    assert buf.sample(2).response is None


@pytest.mark.parametrize("name", ["priority", "reward", "salience", "novelty"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_priorities_and_metadata_are_rejected_by_name(name, bad):
    buf = EpisodicBuffer(4, eviction="priority")
    values = torch.tensor([1.0, bad, 2.0])
    with pytest.raises(ValueError, match=rf"{name}: expected finite .*values, got .*{bad}"):
        buf.add(torch.rand(3, 2), torch.zeros(3), **{name: values})
    assert len(buf) == 0 and buf.seen == 0 and buf.item_shape is None  # no trace of it


def test_a_priority_evicting_buffer_keeps_taking_better_items_after_a_rejected_nan():
    buf = EpisodicBuffer(3, eviction="priority")
    buf.add(torch.rand(3, 2), torch.zeros(3), priority=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="priority"):
        buf.add(torch.rand(1, 2), torch.zeros(1), priority=float("nan"))
    slots = buf.add(torch.rand(2, 2), torch.zeros(2), priority=torch.tensor([5.0, 6.0]))
    assert slots.tolist() == [0, 1]  # the two weakest make room, as they would have before
    assert sorted(buf.priority[: len(buf)].tolist()) == [3.0, 5.0, 6.0]


def test_update_losses_rejects_unfilled_slots_and_non_finite_losses():
    buf = filled(capacity=10, n=4)
    with pytest.raises(ValueError, match=r"indices: expected slots in \[0, 4\), got \[1, 7\]"):
        buf.update_losses(torch.tensor([1, 7]), torch.tensor([0.1, 0.2]), threshold=0.5)
    with pytest.raises(ValueError, match=r"indices: expected slots in \[0, 4\)"):
        buf.update_losses(torch.tensor([-1]), torch.tensor([0.1]), threshold=0.5)
    with pytest.raises(ValueError, match="losses: expected finite values"):
        buf.update_losses(torch.tensor([1]), torch.tensor([float("nan")]), threshold=0.5)
    with pytest.raises(ValueError, match="threshold: expected a finite number"):
        buf.update_losses(torch.tensor([1]), torch.tensor([0.1]), threshold=float("nan"))
    assert torch.equal(buf.meta["loss"][4:], torch.zeros(6))  # nothing written past the filled
    buf.update_losses(torch.tensor([1, 3]), torch.tensor([0.1, 2.0]), threshold=0.5)
    assert buf.metadata()["unfinished"].tolist() == [0.0, 0.0, 0.0, 1.0]


def test_every_bit_flip_in_a_buffer_file_is_an_error_or_changes_nothing(tmp_path):
    buf = filled(capacity=8, n=12, dim=3, eviction="priority")
    path = buf.save(tmp_path / "b.safetensors")
    original = path.read_bytes()
    header = 8 + int.from_bytes(original[:8], "little")
    gen = np.random.default_rng(0)
    positions = list(gen.choice(header * 8, min(header * 8, 500), replace=False)) + list(
        gen.choice(np.arange(header * 8, len(original) * 8), 200, replace=False))

    def digest(b):
        return [(k, v.numpy().tobytes()) for k, v in sorted(b.state_dict().items())] + [
            (b.capacity, b.eviction, b.storage, b.alpha, b.seed, b.seen, b.size, b.item_shape)]

    expected, errors = digest(EpisodicBuffer.load(path)), 0
    damaged = tmp_path / "damaged.safetensors"
    for position in positions:
        data = bytearray(original)
        data[position // 8] ^= 1 << (position % 8)
        damaged.write_bytes(bytes(data))
        try:
            loaded = EpisodicBuffer.load(damaged)
        except ValueError as error:
            assert str(damaged) in str(error), error
            errors += 1
        else:
            assert digest(loaded) == expected, f"bit {position} loaded silently"
    assert errors >= len(positions) - 20


def test_a_buffer_file_written_before_checksums_still_loads(tmp_path):
    import json

    from safetensors.torch import save_file

    buf = filled(capacity=8, n=12, dim=3)
    header = {"capacity": 8, "eviction": "reservoir", "storage": "float32", "alpha": 0.6,
              "seed": 0, "seen": 12, "size": 8, "item_shape": [3]}  # the format before checksums
    old = tmp_path / "old.safetensors"
    tensors = {k: v.contiguous() for k, v in buf.state_dict().items()}
    save_file(tensors, str(old), metadata={"engram.EpisodicBuffer": json.dumps(header)})
    back = EpisodicBuffer.load(old)
    assert torch.equal(back.x, buf.x) and back.seen == 12


def test_token_sequences_are_stored_exactly_with_their_next_token_targets():
    buf = EpisodicBuffer(4, storage="int64")
    tokens = torch.randint(50_000, (6, 7))
    buf.add(tokens[:, :-1], tokens[:, 1:])
    batch = buf.sample(3)
    assert batch.x.dtype == torch.int64 and batch.y.shape == (3, 6)
    assert all(any(torch.equal(x, row) for row in tokens[:, :-1]) for x in batch.x)
    with pytest.raises(TypeError, match="int64"):
        EpisodicBuffer(4, storage="int64").add(torch.rand(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="y: expected targets of shape"):
        buf.add(tokens[:2, :-1], tokens[:2, 1:4])
    with pytest.raises(ValueError, match="one label per item"):
        buf.sample(2, mode="balanced")
