"""Streaming attention with sinks and eviction memories (``engram run streaming.eviction``),
linear-attention / DeltaNet layers and the MQAR task (``engram run streaming.mqar``)."""

from engram.streaming.linear import MIXERS, RecurrentAttention
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
from engram.streaming.mqar import MQARBatch, MQARTask, make_mqar
from engram.streaming.window import Evicted, evicted_mask, visible_mask

__all__ = [
    "MEMORY_KINDS",
    "MIXERS",
    "Evicted",
    "EvictionMemory",
    "KNNMemory",
    "MQARBatch",
    "MQARTask",
    "MatrixMemory",
    "MemoryOptions",
    "NoMemory",
    "ProjectionWrites",
    "RecurrentAttention",
    "StreamingConfig",
    "StreamingTransformer",
    "evicted_mask",
    "make_mqar",
    "memory_for",
    "naive_recurrent",
    "visible_mask",
]
