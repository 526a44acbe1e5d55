"""The CA1 gate: accept a completion only when the evidence supports it.

CA1 compares what CA3 returns with what came in (the cue) and with what is stored. Two
measures, both in [0, 1]:
  novelty    — the share of the cue's known units that the completion contradicts
               (bipolar: known = non-zero entries; sparse: known = the cue's active units);
  match      — the overlap of the completion with its nearest stored pattern
               (``codes.overlap``: bipolar m = ξ·s / N, sparse: shared active units / active
               units of ξ).
overlap_score = max(match, 0) · (1 − novelty); below ``threshold`` the answer is "insufficient
evidence". The score is a heuristic, not a calibrated probability (hence not "confidence"). A
cue that is a fragment of a stored pattern completes to that pattern with no contradiction
(score ≈ 1); a cue unlike anything stored either settles far from every pattern (low match) or
is dragged to one that contradicts most of it (high novelty).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engram import codes
from engram.params import Interval, validated


@dataclass(frozen=True)
class GateVerdicts:
    """Per-cue gate outputs for a batch (torch tensors)."""

    nearest: torch.Tensor  # (B,) int64
    overlap: torch.Tensor  # (B,) float32, signed for bipolar codes
    novelty: torch.Tensor  # (B,) float32
    overlap_score: torch.Tensor  # (B,) float32
    accepted: torch.Tensor  # (B,) bool


class CA1Gate:
    """Scores completions against their cue and the stored patterns."""

    @validated({"threshold": [Interval(float, 0.0, 1.0)]})
    def __init__(self, threshold: float = 0.7):
        self.threshold = threshold

    def assess(
        self,
        cues: torch.Tensor,
        states: torch.Tensor,
        patterns: torch.Tensor,
        code: str,
    ) -> GateVerdicts:
        """Gate a batch: cues and states (B, N), stored patterns (P, N), all float32."""
        overlap, nearest = codes.overlap(states, patterns, code).max(1)
        if code == "sparse":
            known = cues > 0
            contradicted = known & (states <= 0)
        else:
            known = cues != 0
            contradicted = known & (states != cues)
        novelty = contradicted.sum(1) / known.sum(1).clamp_min(1)
        score = overlap.clamp_min(0.0) * (1.0 - novelty)
        return GateVerdicts(nearest, overlap, novelty, score, score >= self.threshold)
