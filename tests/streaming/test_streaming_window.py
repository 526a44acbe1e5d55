import pytest
import torch

from engram.data.recall_tasks import RecallTaskConfig, make_batch, min_query_distance
from engram.streaming import StreamingConfig, StreamingTransformer, evicted_mask, visible_mask


def test_visible_mask_is_sinks_plus_sliding_window():
    mask = visible_mask(8, window=3, n_sink=1)
    assert mask[7].nonzero().flatten().tolist() == [0, 5, 6, 7]
    assert mask[2].nonzero().flatten().tolist() == [0, 1, 2]
    assert not mask.triu(1).any()


def test_evicted_tokens_are_exactly_those_no_longer_visible():
    visible = visible_mask(12, window=4, n_sink=2)
    evicted = evicted_mask(12, window=4, n_sink=2)
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    assert torch.equal(evicted, causal & ~visible)


@pytest.mark.parametrize("window", [0, -3])
def test_window_must_be_positive(window):
    with pytest.raises(ValueError, match="window"):
        StreamingConfig(vocab_size=10, window=window)


def test_more_sinks_than_the_window_is_an_error():
    with pytest.raises(ValueError, match="n_sink"):
        StreamingConfig(vocab_size=10, window=4, n_sink=5)


def test_a_sequence_shorter_than_its_parts_is_an_error():
    with pytest.raises(ValueError, match="seq_len"):
        RecallTaskConfig(n_pairs=4, n_filler=10, seq_len=20)


def test_memory_without_a_window_is_an_error():
    with pytest.raises(ValueError, match="memory"):
        StreamingConfig(vocab_size=10, window=None, memory="matrix")


def test_tokens_out_of_vocabulary_are_an_error():
    model = StreamingTransformer(StreamingConfig(vocab_size=10, d_model=8, window=4))
    with pytest.raises(ValueError, match="tokens"):
        model(torch.tensor([[1, 2, 10]]))


@pytest.mark.parametrize("form", ["stream", "forward"])
def test_eviction_hook_receives_exactly_the_tokens_that_leave_the_window(form):
    torch.manual_seed(0)
    cfg = StreamingConfig(vocab_size=12, d_model=16, n_heads=2, window=5, n_sink=2, memory="matrix")
    model = StreamingTransformer(cfg)
    tokens = torch.randint(0, 12, (3, 17))
    seen = []
    with torch.no_grad():
        getattr(model, form)(tokens, hook=seen.append)
    for layer in range(cfg.n_layers):
        positions = [ev.position for ev in seen if ev.layer == layer]
        # Token j (not a sink) leaves when token j + window arrives, i.e. j ≤ T − 1 − window.
        assert positions == list(range(2, 17 - 5))


def test_eviction_hook_hands_over_the_keys_and_values_of_the_evicted_position():
    torch.manual_seed(1)
    cfg = StreamingConfig(vocab_size=12, d_model=16, n_heads=2, window=4, n_sink=1)
    model = StreamingTransformer(cfg)
    tokens = torch.randint(0, 12, (2, 11))
    streamed, parallel = [], []
    with torch.no_grad():
        model.stream(tokens, hook=streamed.append)
        model(tokens, hook=parallel.append)
    assert len(streamed) == len(parallel) > 0
    streamed.sort(key=lambda ev: (ev.layer, ev.position))
    for a, b in zip(streamed, parallel, strict=True):
        assert (a.layer, a.position) == (b.layer, b.position)
        for name in ("key", "value", "hidden", "importance", "assoc_key"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-4)
        # Importance is the attention received: at most one per query that saw the token.
        assert (a.importance >= 0).all() and (a.importance <= cfg.window + 1e-5).all()


def test_recall_task_uses_disjoint_vocabularies_and_puts_queries_after_the_filler():
    cfg = RecallTaskConfig(n_pairs=3, n_filler=6, key_vocab=5, value_vocab=6, filler_vocab=4)
    batch = make_batch(cfg, 50, torch.Generator().manual_seed(0))
    tokens = batch.tokens
    assert tokens.shape == (50, cfg.length) and (tokens[:, 0] == 0).all()
    keys, values = tokens[:, 1:7:2], tokens[:, 2:7:2]
    assert ((keys >= 1) & (keys <= 5)).all() and ((values >= 6) & (values <= 11)).all()
    assert (tokens[:, 7:13] >= 12).all()
    queries = tokens[:, 13:]
    for row in range(50):
        binding = dict(zip(keys[row].tolist(), values[row].tolist(), strict=True))
        assert [binding[q] for q in queries[row].tolist()] == batch.targets[row, 13:].tolist()
    assert min_query_distance(cfg) == 7


def test_overwrite_variant_answers_with_the_latest_value():
    cfg = RecallTaskConfig(n_pairs=4, n_filler=2, n_overwrite=2, key_vocab=6, value_vocab=8)
    batch = make_batch(cfg, 20, torch.Generator().manual_seed(3))
    for row in range(20):
        seq = batch.tokens[row].tolist()
        latest = {seq[i]: seq[i + 1] for i in range(1, 1 + 2 * 6, 2)}
        for pos in batch.final_queries[row].nonzero().flatten().tolist():
            assert batch.targets[row, pos].item() == latest[seq[pos]]
        assert batch.overwritten_queries[row].sum() == 2


def test_rehearsal_variant_queries_each_key_before_the_filler():
    cfg = RecallTaskConfig(n_pairs=3, n_filler=5, rehearsal=True)
    batch = make_batch(cfg, 4, torch.Generator().manual_seed(0))
    assert batch.rehearsal_queries.sum(1).tolist() == [3] * 4
    assert torch.equal(batch.tokens[:, 7:10], batch.tokens[:, 1:7:2])
