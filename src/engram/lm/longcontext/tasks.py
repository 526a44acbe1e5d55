"""Tasks that need what left the window, set inside natural text (the filler is real text).

- :func:`passkey`: "The secret word is QXKRT." early in the text, then ``distance`` tokens
  later "The secret word is " and the word again; the word's letters are scored.
- :func:`key_value`: several "The word for ABC is WXYZ." lines, then text, then the question
  for one of the keys; the value's letters are scored (retrieval by key, not just the latest).
- :func:`position_losses`: the loss of every position of long text, for loss-vs-position.

The secret words and values are random capital letters, so a model can produce them only by
copying from the context (or from a memory of it). A scored letter is a hit when it is the
model's top-1 next token; a trial is solved when every scored letter is a hit.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import torch

from engram.data.text import Tokenizer
from engram.params import Interval, check

LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class Probe:
    """Trials of one task: token streams (B, T); logits at ``positions`` (B, m) predict
    ``targets`` (B, m); ``distance`` tokens from the fact to where it is asked for."""

    tokens: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    distance: int


@dataclass(frozen=True)
class Scores:
    """Per trial: mean log-probability of the scored tokens (nats), share of them that are the
    top-1 token, and whether all are."""

    log_prob: np.ndarray
    letter_accuracy: np.ndarray
    solved: np.ndarray


def _word(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list(LETTERS), length))


def _filler(text: np.ndarray, length: int, rng: np.random.Generator) -> list[int]:
    if length <= 0:
        return []
    if len(text) <= length:
        raise ValueError(f"text: {len(text)} filler tokens are too few for a gap of {length}")
    start = int(rng.integers(0, len(text) - length))
    return [int(t) for t in text[start : start + length]]


def _probe(rows: list[tuple[list[int], int, list[int]]], distance: int) -> Probe:
    """rows: (tokens, index of the first answer token, answer tokens)."""
    tokens = torch.tensor([r[0] for r in rows])
    first = torch.tensor([r[1] for r in rows])[:, None]
    m = len(rows[0][2])
    positions = first - 1 + torch.arange(m)[None]
    return Probe(tokens, positions, torch.tensor([r[2] for r in rows]), distance)


def passkey(
    text: np.ndarray,
    tokenizer: Tokenizer,
    distance: int,
    trials: int,
    seed: int,
    word_length: int = 5,
    lead: int = 4,
) -> Probe:
    """``trials`` passkey streams with ``distance`` tokens from the word's first letter in the
    statement to its first letter in the answer, inside random stretches of ``text`` (tokens)."""
    check("trials", trials, Interval(int, 1, None))
    rng = np.random.default_rng(seed)
    query = tokenizer.encode("\nThe secret word is ")
    rows = []
    for _ in range(trials):
        word = _word(rng, word_length)
        statement = tokenizer.encode("\nThe secret word is ") + tokenizer.encode(word + ".\n")
        gap = distance - word_length - 2 - len(query)
        if gap < 0:
            raise ValueError(f"distance: expected at least {distance - gap} tokens, got {distance}")
        answer = tokenizer.encode(word)
        head = _filler(text, lead, rng) + statement
        tokens = head + _filler(text, gap, rng) + query + answer
        rows.append((tokens, len(tokens) - len(answer), answer))
    return _probe(rows, distance)


def key_value(
    text: np.ndarray,
    tokenizer: Tokenizer,
    distance: int,
    trials: int,
    seed: int,
    pairs: int = 4,
    spacing: int = 16,
    lead: int = 24,
) -> Probe:
    """``trials`` streams of ``pairs`` "The word for KEY is VALUE." lines ``spacing`` text tokens
    apart; ``distance`` tokens after the last line, the question for a random one of them."""
    check("trials", trials, Interval(int, 1, None))
    check("pairs", pairs, Interval(int, 1, None))
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(trials):
        keys: list[str] = []
        while len(keys) < pairs:  # distinct keys, so the question has one answer
            key = _word(rng, 3)
            keys = keys if key in keys else [*keys, key]
        values = [_word(rng, 4) for _ in range(pairs)]
        tokens = _filler(text, lead, rng)
        for key, value in zip(keys, values, strict=True):
            tokens += tokenizer.encode(f"\nThe word for {key} is {value}.\n")
            tokens += _filler(text, spacing, rng)
        asked = int(rng.integers(pairs))
        query = tokenizer.encode(f"\nThe word for {keys[asked]} is ")
        tokens += _filler(text, max(0, distance - spacing - len(query)), rng) + query
        answer = tokenizer.encode(values[asked])
        tokens += answer
        rows.append((tokens, len(tokens) - len(answer), answer))
    return _probe(rows, distance)


def score(logits: torch.Tensor, probe: Probe) -> Scores:
    """How well ``logits`` (B, T, vocab) of the probe's streams predict its targets."""
    if logits.shape[:2] != probe.tokens.shape:
        raise ValueError(
            f"logits: expected shape {tuple(probe.tokens.shape)} + (vocab,), got {tuple(logits.shape)}"
        )
    picked = logits.float().gather(1, probe.positions[..., None].expand(-1, -1, logits.shape[-1]))
    logp = torch.log_softmax(picked, -1).gather(-1, probe.targets[..., None])[..., 0]
    hits = picked.argmax(-1) == probe.targets
    return Scores(
        logp.mean(1).numpy(), hits.float().mean(1).numpy(), hits.all(1).numpy()
    )


def position_losses(logits: torch.Tensor, tokens: torch.Tensor) -> np.ndarray:
    """Cross-entropy (nats) of every next-token prediction, averaged over the batch: (T − 1,)."""
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0]
    return nll.mean(0).numpy()
