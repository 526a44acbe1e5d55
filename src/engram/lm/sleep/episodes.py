"""Episodes: a conversation's fact (or its last turn) laid out as frozen context + decision tokens,
kept by the hippocampus (an ``engram.replay.EpisodicBuffer``) with its training signals.

Every episode is ``length + 1`` tokens: ``length + 1 − decision`` of context (the text before
the decision, left-padded) then ``decision`` tokens (the fact's value, or the last turn's words,
right-padded), so a batch of episodes shares one frozen prefix. The buffer keeps the tokens as
its inputs and a per-position role (0 pad, 1 context, 2 decision) as its targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engram.data.facts import Conversation, Fact, answer_text, question_prompt
from engram.data.text import CharTokenizer
from engram.lm.model import HippocampalTransformer
from engram.lm.sleep.decision import IGNORE, decision_loss
from engram.params import Interval, check
from engram.replay.buffer import EpisodicBuffer

PAD, CONTEXT, DECISION = 0, 1, 2


@dataclass(frozen=True)
class Layout:
    """Token layout of every episode: ``length`` model positions, the last ``decision`` decided."""

    length: int
    decision: int

    def __post_init__(self) -> None:
        check("length", self.length, Interval(int, 2, None))
        check("decision", self.decision, Interval(int, 1, self.length - 1))

    @property
    def context(self) -> int:
        """Context tokens before the first decision token."""
        return self.length + 1 - self.decision

    @property
    def prefix(self) -> int:
        """Model positions whose outputs no decision needs: the frozen part."""
        return self.context - 1


@dataclass(frozen=True)
class Episode:
    """What the hippocampus remembers of one moment: its text parts, fact and flags."""

    conversation: str
    day: int
    context: str
    decision: str
    fact: Fact | None
    reward: float
    salience: float


def episodes_of(conversation: Conversation) -> list[Episode]:
    """One episode per fact told (context: the text before its value), or one for the last turn."""
    text = conversation.text()
    starts = [0]
    for speaker, words in conversation.turns:
        starts.append(starts[-1] + len(f"{speaker}: {words}\n"))
    out = []
    for fact in conversation.facts:
        speaker, words = conversation.turns[fact.turn]
        at = starts[fact.turn] + len(f"{speaker}: ") + words.index(fact.value)
        end = at + len(fact.value)
        out.append(Episode(conversation.id, conversation.day, text[:at], text[at:end + 1], fact,
                           conversation.reward + float(fact.correction), conversation.salience))
    if not out:
        speaker, words = conversation.turns[-1]
        cut = starts[-2] + len(f"{speaker}: ")
        out.append(Episode(conversation.id, conversation.day, text[:cut], text[cut:], None,
                           conversation.reward, conversation.salience))
    return out


def dream_episode(fact: Fact, question: str, fragments: str, day: int) -> Episode:
    """A recombined episode: fragments of other moments, a question form and the fact's value."""
    return Episode("dream", day, fragments + question_prompt(question), answer_text(fact.value),
                   fact, 0.0, 0.0)


def pad_token(tokenizer) -> int:
    """The token that left-pads contexts: a space for a character tokenizer, else id 0."""
    return tokenizer.encode(" ")[0] if isinstance(tokenizer, CharTokenizer) else 0


def encode_episodes(episodes: list[Episode], tokenizer, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [N, length + 1], roles [N, length + 1]) of ``episodes`` in ``layout``."""
    pad = pad_token(tokenizer)
    tokens = torch.full((len(episodes), layout.length + 1), pad, dtype=torch.long)
    roles = torch.zeros_like(tokens)
    for i, episode in enumerate(episodes):
        context = tokenizer.encode(episode.context)[-layout.context:]
        decision = tokenizer.encode(episode.decision)[: layout.decision]
        c0 = layout.context - len(context)
        tokens[i, c0 : layout.context] = torch.tensor(context, dtype=torch.long)
        roles[i, c0 : layout.context] = CONTEXT
        tokens[i, layout.context : layout.context + len(decision)] = torch.tensor(decision)
        roles[i, layout.context : layout.context + len(decision)] = DECISION
    return tokens, roles


def training_pair(tokens: torch.Tensor, roles: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) [N, length]: targets on the decision tokens (``frozen``/``decision``)
    or on every non-pad token (``all``), IGNORE elsewhere."""
    inputs, following, role = tokens[:, :-1], tokens[:, 1:], roles[:, 1:]
    keep = role == DECISION if mode != "all" else role != PAD
    if mode == "all":
        keep = keep & (roles[:, :-1] != PAD)
    return inputs, torch.where(keep, following, torch.full_like(following, IGNORE))


