"""Synthetic episode embeddings for the memory engine: clustered and correlated (their partial,
noisy cues come from ``engram.codes.noisy_partial_cues``).

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
