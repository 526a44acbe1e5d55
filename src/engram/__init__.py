"""Engram: hippocampus-inspired memory for AI.

The public names of every part, importable from the top (``from engram import AttractorMemory``);
each is loaded on first use, so ``import engram`` costs nothing and needs no optional extra.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "AttractorMemory": "engram.ca3",
    "BatchCompletion": "engram.ca3",
    "CA1Gate": "engram.ca3",
    "CompletionResult": "engram.ca3",
    "ModernHopfield": "engram.ca3",
    "AssociativeMatrix": "engram.hebb",
    "EpisodicBuffer": "engram.replay",
    "EWC": "engram.replay",
    "MemoryGraph": "engram.replay",
    "Sleep": "engram.replay",
    "StreamingTransformer": "engram.streaming",
    "HippocampalTransformer": "engram.lm",
    "MemoryStore": "engram.store",
    "RunFolder": "engram.runs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engram' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
