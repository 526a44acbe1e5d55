"""Streaming attention with sinks and eviction memories (``engram experiment eviction``)."""

from engram.streaming.memories import (
    MEMORY_KINDS,
    KNNMemory,
    MatrixMemory,
    ProjectionWrites,
    make_memory,
)
from engram.streaming.model import StreamingConfig, StreamingTransformer
from engram.streaming.window import Evicted, evicted_mask, visible_mask

__all__ = [
    "MEMORY_KINDS",
    "Evicted",
    "KNNMemory",
    "MatrixMemory",
    "ProjectionWrites",
    "StreamingConfig",
    "StreamingTransformer",
    "evicted_mask",
    "make_memory",
    "visible_mask",
]
