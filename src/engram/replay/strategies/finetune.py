"""Fine-tuning and joint training: the lower and upper bounds every strategy sits between."""

from __future__ import annotations

from typing import ClassVar

from engram.replay.strategies.base import Strategy


class FineTune(Strategy):
    """Train on each experience alone: whatever it does not share with the last is forgotten."""


class Joint(FineTune):
    """The upper bound: the same step, fed batches from the union of every experience so far.

    It breaks the sequential rule, so the loop driving it must draw those batches;
    ``sees_past_data`` tells the loop to.
    """

    sees_past_data: ClassVar[bool] = True
