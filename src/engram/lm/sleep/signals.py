"""The training-signal scorer: surprise (novelty), explicit flags (reward, correction), salience
and "unfinished" (facts still answered wrongly) become replay priorities through
``engram.replay.PrioritySignals`` over the hippocampus's ``EpisodicBuffer``."""

from __future__ import annotations

import numpy as np
import torch

from engram.data.facts import probe_questions
from engram.lm.model import HippocampalTransformer
from engram.lm.sleep.episodes import Hippocampus
from engram.lm.sleep.probe import probe
from engram.replay.priority import PrioritySignals


class Scorer:
    """Turns the hippocampus's signals into priorities (``signals=None``: uniform replay)."""

    def __init__(self, signals: PrioritySignals | None = None, seed: int = 0):
        self.signals = signals
        self.seed = seed

    def unfinished(self, model: HippocampalTransformer, hippocampus: Hippocampus) -> np.ndarray:
        """Probe every active fact closed-book in the TRAIN question forms (never the held-out
        ones); a fact answered wrongly is unfinished. Returns the margins (> 0: wrong)."""
        index = [i for i in hippocampus.indices() if hippocampus.episodes[i].fact is not None]
        if not index:
            return np.zeros(0)
        facts = [hippocampus.episodes[i].fact for i in index]
        result = probe(model, hippocampus.tokenizer, probe_questions(facts, "train", self.seed),
                       width=hippocampus.layout.context)
        hippocampus.buffer.update_losses(torch.tensor(index), torch.tensor(result.margin),
                                         threshold=0.0)
        return result.margin

    def priorities(self, hippocampus: Hippocampus) -> torch.Tensor:
        """Priority of every stored episode (1 for all with no signals: uniform)."""
        n = len(hippocampus)
        if self.signals is None or n == 0:
            return torch.ones(n)
        self.signals.refresh(hippocampus.buffer)
        return hippocampus.buffer.priority[:n].clone()
