"""Long context at inference: the sliding window with sinks and its memories, XL recurrence."""

from __future__ import annotations

import math

import pytest
import torch

from engram.lm.longcontext import (
    KINDS,
    MemorySpec,
    RecurrentLM,
    SegmentRecurrence,
    SlidingWindow,
    WindowedLM,
    memory_attention,
)
from engram.lm.model import HippocampalTransformer, HippocampalTransformerConfig

VOCAB = 11


def tiny(
    parts: tuple[str, ...] = (), block: int = 40, controls: tuple[str, ...] = ()
) -> HippocampalTransformer:
    torch.manual_seed(0)
    config = HippocampalTransformerConfig(
        vocab_size=VOCAB, block_size=block, n_layer=2, n_head=2, n_embd=16, parts=parts, time_max_lag=8,
        controls=controls,
    )
    return HippocampalTransformer(config, token_strings=[chr(97 + i) for i in range(VOCAB)]).eval()


def stream(length: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("parts", "controls"), [((), ()), (("time", "theta_gamma"), ()), ((), ("rope",)),
                                                 ((), ("alibi",))])
def test_a_window_as_long_as_the_stream_gives_the_full_forward(parts, controls):
    model = tiny(parts, controls=controls)
    tokens = stream(30)
    full = model(tokens).logits
    for kind in ("none", "episodic", "projection"):
        lm = WindowedLM(model, SlidingWindow(window=30, sinks=2, chunk=8), MemorySpec(kind, capacity=4))
        torch.testing.assert_close(lm.logits(tokens), full, atol=1e-5, rtol=1e-5)
        assert lm.written == []


@pytest.mark.parametrize("kind", KINDS)
def test_one_token_at_a_time_gives_the_logits_of_whole_chunks(kind):
    model = tiny()
    tokens = stream(48)
    lm = WindowedLM(model, SlidingWindow(window=8, sinks=2, chunk=6), MemorySpec(kind, capacity=8, top_k=3))
    whole = lm.logits(tokens)
    lm.start(2)
    single = torch.cat([lm.feed(tokens[:, t : t + 1]) for t in range(48)], 1)
    torch.testing.assert_close(single, whole, atol=1e-5, rtol=1e-5)


def test_the_evicted_tokens_are_exactly_those_outside_the_sinks_and_the_window():
    model = tiny()
    spec = SlidingWindow(window=10, sinks=3, chunk=5)
    lm = WindowedLM(model, spec, MemorySpec("episodic", capacity=None))
    tokens = stream(61)
    lm.start(2)
    for t in range(61):
        lm.feed(tokens[:, t : t + 1])
        # the frame holding token t opened at frame_start: everything before its window is out
        assert lm.written == list(range(3, max(3, lm.frame_start - 10)))
        assert set(lm.positions) == set(range(min(3, t + 1))) | set(range(max(3, lm.frame_start - 10), t + 1))
    stored = lm.memories[0].state["keys"]
    assert stored.shape[2] == len(lm.written) == 60 - 10 - 3  # the last frame opened at 60


def test_a_stored_key_is_the_layer_key_of_the_last_frame_that_held_the_token():
    model = tiny()
    spec = SlidingWindow(window=8, sinks=2, chunk=4)
    lm = WindowedLM(model, spec, MemorySpec("episodic", capacity=None))
    tokens = stream(48, batch=1)
    lm.logits(tokens)
    attn = model.blocks[0].attn
    for slot, p in enumerate(lm.written):
        last = max(a for a in range(0, 48, 4) if p in spec.context(a) or a <= p < a + 4)
        frame = spec.context(last) + list(range(last, min(last + 4, 48)))
        x = model.wte(tokens[:, frame]) + model.wpe(torch.arange(len(frame)))
        k = attn.c_attn(model.blocks[0].ln_1(x)).split(16, 2)[1][0, frame.index(p)].view(2, 8)
        torch.testing.assert_close(lm.memories[0].state["keys"][0, :, slot], k, atol=1e-5, rtol=1e-5)


