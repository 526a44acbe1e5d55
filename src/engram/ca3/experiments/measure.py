"""Measurements shared by the lab's experiments: recall of a stored set from cues, the
nearest-neighbour lookup baseline, seeded generators, and where a curve crosses a level.

Every experiment answers its cues through ``AttractorMemory.complete_batch`` (the compiled
parallel kernel for synchronous CPU runs) and the same cues through a plain lookup.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from engram import codes
from engram.ca3 import AttractorMemory, BatchCompletion
from engram.ca3.single import RISE_TOLERANCE

RECALL_OVERLAP = 0.95  # a cue counts as recalled when the final state overlaps its target this much
MIXTURE_OVERLAP = 0.25  # a spurious state overlapping ≥ 3 stored patterns this much is a mixture


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch and BLAS on one thread while a lab experiment runs; the compiled batch kernel
    still spreads cues over the cores.

    Measured on the shared 2-core machine: Storkey/pseudo-inverse storing ran about 10× slower
    with a second torch thread, and BLAS calls made inside the kernel's parallel loop (OpenBLAS's
    own threads nested in numba's OpenMP ones) about 18× slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def generator(seed: int, *keys: int) -> np.random.Generator:
    """A generator for one (seed, condition) cell: independent of every other cell and of the
    order in which cells run, so any cell can be rerun alone and gives the same numbers."""
    return np.random.default_rng([int(seed), *(int(k) for k in keys)])


def nearest_neighbour(cues: np.ndarray, patterns: np.ndarray, code: str) -> np.ndarray:
    """The lookup baseline: index of the stored pattern most similar to each cue (unknown units,
    0 in a bipolar cue, add nothing; a sparse cue scores by shared active units)."""
    return codes.overlap(cues, patterns, code).argmax(1)


def energy_rises(energy: np.ndarray) -> tuple[int, int]:
    """(rises, steps) of (B, T) NaN-padded energy traces, with the memory's own tolerance."""
    before, after = energy[:, :-1], energy[:, 1:]
    valid = ~np.isnan(after)
    rises = after[valid] - before[valid] > RISE_TOLERANCE * np.abs(before[valid]) + 1e-6
    return int(np.count_nonzero(rises)), int(np.count_nonzero(valid))


@dataclass(frozen=True)
class Recall:
    """Per-cue outcomes of one batch of cues aimed at known stored targets."""

    completion: BatchCompletion
    recalled: np.ndarray  # final overlap with the target ≥ RECALL_OVERLAP
    hamming: np.ndarray  # units where the final state differs from the target
    spurious: np.ndarray  # converged to a state far from every stored pattern
    mixture: np.ndarray  # spurious and overlapping ≥ 3 stored patterns (a mixture state)
    nn_recalled: np.ndarray  # the nearest-neighbour lookup of the cue is the target

    def means(self) -> dict[str, float]:
        """Shares and means over the batch, named as the CSV columns."""
        c = self.completion
        rises, steps = energy_rises(c.energy)
        return {
            "recall": float(self.recalled.mean()),
            "hamming": float(self.hamming.mean()),
            "spurious": float(self.spurious.mean()),
            "mixture": float(self.mixture.mean()),
            "converged": float(c.converged.mean()),
            "cycled": float(c.cycled.mean()),
            "iterations": float(c.iterations.mean()),
            "accepted": float(c.accepted.mean()),
            "energy_rise_share": rises / steps if steps else 0.0,
            "nn_recall": float(self.nn_recalled.mean()),
        }


def recall(
    memory: AttractorMemory, cues: np.ndarray, targets: np.ndarray, patterns: np.ndarray
) -> Recall:
    """Complete ``cues`` in one batch and score each against ``patterns[targets]``."""
    with warnings.catch_warnings():
        # over-capacity loads are the point of a sweep; the memory's rate warning is expected
        warnings.filterwarnings("ignore", "convergence rate", RuntimeWarning)
        out = memory.complete_batch(cues)
    code = memory.code
    m = codes.overlap(out.states, patterns, code)
    target_overlap = m[np.arange(len(targets)), targets]
    hamming = (out.states != patterns[targets]).sum(1)
    far = m.max(1) < RECALL_OVERLAP
    spurious = out.converged & far
    mixture = spurious & ((np.abs(m) >= MIXTURE_OVERLAP).sum(1) >= 3)
    nn = nearest_neighbour(cues, patterns, code) == targets
    return Recall(out, target_overlap >= RECALL_OVERLAP, hamming, spurious, mixture, nn)


def fixed_point_share(memory: AttractorMemory, patterns: np.ndarray) -> float:
    """Share of stored patterns that one synchronous update leaves exactly unchanged."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "convergence rate", RuntimeWarning)
        out = memory.complete_batch(patterns)
    return float(np.mean(out.converged & (out.iterations == 1)))


def crossing(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """First x at which a falling curve y(x) drops below ``level``, linearly interpolated;
    the last x when it never does (a lower bound) and the first x when it starts below."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    below = np.flatnonzero(y < level)
    if below.size == 0:
        return float(x[-1])
    i = int(below[0])
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (y0 - level) * (x1 - x0) / (y0 - y1))
