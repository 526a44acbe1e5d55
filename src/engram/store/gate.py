"""The store's CA1 gate: a calibrated probability that the recalled episode answers the cue.

The gate compares the cue with what recall found, as CA1 compares CA3's output with the direct
input: how well the winner matches the cue (masked cosine, BM25 share, Hopfield attention),
its margin over the rest, how much of the cue the space knows at all (word coverage, names it
has never seen) and whether the speaker the cue names agrees with the winner's
(``engram.store.pipeline.FEATURES``). A logistic model over these features is fitted on
labelled examples (``fit_gate``): for a text space, questions with known answers from
development conversations (the benchmark ships the fitted gate of an embedder as package data,
``gates/<embedder>.json``, used by spaces with no gate of their own); for a vector space, cues
made from its own episodes (``MemoryStore.calibrate``). Before either, a fixed prior is used
and answers say ``calibrated=False``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

from engram.store.pipeline import FEATURES

# Where the gates fitted for embedders ship (package data), one ``<embedder name>.json`` each.
GATES = resources.files("engram.store").joinpath("gates")
# The prior before fitting: confident only when the known part of the cue matches closely.
_PRIOR = {"masked_cosine": 14.0, "margin": 6.0}
_PRIOR_INTERCEPT = -10.0


@dataclass(frozen=True)
class GateModel:
    """Logistic weights over named features; ``calibrated`` is False for the prior.

    ``threshold`` is the confidence below which recall refuses (``RecallConfig.threshold``
    overrides it when set).
    """

    coef: tuple[float, ...]
    intercept: float
    calibrated: bool
    fitted_on: int = 0
    features: tuple[str, ...] = FEATURES
    threshold: float = 0.5

    @classmethod
    def prior(cls) -> GateModel:
        return cls(tuple(_PRIOR.get(f, 0.0) for f in FEATURES), _PRIOR_INTERCEPT, calibrated=False)

    @classmethod
    def from_state(cls, state: dict | None) -> GateModel:
        """The gate saved by ``to_state`` (None or a gate over other features: the prior)."""
        if not state:
            return cls.prior()
        names = tuple(state.get("features", FEATURES[:3]))
        if set(names) - set(FEATURES) or len(names) != len(state["coef"]):
            return cls.prior()
        # Features this version added and the saved gate does not know get weight 0.
        weights = dict(zip(names, state["coef"], strict=True))
        return cls(tuple(float(weights.get(f, 0.0)) for f in FEATURES), float(state["intercept"]), True,
                   int(state.get("n", 0)), FEATURES, float(state.get("threshold", 0.5)))

    def to_state(self) -> dict:
        return {"coef": list(self.coef), "intercept": self.intercept, "n": self.fitted_on,
                "features": list(self.features), "threshold": self.threshold}

    def confidence(self, features: np.ndarray) -> np.ndarray:
        """P(correct) for features (B, len(FEATURES))."""
        z = np.clip(features, -1e6, 1e6) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def fit_gate(features: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> GateModel:
    """Fit the logistic gate on (B, len(FEATURES)) features and 0/1 labels (both needed)."""
    from sklearn.linear_model import LogisticRegression

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if features.ndim != 2 or features.shape[1] != len(FEATURES):
        raise ValueError(f"features: expected shape (n, {len(FEATURES)}) over {FEATURES}, "
                         f"got {features.shape}")
    if len(labels) != len(features):
        raise ValueError(f"labels: expected {len(features)} labels (one per row), got {len(labels)}")
    if not np.isfinite(features).all():
        raise ValueError("features: contains NaN or infinite values")
    if len(labels) == 0 or labels.min() == labels.max():
        raise ValueError(
            f"labels: calibration needs both correct and incorrect answers, got only "
            f"{labels[0] if len(labels) else 'no'} labels"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: expected a value in [0, 1], got {threshold}")
    model = LogisticRegression(C=10.0, max_iter=2000).fit(features, labels)
    return GateModel(tuple(float(c) for c in model.coef_[0]), float(model.intercept_[0]), True, len(labels),
                     FEATURES, float(threshold))


def gate_file_name(embedder_name: str) -> str:
    """The package-data file name of the default gate for an embedder."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", embedder_name).strip("_") + ".json"


def default_gate(embedder_name: str) -> GateModel | None:
    """The gate shipped for this embedder (``engram/store/gates/<name>.json``), if any."""
    entry = GATES.joinpath(gate_file_name(embedder_name))
    if not entry.is_file():
        return None
    return GateModel.from_state(json.loads(entry.read_text()))


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
