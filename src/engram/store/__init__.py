"""The Engram memory engine: a persistent episodic memory that completes, refuses, forgets and
consolidates (SQLite + memory-mapped vectors by default, one backend interface for others)."""

from engram.store.backend import Episode, Link, StorageBackend, StoreError
from engram.store.backends import SQLiteBackend
from engram.store.consolidation import SleepConfig, SleepReport
from engram.store.decay import DecayPolicy, StrengthReport
from engram.store.embed import Embedder, HashingEmbedder, SentenceTransformerEmbedder
from engram.store.gate import GateModel, expected_calibration_error, fit_gate
from engram.store.memory import CalibrationReport, MemoryStore, Recalled, RecallResult
from engram.store.pipeline import RecallConfig

__all__ = [
    "CalibrationReport",
    "DecayPolicy",
    "Embedder",
    "Episode",
    "GateModel",
    "HashingEmbedder",
    "Link",
    "MemoryStore",
    "RecallConfig",
    "RecallResult",
    "Recalled",
    "SQLiteBackend",
    "SentenceTransformerEmbedder",
    "SleepConfig",
    "SleepReport",
    "StorageBackend",
    "StoreError",
    "StrengthReport",
    "expected_calibration_error",
    "fit_gate",
]
