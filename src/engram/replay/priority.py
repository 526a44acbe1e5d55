"""Replay priorities from the signals biology suggests: reward, novelty, salience, incompleteness.

Sharp-wave ripples preferentially replay rewarded, novel and salient experiences, and what is
not yet learned; here each signal is a column of the buffer's metadata, normalised to [0, 1]
over the buffer, and the priority is their weighted sum plus a floor so nothing is starved.
A weight of 0 switches a signal off (the ablations do exactly that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TypeVar

import numpy as np
import torch

from engram.replay.buffer import EpisodicBuffer

SIGNALS = ("reward", "novelty", "salience", "unfinished")
Column = TypeVar("Column", torch.Tensor, np.ndarray)


@dataclass(frozen=True)
class PrioritySignals:
    """Weights of each replay signal; ``floor`` keeps every item's priority above zero.

    ``unfinished`` scores an item by its current loss (items whose loss stays high), and its
    flag (loss above the buffer's threshold) adds one more half point.
    """

    reward: float = 1.0
    novelty: float = 1.0
    salience: float = 1.0
    unfinished: float = 1.0
    floor: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{f.name}: expected a non-negative weight, got {value!r}")
        if self.floor == 0 and self.total() == 0:
            raise ValueError("floor: every weight is 0, so every priority would be 0")

    def total(self) -> float:
        return sum(getattr(self, name) for name in SIGNALS)

    def without(self, signal: str) -> PrioritySignals:
        """The same weights with one signal switched off (for ablations)."""
        if signal not in SIGNALS:
            raise ValueError(f"signal: expected one of {list(SIGNALS)}, got {signal!r}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values[signal] = 0.0
        return PrioritySignals(**values)

    def score(self, metadata: dict[str, torch.Tensor]) -> torch.Tensor:
        """Priority of each item from its metadata columns (see ``EpisodicBuffer.metadata``)."""

        def unit(v: torch.Tensor) -> torch.Tensor:
            lo, hi = v.min(), v.max()
            return (v - lo) / (hi - lo) if hi > lo else torch.zeros_like(v)

        columns = (unit(metadata["reward"]), unit(metadata["novelty"]), unit(metadata["salience"]),
                   unit(metadata["loss"]) + 0.5 * metadata["unfinished"])
        weights = (self.reward, self.novelty, self.salience, self.unfinished)
        return weighted_priority(columns, weights, torch.full_like(metadata["loss"], self.floor))

    def refresh(self, buffer: EpisodicBuffer) -> None:
        """Recompute every stored item's priority from its current metadata."""
        if len(buffer) == 0:
            return
        buffer.update_priorities(torch.arange(len(buffer)), self.score(buffer.metadata()))


def weighted_priority(
    columns: Sequence[Column], weights: Sequence[float], floor: Column | float = 0.0
) -> Column:
    """Replay priority: ``floor`` plus the weighted sum of the signal columns, in column order.

    One formula for both memories that replay: the trained learners' buffer (columns scaled to
    [0, 1] over the buffer, see :meth:`PrioritySignals.score`) and the engine's sleep
    (``engram.store.consolidation``). Works on torch tensors and numpy arrays alike.
    """
    if len(columns) != len(weights):
        raise ValueError(f"weights: expected one per column ({len(columns)}), got {len(weights)}")
    total = floor
    for weight, column in zip(weights, columns, strict=True):
        total = total + weight * column
    return total


def anneal_beta(progress: float, start: float = 0.4, end: float = 1.0) -> float:
    """Importance-sampling exponent β annealed linearly from ``start`` to ``end`` over training."""
    p = min(max(float(progress), 0.0), 1.0)
    return start + (end - start) * p


def atypicality(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Salience proxy: each item's distance from its class's mean within the batch.

    Targets that are not one label per item (a sequence of next tokens) put the whole batch in
    one group, so salience is the distance from the batch mean.
    """
    x = x.flatten(1).float()
    out = torch.zeros(x.shape[0], device=x.device)
    if y.ndim != 1:
        return (x - x.mean(0)).norm(dim=1)
    for c in torch.unique(y):
        m = y == c
        out[m] = (x[m] - x[m].mean(0)).norm(dim=1)
    return out