def test_state_bytes_are_as_stated_and_the_compressed_slots_are_means_of_evicted_keys():
    model = tiny()
    spec = SlidingWindow(window=8, sinks=2, chunk=4)
    tokens = stream(80)
    every = WindowedLM(model, spec, MemorySpec("episodic", capacity=None))
    every.logits(tokens)
    n = len(every.written)
    layers, heads, d = 2, 2, 8
    bounded = WindowedLM(model, spec, MemorySpec("episodic", capacity=16))
    bounded.logits(tokens)
    assert bounded.memory_bytes() == layers * heads * 16 * 2 * d * 4 < every.memory_bytes()
    assert every.memory_bytes() == layers * heads * n * 2 * d * 4
    assert int(bounded.memories[1].state["alive"][0, 0].sum()) == 16
    pooled = WindowedLM(model, spec, MemorySpec("compressive", capacity=16, rate=4))
    pooled.logits(tokens)
    slots = min(16, math.ceil(n / 4))
    assert pooled.memory_bytes() == layers * heads * slots * 2 * d * 4
    # layer-0 keys do not depend on the memory, so the pooled ones are means of the stored ones
    keys = every.memories[0].state["keys"]
    groups = [keys[:, :, i : i + 4].mean(2) for i in range(0, n, 4)][-slots:]
    torch.testing.assert_close(pooled.memories[0].keys, torch.stack(groups, 2), atol=1e-5, rtol=1e-5)
    matrix = WindowedLM(model, spec, MemorySpec("matrix"))
    matrix.logits(tokens)
    assert matrix.memory_bytes() == layers * heads * (d * d + d) * 4
    assert every.window_bytes() == 2 * spec.frame * 16 * layers * 4


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "none"])
def test_a_memory_changes_nothing_before_the_first_eviction_and_something_after(kind):
    model = tiny()
    spec = SlidingWindow(window=10, sinks=2, chunk=5)
    tokens = stream(70)
    alone = WindowedLM(model, spec).logits(tokens)
    lm = WindowedLM(model, spec, MemorySpec(kind, capacity=8, top_k=2, eta=0.5))
    with_memory = lm.logits(tokens)
    first = 15  # the frame opening at 15 is the first with an evicted token (position 2)
    torch.testing.assert_close(with_memory[:, :first], alone[:, :first], atol=1e-6, rtol=1e-6)
    assert (with_memory[:, first:] - alone[:, first:]).abs().max() > 1e-4


def test_segment_recurrence_of_one_segment_and_of_two_is_the_plain_forward():
    model = tiny(("time",))
    tokens = stream(36)
    full = model(tokens).logits
    one = RecurrentLM(model, SegmentRecurrence(segment=36, memory=0, sinks=0))
    torch.testing.assert_close(one.logits(tokens), full, atol=1e-5, rtol=1e-5)
    two = RecurrentLM(model, SegmentRecurrence(segment=18, memory=16, sinks=2))
    torch.testing.assert_close(two.logits(tokens), full, atol=1e-5, rtol=1e-5)


def test_segment_recurrence_reuses_cached_states_instead_of_re_encoding():
    model = tiny()
    tokens = stream(60)
    spec = SegmentRecurrence(segment=10, memory=10, sinks=2)
    lm = RecurrentLM(model, spec)
    whole = lm.logits(tokens)
    lm.start(2)
    single = torch.cat([lm.feed(tokens[:, t : t + 1]) for t in range(60)], 1)
    torch.testing.assert_close(single, whole, atol=1e-5, rtol=1e-5)
    # from the third segment on, the cached states differ from a re-encoded window's
    window = WindowedLM(model, SlidingWindow(window=10, sinks=2, chunk=10)).logits(tokens)
    torch.testing.assert_close(whole[:, :20], window[:, :20], atol=1e-5, rtol=1e-5)
    assert (whole[:, 20:] - window[:, 20:]).abs().max() > 1e-4
    assert lm.memory_bytes() == 2 * 12 * 16 * 2 * 4


def test_memory_attention_puts_the_model_attention_back_even_after_an_error():
    model = tiny()
    originals = [b.attn for b in model.blocks]
    spec = MemorySpec("none")
    with pytest.raises(RuntimeError, match="boom"), memory_attention(model, [spec.build(), spec.build()]):
        raise RuntimeError("boom")
    assert [b.attn for b in model.blocks] == originals
    outer = memory_attention(model, [spec.build(), spec.build()])
    inner = memory_attention(model, [spec.build(), spec.build()])
    with outer, pytest.raises(ValueError, match="already"), inner:
        pass
    with pytest.raises(ValueError, match="one per layer"), memory_attention(model, [spec.build()]):
        pass


def test_bad_long_context_settings_are_named():
    model = tiny()
    with pytest.raises(ValueError, match=r"window.*block_size 40"):
        WindowedLM(model, SlidingWindow(window=30, sinks=4, chunk=8))
    with pytest.raises(ValueError, match="window"):
        SlidingWindow(window=0)
    with pytest.raises(ValueError, match="kind"):
        MemorySpec("hopfield")
    with pytest.raises(ValueError, match="capacity"):
        MemorySpec("compressive", capacity=None)
    with pytest.raises(ValueError, match=r"memory.*block_size"):
        RecurrentLM(model, SegmentRecurrence(segment=20, memory=20, sinks=4))
    lm = WindowedLM(model, SlidingWindow(window=8))
    with pytest.raises(ValueError, match="tokens"):
        lm.feed(torch.zeros(3, 2, dtype=torch.long))


def test_greedy_decoding_through_a_wide_window_is_the_model_own_greedy_decoding():
    from engram.lm.longcontext.arms import Span, greedy, streamer
    from engram.lm.sample import SamplingConfig, generate

    model = tiny()
    prompt = stream(6, batch=1)
    expected = torch.stack(list(generate(model, prompt, 20, SamplingConfig("greedy"))), 1)
    wide = Span(window=30, sinks=2, chunk=8)
    for arm in ("window", "episodic", "xl"):
        assert torch.equal(greedy(streamer(model, arm, wide), prompt, 20), expected), arm
    narrow = greedy(streamer(model, "episodic", Span(window=8, sinks=2, chunk=4, capacity=4)), prompt, 60)
    assert narrow.shape == (1, 60)
