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
# A gate in parts reads each question from its own features: is the cue about what this memory
# holds at all (familiarity: how well anything matches, names the space never saw), and do the
# speakers it names agree with who told the best matches (only for cues that name one). Whether a
# cue names a speaker is left out of both: it is no evidence that memory lacks the answer (a
# space without speakers would refuse every cue; in LoCoMo it only marks foreign questions).
FAMILIARITY = ("masked_cosine", "margin", "attention", "lexical", "coverage", "unknown_names",
               "strangers_only")
AGREEMENT = ("speaker_share", "speaker_gap", "speaker_perspective", "speaker_told_gap")


@dataclass(frozen=True)
class GateModel:
    """Logistic weights over named features; ``calibrated`` is False for the prior.

    One part (no ``familiar_coef`` / ``agree_coef``): ``confidence`` is P(the top episode answers
    the cue), and recall refuses below ``threshold`` (``RecallConfig.threshold`` overrides it).
    In parts: ``holds`` = P(the cue is about this memory) × P(its named speakers agree | it names
    one) is P(the memory holds an answer), the first weights give P(the top episode answers it |
    it holds one), ``confidence`` is the product (still P(the top episode answers the cue)), and
    recall refuses when ``holds`` is below the threshold: a question whose answer lies among the
    candidates, not first, is not refused.
    """

    coef: tuple[float, ...]
    intercept: float
    calibrated: bool
    fitted_on: int = 0
    features: tuple[str, ...] = FEATURES
    threshold: float = 0.5
    familiar_coef: tuple[float, ...] | None = None
    familiar_intercept: float = 0.0
    agree_coef: tuple[float, ...] | None = None
    agree_intercept: float = 0.0

    @classmethod
    def prior(cls) -> GateModel:
        return cls(tuple(_PRIOR.get(f, 0.0) for f in FEATURES), _PRIOR_INTERCEPT, calibrated=False)

    @classmethod
    def from_state(cls, state: dict | None) -> GateModel:
        """The gate saved by ``to_state`` (None or a gate over other features: the prior)."""
        if not state:
            return cls.prior()
        names = tuple(state.get("features", FEATURES[:3]))
        parts = [state.get(f"{part}_coef") for part in ("familiar", "agree")]
        if set(names) - set(FEATURES) or any(len(c) != len(names) for c in [state["coef"], *parts] if c):
            return cls.prior()

        def aligned(coef: list[float] | None) -> tuple[float, ...] | None:
            # Features this version added and the saved gate does not know get weight 0.
            if coef is None:
                return None
            weights = dict(zip(names, coef, strict=True))
            return tuple(float(weights.get(f, 0.0)) for f in FEATURES)

        return cls(aligned(state["coef"]), float(state["intercept"]), True,  # type: ignore[arg-type]
                   int(state.get("n", 0)), FEATURES, float(state.get("threshold", 0.5)),
                   aligned(parts[0]), float(state.get("familiar_intercept", 0.0)),
                   aligned(parts[1]), float(state.get("agree_intercept", 0.0)))

    def to_state(self) -> dict:
        state = {"coef": list(self.coef), "intercept": self.intercept, "n": self.fitted_on,
                 "features": list(self.features), "threshold": self.threshold}
        for part in ("familiar", "agree"):
            coef, intercept = getattr(self, f"{part}_coef"), getattr(self, f"{part}_intercept")
            if coef is not None:
                state.update({f"{part}_coef": list(coef), f"{part}_intercept": intercept})
        return state

    def holds(self, features: np.ndarray) -> np.ndarray | None:
        """P(the memory holds an answer) for features (B, len(FEATURES)); None for a one-part gate."""
        if self.familiar_coef is None and self.agree_coef is None:
            return None
        p = np.ones(len(features))
        if self.familiar_coef is not None:
            p *= _logistic(features, self.familiar_coef, self.familiar_intercept)
        if self.agree_coef is not None:
            named = features[:, FEATURES.index("speaker_named")] > 0
            p *= np.where(named, _logistic(features, self.agree_coef, self.agree_intercept), 1.0)
        return p

    def confidence(self, features: np.ndarray) -> np.ndarray:
        """P(the top episode answers the cue) for features (B, len(FEATURES))."""
        found = _logistic(features, self.coef, self.intercept)
        holds = self.holds(features)
        return found if holds is None else holds * found

    def refusal_scores(self, features: np.ndarray) -> np.ndarray:
        """What the threshold is compared with: ``holds`` for a gate in parts, else ``confidence``."""
        holds = self.holds(features)
        return self.confidence(features) if holds is None else holds


