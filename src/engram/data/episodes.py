"""Synthetic episode embeddings for the memory engine: clustered, correlated, with partial cues.

Episodes are cluster centres plus individual detail; a shared low-rank component correlates
the details across episodes, the regime where a nearest-neighbour lookup on a fragment of a
cue most often lands on a sibling of the right episode.
"""

from __future__ import annotations

import numpy as np


def clustered_episodes(n: int, dim: int, clusters: int, spread: float, rank: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (n, dim) float32, cluster labels (n,)): centre + spread · (low-rank + noise)."""
    if n < 1 or dim < 2 or clusters < 1 or rank < 0 or spread < 0:
        raise ValueError(
            f"n, dim, clusters, rank, spread: expected n ≥ 1, dim ≥ 2, clusters ≥ 1, rank ≥ 0, "
            f"spread ≥ 0, got {n}, {dim}, {clusters}, {rank}, {spread}"
        )
    centres = rng.standard_normal((clusters, dim))
    labels = rng.integers(0, clusters, n)
    detail = rng.standard_normal((n, dim))
    if rank:
        basis = rng.standard_normal((rank, dim))
        detail = 0.5 * detail + (rng.standard_normal((n, rank)) @ basis) / np.sqrt(rank)
    return (centres[labels] + spread * detail).astype(np.float32), labels


def partial_noisy_cues(episodes: np.ndarray, known_range: tuple[float, float], noise: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cues from episodes: a share of dimensions in ``known_range`` known, Gaussian noise of
    standard deviation ``noise`` times each episode's per-dimension RMS added; (cues, known)."""
    n, dim = episodes.shape
    fractions = rng.uniform(*known_range, size=(n, 1))
    known = rng.random((n, dim)) < fractions
    known[np.arange(n), rng.integers(0, dim, n)] = True
    rms = np.sqrt((episodes**2).mean(1, keepdims=True))
    cues = episodes + noise * rms * rng.standard_normal((n, dim))
    return cues.astype(np.float32), known
