"""Sleep consolidation: a fast episodic store replayed into a slow learner.

``EpisodicBuffer`` (the fast store with priorities), ``PrioritySignals`` (reward, novelty,
salience, unfinished), ``MemoryGraph`` (links and recombining "dreams"), ``EWC`` (online, with
per-sample gradients from ``torch.func``), ``Sleep`` (the consolidation loop) and
``FastSlowPair`` (a plastic and a stable learner).
"""

from engram.replay.buffer import EpisodicBuffer, ReplayBatch
from engram.replay.ewc import EWC, fisher_diagonal, fisher_diagonal_loop
from engram.replay.graph import Dream, MemoryGraph
from engram.replay.priority import PrioritySignals, anneal_beta
from engram.replay.sleep import (
    FastSlowPair,
    Sleep,
    SleepPhaseConfig,
    SleepPhaseReport,
    normalise_weights,
    plain_logits,
    response_distance,
    soft_cross_entropy,
)

__all__ = [
    "EWC",
    "Dream",
    "EpisodicBuffer",
    "FastSlowPair",
    "MemoryGraph",
    "PrioritySignals",
    "ReplayBatch",
    "Sleep",
    "SleepPhaseConfig",
    "SleepPhaseReport",
    "anneal_beta",
    "fisher_diagonal",
    "fisher_diagonal_loop",
    "normalise_weights",
    "plain_logits",
    "response_distance",
    "soft_cross_entropy",
]
