"""Long context for ``engram.lm`` models at inference: a sliding window with attention sinks and
a memory of evicted tokens (episodic kNN, compressed, or one of ``engram.streaming``'s),
Transformer-XL-style segment recurrence, and tasks that need what left the window."""

from engram.lm.longcontext.attention import MemoryAttention, Record, memory_attention
from engram.lm.longcontext.memories import (
    KINDS,
    CompressedKV,
    EpisodicKV,
    LayerMemory,
    MemorySpec,
    Slots,
    StreamingEviction,
)
from engram.lm.longcontext.recurrence import RecurrentLM, SegmentRecurrence
from engram.lm.longcontext.window import SlidingWindow, WindowedLM

__all__ = [
    "KINDS",
    "CompressedKV",
    "EpisodicKV",
    "LayerMemory",
    "MemoryAttention",
    "MemorySpec",
    "Record",
    "RecurrentLM",
    "SegmentRecurrence",
    "SlidingWindow",
    "Slots",
    "StreamingEviction",
    "WindowedLM",
    "memory_attention",
]
