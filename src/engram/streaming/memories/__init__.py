"""Eviction memories behind one interface (:class:`EvictionMemory`): what keeps a token after
it leaves the attention window.

Kinds (``MEMORY_KINDS``, the names a :class:`~engram.streaming.StreamingConfig` takes):
- ``none``: the window alone (:class:`NoMemory`).
- ``matrix``: M += importance · φ(k)ᵀ v, read φ(q) M / φ(q) z (the source's Option 2, a
  compressive linear-attention memory as in Infini-attention); ``matrix_ones`` writes with
  importance ≡ 1; ``matrix_delta`` writes only what M does not already predict (delta rule).
- ``association``: the same matrix, but the value is stored under the attention-weighted keys
  of the positions the evicted token attended to (the source's Option 1).
- ``knn`` / ``knn_unbounded``: the evicted keys and values themselves, top-k read (Memorizing
  Transformers); the bounded one keeps the ``capacity`` most important entries.
- ``projection``: rank-1 writes into the key and value projections (the source's method).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engram.streaming.memories.base import EvictionMemory, NoMemory, ParallelInputs, State
from engram.streaming.memories.knn import KNNMemory
from engram.streaming.memories.matrix import MatrixMemory, feature_map
from engram.streaming.memories.naive import Recurrence, naive_recurrent, parallel
from engram.streaming.memories.projection import ProjectionWrites


@dataclass(frozen=True)
class MemoryOptions:
    """The settings some kinds read: kNN's top-k and capacity, the projection writes' rate."""

    top_k: int = 4
    capacity: int | None = None
    rate: float = 1e-2
    trainable_rate: bool = False


def _bounded_knn(options: MemoryOptions) -> KNNMemory:
    if options.capacity is None:
        raise ValueError("capacity: the bounded kNN memory needs a capacity, got None")
    return KNNMemory(options.top_k, options.capacity)


KINDS: dict[str, Callable[[MemoryOptions], EvictionMemory]] = {
    "none": lambda o: NoMemory(),
    "matrix": lambda o: MatrixMemory("importance"),
    "matrix_ones": lambda o: MatrixMemory("ones"),
    "matrix_delta": lambda o: MatrixMemory("importance", delta=True),
    "association": lambda o: MatrixMemory("importance", associate=True),
    "knn": _bounded_knn,
    "knn_unbounded": lambda o: KNNMemory(o.top_k, None),
    "projection": lambda o: ProjectionWrites(o.rate, o.trainable_rate),
}
MEMORY_KINDS = tuple(KINDS)


def memory_for(kind: str, options: MemoryOptions = MemoryOptions()) -> EvictionMemory:
    """The memory of one of ``MEMORY_KINDS``."""
    if kind not in KINDS:
        raise ValueError(f"memory: expected one of {MEMORY_KINDS}, got {kind!r}")
    return KINDS[kind](options)


__all__ = [
    "KINDS",
    "MEMORY_KINDS",
    "EvictionMemory",
    "KNNMemory",
    "MatrixMemory",
    "MemoryOptions",
    "NoMemory",
    "ParallelInputs",
    "ProjectionWrites",
    "Recurrence",
    "State",
    "feature_map",
    "memory_for",
    "naive_recurrent",
    "parallel",
]