@torch.no_grad()
def surprise(model: HippocampalTransformer, tokens: torch.Tensor, roles: torch.Tensor,
             prefix: int) -> torch.Tensor:
    """Each episode's mean per-token NLL on its decision tokens: how much the model did not expect it."""
    was_training = model.training
    model.eval()
    inputs, targets = training_pair(tokens, roles, "frozen")
    device = next(model.parameters()).device
    out = decision_loss(model, inputs.to(device), targets.to(device), prefix, frozen=True).cpu()
    model.train(was_training)
    return out


class Hippocampus:
    """The fast store: every day's episodes in an ``EpisodicBuffer`` (int64 tokens), their texts
    and facts, which ones a later correction superseded, and which days were forgotten."""

    def __init__(self, tokenizer, layout: Layout, capacity: int = 4096, seed: int = 0):
        self.tokenizer = tokenizer
        self.layout = layout
        self.buffer = EpisodicBuffer(capacity, eviction="priority", storage="int64", seed=seed)
        self.episodes: list[Episode] = []
        self.active: list[bool] = []

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, conversations: list[Conversation], model: HippocampalTransformer | None = None
            ) -> list[int]:
        """Store the episodes of ``conversations`` (a correction supersedes the earlier telling
        of its fact) with ``model``'s surprise as their novelty (0 without a model); returns
        their indices."""
        new = [e for c in conversations for e in episodes_of(c)]
        if not new:
            return []
        if len(self.episodes) + len(new) > self.buffer.capacity:
            raise ValueError(f"capacity: expected room for {len(self.episodes) + len(new)} "
                             f"episodes, got {self.buffer.capacity}")
        tokens, roles = encode_episodes(new, self.tokenizer, self.layout)
        for e in new:
            if e.fact is not None:
                for i, old in enumerate(self.episodes):
                    if old.fact is not None and (old.fact.subject, old.fact.attribute) == (
                            e.fact.subject, e.fact.attribute):
                        self.active[i] = False
        self.buffer.add(tokens, roles, task=torch.tensor([e.day for e in new]),
                        reward=torch.tensor([e.reward for e in new]),
                        salience=torch.tensor([e.salience for e in new]),
                        novelty=torch.zeros(len(new)) if model is None else
                        surprise(model, tokens, roles, self.layout.prefix))
        first = len(self.episodes)
        self.episodes.extend(new)
        self.active.extend([True] * len(new))
        return list(range(first, len(self.episodes)))

    def forget(self, days: set[int]) -> None:
        """Let the store lose every episode of ``days`` (they are never replayed or retrieved)."""
        for i, e in enumerate(self.episodes):
            if e.day in days:
                self.active[i] = False

    def indices(self, day: int | None = None, before: int | None = None) -> list[int]:
        """Active episodes of ``day``, or of every day before ``before``, or all of them."""
        return [i for i, e in enumerate(self.episodes) if self.active[i]
                and (day is None or e.day == day) and (before is None or e.day < before)]

    def tokens(self, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, roles) of the stored episodes ``index``."""
        idx = torch.tensor(index, dtype=torch.long)
        return self.buffer.x[idx], self.buffer.y[idx]

    def retrieve(self, subject: str) -> Episode | None:
        """The latest active episode about ``subject`` (retrieval by the subject's name)."""
        for i in range(len(self.episodes) - 1, -1, -1):
            e = self.episodes[i]
            if self.active[i] and e.fact is not None and e.fact.subject == subject:
                return e
        return None
