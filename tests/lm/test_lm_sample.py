"""Decoding: the logit filters as pure functions, and the search strategies."""

from __future__ import annotations

import math

import pytest
import torch

from engram.lm.model import HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.sample import (
    SamplingConfig,
    apply_temperature,
    beam_search,
    complete,
    contrastive_search,
    generate,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
    typical_filter,
)

LOGITS = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


def test_filters_are_pure():
    original = LOGITS.clone()
    for out in (
        top_k_filter(LOGITS, 2),
        top_p_filter(LOGITS, 0.6),
        typical_filter(LOGITS, 0.5),
        repetition_penalty(LOGITS, torch.tensor([[0, 1]]), 1.3),
        apply_temperature(LOGITS, 0.5),
    ):
        assert out is not LOGITS
    assert torch.equal(LOGITS, original)


def test_top_k_keeps_the_k_largest():
    assert kept(top_k_filter(LOGITS, 2)) == [0, 1]
    assert kept(top_k_filter(LOGITS, 99)) == [0, 1, 2, 3, 4]


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    assert kept(top_p_filter(LOGITS, 0.5)) == [0]
    assert kept(top_p_filter(LOGITS, 0.6)) == [0, 1]
    assert kept(top_p_filter(LOGITS, 0.86)) == [0, 1, 2, 3]
    assert kept(top_p_filter(LOGITS, 1.0)) == [0, 1, 2, 3, 4]


def test_typical_keeps_tokens_whose_surprisal_is_near_the_entropy():
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    entropy = float(-(p * p.log()).sum())
    closest = int(torch.argmin((-p.log() - entropy).abs()))
    assert kept(typical_filter(LOGITS, 0.01)) == [closest]
    assert len(kept(typical_filter(LOGITS, 1.0))) == 5


def test_repetition_penalty_lowers_seen_tokens_only():
    logits = torch.tensor([[2.0, -1.0, 3.0]])
    out = repetition_penalty(logits, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 3.0]]


def test_temperature_sharpens_and_rejects_zero():
    sharp = torch.softmax(apply_temperature(LOGITS, 0.5), -1)
    assert sharp[0, 0] > 0.5
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(LOGITS, 0.0)


@pytest.fixture(scope="module")
def model() -> HippocampalTransformer:
    torch.manual_seed(0)
    config = HippocampalTransformerConfig(vocab_size=11, block_size=24, n_layer=2, n_head=2, n_embd=16)
    return HippocampalTransformer(config).eval()


def test_sampling_is_reproducible_with_a_seed(model):
    prompt = torch.tensor([[1, 2, 3]])
    cfg = SamplingConfig("sample", temperature=1.2, top_k=5, top_p=0.9, seed=7)
    a = complete(model, prompt, 15, cfg)
    b = complete(model, prompt, 15, cfg)
    assert torch.equal(a, b) and a.shape == (1, 18)


def test_generation_slides_past_the_block_size(model):
    tokens = list(generate(model, torch.tensor([[1, 2]]), 40, SamplingConfig("greedy")))
    assert len(tokens) == 40


def test_beam_search_with_one_beam_is_greedy(model):
    prompt = torch.tensor([[4, 5, 6]])
    greedy = complete(model, prompt, 10, SamplingConfig("greedy"))
    beam = beam_search(model, prompt, 10, beams=1)
    assert torch.equal(beam.tokens, greedy) and math.isfinite(beam.score)


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(model):
    prompt = torch.tensor([[4, 5, 6]])
    one = beam_search(model, prompt, 8, beams=1)
    four = beam_search(model, prompt, 8, beams=4)
    assert four.score >= one.score - 1e-6


def test_contrastive_search_without_penalty_is_greedy(model):
    prompt = torch.tensor([[7, 8]])
    greedy = complete(model, prompt, 12, SamplingConfig("greedy"))
    assert torch.equal(contrastive_search(model, prompt, 12, k=4, alpha=0.0), greedy)
    penalised = contrastive_search(model, prompt, 12, k=4, alpha=0.9)
    assert penalised.shape == greedy.shape


def test_bad_sampling_input_is_a_clear_error(model):
    with pytest.raises(ValueError, match="strategy"):
        SamplingConfig("nucleus")
    with pytest.raises(ValueError, match="block_size"):
        list(generate(model, torch.zeros(1, 30, dtype=torch.long), 1))
    with pytest.raises(ValueError, match="exceed block_size"):
        beam_search(model, torch.tensor([[1, 2]]), 30)
