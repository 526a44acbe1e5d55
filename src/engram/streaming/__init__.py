"""Streaming attention with sinks and eviction memories (``engram run streaming.eviction``)."""

from engram.streaming.memories import (
    MEMORY_KINDS,
    EvictionMemory,
    KNNMemory,
    MatrixMemory,
    MemoryOptions,
    NoMemory,
    ProjectionWrites,
    memory_for,
    naive_recurrent,
)
from engram.streaming.model import StreamingConfig, StreamingTransformer
from engram.streaming.window import Evicted, evicted_mask, visible_mask

__all__ = [
    "MEMORY_KINDS",
    "Evicted",
    "EvictionMemory",
    "KNNMemory",
    "MatrixMemory",
    "MemoryOptions",
    "NoMemory",
    "ProjectionWrites",
    "StreamingConfig",
    "StreamingTransformer",
    "evicted_mask",
    "memory_for",
    "naive_recurrent",
    "visible_mask",
]
