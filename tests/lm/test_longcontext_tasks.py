"""Long-context tasks: passkey and key-value streams in text, their scoring, echoed pretraining text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engram.data.text import CharTokenizer
from engram.lm.longcontext import tasks
from engram.lm.longcontext.pretrain import echo

TEXT = "the quick brown fox jumps over the lazy dog.\nThe secret word is wrdfor.ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKENIZER = CharTokenizer.fit(TEXT)
FILLER = np.array(TOKENIZER.encode("the quick brown fox jumps over the lazy dog.\n" * 40))


@pytest.mark.parametrize("distance", [27, 64, 200])
def test_a_passkey_is_asked_for_distance_tokens_after_it_was_given(distance):
    probe = tasks.passkey(FILLER, TOKENIZER, distance, trials=3, seed=0)
    assert probe.tokens.shape[0] == 3 and probe.positions.shape == probe.targets.shape == (3, 5)
    for row, positions, targets in zip(probe.tokens, probe.positions, probe.targets, strict=True):
        text = TOKENIZER.decode(row.tolist())
        word = TOKENIZER.decode(targets.tolist())
        assert word.isupper() and text.endswith("\nThe secret word is " + word)
        assert text.index(word + ".\n") + distance == len(text) - len(word)  # first letter to first
        assert torch.equal(row[positions + 1], targets)  # logits at p predict token p + 1
    with pytest.raises(ValueError, match="distance"):
        tasks.passkey(FILLER, TOKENIZER, 20, trials=1, seed=0)


def test_key_value_asks_for_one_of_distinct_keys_and_scores_its_value():
    probe = tasks.key_value(FILLER, TOKENIZER, 100, trials=4, seed=1, pairs=3)
    for row, targets in zip(probe.tokens, probe.targets, strict=True):
        text = TOKENIZER.decode(row.tolist())
        lines = [line for line in text.split("\n") if line.startswith("The word for ")]
        keys = [line.split()[3] for line in lines[:-1]]
        assert len(lines) == 4 and len(set(keys)) == 3
        asked = lines[-1].split()[3]
        value = TOKENIZER.decode(targets.tolist())
        assert f"The word for {asked} is {value}." in text and text.endswith(value)
        assert len(text) - text.index(f"{asked} is {value}.") > 100


def test_scores_count_top_1_letters_and_log_probabilities():
    probe = tasks.passkey(FILLER, TOKENIZER, 40, trials=2, seed=2)
    B, T = probe.tokens.shape
    logits = torch.zeros(B, T, TOKENIZER.vocab_size)
    logits[0].scatter_(1, torch.roll(probe.tokens[0], -1)[:, None], 10.0)  # trial 0: all right
    scored = tasks.score(logits, probe)
    assert scored.solved.tolist() == [True, False] and scored.letter_accuracy[1] == 0.0
    uniform = -np.log(TOKENIZER.vocab_size)
    assert scored.log_prob[1] == pytest.approx(uniform, abs=1e-5) and scored.log_prob[0] > -0.01
    losses = tasks.position_losses(logits, probe.tokens)
    assert losses.shape == (T - 1,)
    with pytest.raises(ValueError, match="logits"):
        tasks.score(logits[:, :-1], probe)


def test_echoed_text_repeats_recent_stretches_and_keeps_the_text_in_order():
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 1000))
    echoed = echo(text, every=50, seed=0)
    rest = echoed
    for start in range(0, 1000, 50):  # each original piece in order, then a copy of 8–32 recent chars
        assert rest.startswith(text[start : start + 50])
        rest = rest[50:]
        following = text[start + 50 : start + 100]
        length = next(n for n in range(8, 33) if following and rest[n:].startswith(following)) \
            if following else len(rest)
        assert 8 <= length <= 32
        assert rest[:length] in text[max(0, start - 6) : start + 50]
        rest = rest[length:]
    assert rest == ""
