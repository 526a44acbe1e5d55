"""The quick version of the experiment: what must hold for the comparison to mean anything."""

import torch

from engram.data.recall_tasks import RecallTaskConfig, make_batch, min_query_distance
from engram.streaming import StreamingConfig, StreamingTransformer

# One binding keeps the quick version under a minute; the experiment itself uses more.
TASK = RecallTaskConfig(n_pairs=1, n_filler=6, key_vocab=8, value_vocab=8, filler_vocab=2)


def _train(window: int | None, n_sink: int, steps: int = 120) -> float:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = StreamingConfig(
        vocab_size=TASK.vocab_size,
        d_model=32,
        n_heads=2,
        conv_kernel=2,
        window=window,
        n_sink=n_sink,
    )
    model = StreamingTransformer(cfg)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = make_batch(TASK, 32, data)
        loss = model.cross_entropy(batch.tokens, batch.targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    test = make_batch(TASK, 400, torch.Generator().manual_seed(99))
    with torch.no_grad():
        hits = (model(test.tokens).argmax(-1) == test.targets)[test.final_queries]
    return float(hits.float().mean())


def test_every_pair_is_beyond_the_window_models_receptive_field():
    # 2 layers × (window − 1 + conv − 1) = 2 × (1 + 1) tokens back, fewer than the distance.
    assert min_query_distance(TASK) > 2 * (2 - 1 + 2 - 1)


def test_full_attention_learns_the_task():
    assert _train(window=None, n_sink=0) > 0.9


def test_window_only_stays_at_chance_when_every_pair_is_evicted():
    accuracy = _train(window=2, n_sink=1)
    # Chance is 1/8; 400 queries give a binomial SD of about 0.017.
    assert abs(accuracy - TASK.chance) < 0.06
