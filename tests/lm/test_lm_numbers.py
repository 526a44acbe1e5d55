"""The numbers a tiny seeded model gives, recorded on the code before the redesign (ec1aa70):
renaming the model and moving top-k search and k-WTA onto the shared core must not change
the logits, the loss, the gradients, the kNN-LM loss or a sampled continuation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engram.lm.evaluate import memory_validation_loss
from engram.lm.memory import EpisodicMemory
from engram.lm.model import PARTS, HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.sample import SamplingConfig, complete

VOCAB = [chr(c) for c in range(ord("a"), ord("a") + 20)] + [" ", "\n", ".", ",", "A", "B"]
TINY = {
    "vocab_size": len(VOCAB),
    "block_size": 32,
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "place_cells": 32,
    "time_max_lag": 8,
}
# parts → (loss, Σ|logits|, logits[1, 5, 7], Σ|gradients|, kNN-LM loss exact, kNN-LM loss
# through the approximate-search threshold, sampled tokens), measured at ec1aa70
RECORDED = {
    (): (
        3.2610654830932617,
        214.93612903947906,
        0.10021153837442398,
        83.98312821305404,
        0.6563240687052408,
        0.6563240687052408,
        [19, 9, 16, 14, 19, 23, 24, 25, 0, 9, 10, 11, 12, 13, 14],
    ),
    PARTS: (
        3.2658870220184326,
        166.02431920343952,
        -0.15677691996097565,
        62.51704606326628,
        0.6790500481923422,
        0.6790501276652018,
        [19, 9, 16, 14, 19, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
    ),
}


@pytest.mark.parametrize("parts", list(RECORDED), ids=["plain", "all-parts"])
def test_a_seeded_tiny_model_gives_the_recorded_numbers(parts):
    loss, logit_mass, logit, grad_mass, knn, knn_large, sample = RECORDED[parts]
    torch.manual_seed(0)
    model = HippocampalTransformer(HippocampalTransformerConfig(**TINY, parts=parts), VOCAB)
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(len(VOCAB), (3, 24), generator=generator)
    y = torch.randint(len(VOCAB), (3, 24), generator=generator)
    out = model(x, y)
    assert float(out.loss.detach()) == pytest.approx(loss, rel=1e-6)
    assert float(out.logits.detach().double().abs().sum()) == pytest.approx(logit_mass, rel=1e-6)
    assert float(out.logits[1, 5, 7].detach()) == pytest.approx(logit, rel=1e-5, abs=1e-7)
    out.loss.backward()
    grads = sum(float(p.grad.double().abs().sum()) for p in model.parameters() if p.grad is not None)
    assert grads == pytest.approx(grad_mass, rel=1e-6)
    model.eval()
    text = np.tile(np.arange(26), 4)
    exact = EpisodicMemory(dim=32, k=4, interpolation=0.5)
    exact.store_text(model, torch.from_numpy(text))
    assert memory_validation_loss(model, exact, text, len(text)).nats_per_token == pytest.approx(
        knn, rel=1e-6
    )
    large = EpisodicMemory(dim=32, k=4, interpolation=0.5, faiss_threshold=10)
    large.store_text(model, torch.from_numpy(text))
    assert memory_validation_loss(model, large, text, len(text)).nats_per_token == pytest.approx(
        knn_large, rel=1e-6
    )
    config = SamplingConfig("sample", 0.8, top_k=5, seed=0)
    assert complete(model, x[:1, :5], 10, config, memory=exact)[0].tolist() == sample