def _logistic(features: np.ndarray, coef: tuple[float, ...], intercept: float) -> np.ndarray:
    z = np.clip(features, -1e6, 1e6) @ np.asarray(coef) + intercept
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def _binary(values: np.ndarray | None, name: str, n: int) -> np.ndarray | None:
    if values is None:
        return None
    values = np.asarray(values)
    if values.shape != (n,) or not np.isin(values, (0, 1)).all():
        raise ValueError(f"{name}: expected {n} values of 0 or 1 (one per row), got shape {values.shape} "
                         f"with values {sorted(set(values.ravel().tolist()))[:5]}")
    return values.astype(int)


def _fit(features: np.ndarray, labels: np.ndarray, columns: tuple[str, ...], what: str
         ) -> tuple[tuple[float, ...], float]:
    """Logistic weights over ``columns`` (zero elsewhere), fitted on rows with both labels."""
    from sklearn.linear_model import LogisticRegression

    if len(labels) == 0 or labels.min() == labels.max():
        raise ValueError(f"{what}: calibration needs both kinds of rows, got "
                         f"{'no rows' if len(labels) == 0 else f'only {labels[0]} labels'}")
    kept = [FEATURES.index(f) for f in columns]
    # Solved to its (unique, L2-regularised) optimum: the default tolerance stopped early, where
    # inputs differing by float32 rounding moved the confidence by 1e-3.
    model = LogisticRegression(C=10.0, max_iter=10000, tol=1e-9).fit(features[:, kept], labels)
    coef = np.zeros(len(FEATURES))
    coef[kept] = model.coef_[0]
    return tuple(float(c) for c in coef), float(model.intercept_[0])


def fit_gate(features: np.ndarray, labels: np.ndarray, threshold: float = 0.5,
             holds: np.ndarray | None = None, foreign: np.ndarray | None = None) -> GateModel:
    """Fit the logistic gate on (B, len(FEATURES)) features and 0/1 labels (the top episode
    answers the cue; both values needed). In parts (see ``GateModel``) with ``foreign`` (0/1:
    the cue is about another memory, e.g. another conversation's question) and/or ``holds``
    (0/1: the memory holds an answer, e.g. an answerable question against an adversarial one);
    a label can be 1 only where the memory holds the answer, and a foreign cue is never held."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    if features.ndim != 2 or features.shape[1] != len(FEATURES):
        raise ValueError(f"features: expected shape (n, {len(FEATURES)}) over {FEATURES}, "
                         f"got {features.shape}")
    if len(labels) != len(features):
        raise ValueError(f"labels: expected {len(features)} labels (one per row), got {len(labels)}")
    if not np.isfinite(features).all():
        raise ValueError("features: contains NaN or infinite values")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: expected a value in [0, 1], got {threshold}")
    holds, foreign = _binary(holds, "holds", len(labels)), _binary(foreign, "foreign", len(labels))
    if holds is None and foreign is None:
        coef, intercept = _fit(features, labels, FEATURES, "labels")
        return GateModel(coef, intercept, True, len(labels), FEATURES, float(threshold))
    held = holds if holds is not None else 1 - foreign  # type: ignore[operator]
    if foreign is not None and (held > 1 - foreign).any():
        raise ValueError(f"holds: row {int(np.flatnonzero(held > 1 - foreign)[0])} says the memory holds "
                         "an answer to a foreign cue")
    if (labels > held).any():
        raise ValueError(f"labels: row {int(np.flatnonzero(labels > held)[0])} says its top episode answers "
                         "a cue the memory holds no answer to")
    coef, intercept = _fit(features[held == 1], labels[held == 1], FEATURES, "labels (of the cues it holds)")
    familiar = agree = None
    if foreign is not None:
        familiar = _fit(features, 1 - foreign, FAMILIARITY, "foreign")
    if holds is not None:
        asked = features[:, FEATURES.index("speaker_named")] > 0
        if foreign is not None:
            asked &= foreign == 0
        agree = _fit(features[asked], holds[asked], AGREEMENT, "holds (of the cues naming a speaker)")
    return GateModel(coef, intercept, True, len(labels), FEATURES, float(threshold),
                     *(familiar or (None, 0.0)), *(agree or (None, 0.0)))


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
