"""The Engram memory engine: a persistent episodic memory that completes, refuses, forgets and
consolidates (SQLite + memory-mapped vectors by default, one backend interface for others)."""

from engram.store.backend import Episode, Link, StorageBackend
from engram.store.consolidation import SleepConfig, SleepReport
from engram.store.decay import DecayPolicy, StrengthReport
from engram.store.gate import GateModel, expected_calibration_error
from engram.store.memory import CalibrationReport, MemoryStore, Recalled, RecallResult
from engram.store.pipeline import RecallConfig
from engram.store.sqlite import SQLiteBackend

__all__ = [
    "CalibrationReport",
    "DecayPolicy",
    "Episode",
    "GateModel",
    "Link",
    "MemoryStore",
    "RecallConfig",
    "RecallResult",
    "Recalled",
    "SQLiteBackend",
    "SleepConfig",
    "SleepReport",
    "StorageBackend",
    "StrengthReport",
    "expected_calibration_error",
]
