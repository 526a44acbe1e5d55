"""The store's CA1 gate: a calibrated probability that the recalled episode is the cue's own.

The gate scores three features of the pipeline's answer (the winner's masked cosine with the
cue, its margin over the runner-up, its Hopfield attention) with a logistic model. The model
is fitted on the store itself (``fit_gate``): cues made from stored episodes — partial and
noisy — are answered once with their source present (label: did we get it back?) and once
with the source held out (label 0: a novel cue that should be refused). Platt-style logistic
calibration on these pairs is what makes "confidence 0.8" mean right about 80% of the time on
cues like the ones it was fitted on; before a store has enough episodes to fit, a fixed prior
is used and answers say ``calibrated=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES = ("masked_cosine", "margin", "attention")
# The prior before fitting: confident only when the known part of the cue matches closely.
_PRIOR = {"coef": [14.0, 6.0, 0.0], "intercept": -10.0}


@dataclass(frozen=True)
class GateModel:
    """Logistic weights over ``FEATURES``; ``calibrated`` is False for the prior."""

    coef: tuple[float, ...]
    intercept: float
    calibrated: bool
    fitted_on: int = 0

    @classmethod
    def prior(cls) -> GateModel:
        return cls(tuple(_PRIOR["coef"]), float(_PRIOR["intercept"]), calibrated=False)

    @classmethod
    def from_state(cls, state: dict | None) -> GateModel:
        if not state:
            return cls.prior()
        return cls(tuple(state["coef"]), float(state["intercept"]), True, int(state.get("n", 0)))

    def to_state(self) -> dict:
        return {"coef": list(self.coef), "intercept": self.intercept, "n": self.fitted_on}

    def confidence(self, features: np.ndarray) -> np.ndarray:
        """P(correct) for features (B, 3)."""
        z = np.clip(features, -1e6, 1e6) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


def fit_gate(features: np.ndarray, labels: np.ndarray) -> GateModel:
    """Fit the logistic gate on (B, 3) features and 0/1 labels; needs both classes."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels, dtype=int)
    if labels.min() == labels.max():
        raise ValueError(
            f"labels: calibration needs both correct and incorrect answers, got only {labels[0]}s"
        )
    model = LogisticRegression(C=10.0, max_iter=1000).fit(features, labels)
    return GateModel(tuple(float(c) for c in model.coef_[0]), float(model.intercept_[0]), True, len(labels))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE: the bin-weighted mean |accuracy − confidence| over equal-width confidence bins."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)
