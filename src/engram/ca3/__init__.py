"""CA3 attractor memory: pattern completion, the CA1 gate, and modern Hopfield retrieval."""

from engram.ca3.gate import CA1Gate
from engram.ca3.memory import AttractorMemory, BatchCompletion, CompletionResult
from engram.ca3.modern import ModernHopfield
from engram.ca3.monitor import ConvergenceStats

__all__ = [
    "AttractorMemory",
    "BatchCompletion",
    "CA1Gate",
    "CompletionResult",
    "ConvergenceStats",
    "ModernHopfield",
]
