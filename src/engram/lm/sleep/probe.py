"""The morning probe: closed-book (only the question in context) or open-book (a retrieved
conversation before it) multiple choice, scored by the model's log-likelihood of each answer.

With ``width`` (the episodes' ``Layout.context``) every prompt is left-padded or cut to that many
tokens, as the night lays out its episodes, so an answer is scored at the positions where the
night trained decision tokens (a model with absolute position codes otherwise meets its
answers at positions it was never taught them at)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engram.data.facts import Question, answer_text, question_prompt
from engram.lm.model import HippocampalTransformer
from engram.lm.sleep.episodes import pad_token


@dataclass(frozen=True)
class ProbeResult:
    """Per question: answered right, and the margin (best wrong − right log-likelihood; > 0 wrong)."""

    correct: np.ndarray
    margin: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.correct.size else float("nan")


@torch.no_grad()
def answer_scores(
    model: HippocampalTransformer, tokenizer, prompts: Sequence[str], answers: Sequence[str],
    batch: int = 256, width: int | None = None,
) -> np.ndarray:
    """Sum of log p(answer tokens | prompt) for each (prompt, answer) pair; a prompt longer than
    the block keeps its end; with ``width``, every prompt is left-padded or cut to that many
    tokens (the pad is the episodes' pad: a space for a character tokenizer)."""
    block = model.config.block_size
    if width is not None and not 1 <= width <= block:
        raise ValueError(f"width: expected 1 ≤ width ≤ block_size {block}, got {width}")
    pad = pad_token(tokenizer)
    rows, spans = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        a = tokenizer.encode(answer)
        keep = block + 1 - len(a) if width is None else min(width, block + 1 - len(a))
        p = tokenizer.encode(prompt)[-keep:]
        if width is not None:
            p = [pad] * (keep - len(p)) + p
        rows.append(p + a)
        spans.append((len(p), len(p) + len(a)))
    out = np.zeros(len(rows))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        width = max(len(r) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, r in enumerate(chunk):
            ids[i, : len(r)] = torch.tensor(r)
        logp = F.log_softmax(model(ids[:, :-1].to(device)).logits.float(), -1).cpu()
        for i, (a, b) in enumerate(spans[start : start + batch]):
            positions = torch.arange(a - 1, b - 1)
            out[start + i] = float(logp[i, positions, ids[i, a:b]].sum())
    model.train(was_training)
    return out


def probe(
    model: HippocampalTransformer, tokenizer, questions: Sequence[Question],
    contexts: Sequence[str] | None = None, width: int | None = None,
) -> ProbeResult:
    """Score each question's candidates; ``contexts`` (one text per question) makes it open-book;
    ``width``: prompts laid out as the episodes are (see the module's note)."""
    prompts, answers, owner = [], [], []
    for i, q in enumerate(questions):
        prompt = (contexts[i] if contexts is not None else "") + question_prompt(q.text)
        for c in q.candidates:
            prompts.append(prompt)
            answers.append(answer_text(c))
            owner.append(i)
    if not questions:
        return ProbeResult(np.zeros(0, bool), np.zeros(0))
    scores = answer_scores(model, tokenizer, prompts, answers, width=width)
    correct, margin = np.zeros(len(questions), bool), np.zeros(len(questions))
    offset = 0
    for i, q in enumerate(questions):
        s = scores[offset : offset + len(q.candidates)]
        offset += len(q.candidates)
        wrong = np.delete(s, q.answer)
        best_wrong = wrong.max() if wrong.size else -np.inf
        margin[i] = best_wrong - s[q.answer] if wrong.size else -1.0
        correct[i] = s[q.answer] > best_wrong
    return ProbeResult(correct, margin)
