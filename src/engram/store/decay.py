"""Bounded, inspectable forgetting: strength decays with time and recall restores it (spacing).

strength(t) = floor + (1 − floor) · exp(−(t − last_access) / S). The stability S starts at
``base_stability`` scaled up by salience and |reward|, and grows at each recall by a factor
that is larger the weaker the episode had become (the spacing effect of Ebbinghaus and of
SM-2-style schedulers), capped at ``max_stability``. Strength never drops below ``floor``, so
an old store never looks empty; an episode is *forgotten* (skipped by recall, removed by
``forget()``) only below ``forget_below``, which is 0 — never — unless a user asks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engram.store import arguments

DAY = 86_400.0


@dataclass(frozen=True)
class DecayPolicy:
    """The forgetting schedule of a store (all times in seconds)."""

    base_stability: float = 30 * DAY
    max_stability: float = 10 * 365 * DAY
    importance_gain: float = 1.0  # S₀ = base · (1 + gain · (salience + |reward|)), capped at 4×
    recall_growth: float = 2.0  # S ← S · (1 + growth · (1 − retrievability at recall))
    replay_growth: float = 0.5  # the same for a replay during sleep, weaker than a real recall
    floor: float = 0.05
    forget_below: float = 0.0

    def __post_init__(self) -> None:
        real = arguments.real
        real(self.base_stability, "base_stability", low=0.0, low_open=True)
        real(self.max_stability, "max_stability", low=self.base_stability)
        for name in ("importance_gain", "recall_growth", "replay_growth"):
            real(getattr(self, name), name, low=0.0)
        real(self.floor, "floor", low=0.0, high=1.0, high_open=True)
        real(self.forget_below, "forget_below", low=0.0, high=1.0, high_open=True)

    def initial_stability(self, salience: float, reward: float) -> float:
        boost = min(4.0, 1.0 + self.importance_gain * (max(salience, 0.0) + abs(reward)))
        return min(self.max_stability, self.base_stability * boost)

    def retrievability(self, stability: np.ndarray | float, elapsed: np.ndarray | float) -> np.ndarray:
        return np.exp(-np.maximum(elapsed, 0.0) / np.maximum(stability, 1e-9))

    def strength(self, stability: np.ndarray | float, elapsed: np.ndarray | float) -> np.ndarray:
        """Strength in [floor, 1] after ``elapsed`` seconds without recall."""
        return self.floor + (1.0 - self.floor) * self.retrievability(stability, elapsed)

    def after_recall(self, stability: float, elapsed: float, growth: float | None = None) -> float:
        """New stability after a recall (or a replay, with ``growth=replay_growth``)."""
        r = float(self.retrievability(stability, elapsed))
        factor = 1.0 + (self.recall_growth if growth is None else growth) * (1.0 - r)
        return min(self.max_stability, stability * factor)

    def forget_at(self, stability: float, last_access: float) -> float | None:
        """Unix time when strength will cross ``forget_below``; None when it never will."""
        if self.forget_below <= self.floor:
            return None
        r = (self.forget_below - self.floor) / (1.0 - self.floor)
        return last_access + stability * math.log(1.0 / r)


@dataclass(frozen=True)
class StrengthReport:
    """Why an episode is as strong as it is, and when it will be forgotten."""

    id: str
    strength: float
    retrievability: float
    stability_days: float
    days_since_access: float
    recalls: int
    replays: int
    forgotten: bool
    forget_at: float | None
    reasons: tuple[str, ...]


def explain(policy: DecayPolicy, eid: str, stability: float, last_access: float, recalls: int,
            replays: int, salience: float, reward: float, now: float) -> StrengthReport:
    """A readable account of one episode's strength under ``policy`` at time ``now``."""
    elapsed = max(0.0, now - last_access)
    r = float(policy.retrievability(stability, elapsed))
    strength = policy.floor + (1.0 - policy.floor) * r
    reasons = [
        f"{elapsed / DAY:.1f} days since it was last stored, recalled or replayed",
        f"stability {stability / DAY:.1f} days (base {policy.base_stability / DAY:.1f}; "
        f"salience {salience:g} and reward {reward:g} raise it; {recalls} recalls and "
        f"{replays} replays grew it)",
        f"strength = {policy.floor:g} + {1 - policy.floor:g} · exp(−{elapsed / DAY:.1f} / "
        f"{stability / DAY:.1f}) = {strength:.3f}, never below the floor {policy.floor:g}",
    ]
    when = policy.forget_at(stability, last_access)
    if when is None:
        reasons.append("never forgotten: forget_below is not above the floor")
    return StrengthReport(
        id=eid, strength=strength, retrievability=r, stability_days=stability / DAY,
        days_since_access=elapsed / DAY, recalls=recalls, replays=replays,
        forgotten=strength < policy.forget_below, forget_at=when, reasons=tuple(reasons),
    )
