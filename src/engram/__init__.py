"""Engram: hippocampus-inspired memory for AI.

Attractor memories (``engram.ca3``), their shared primitives (``engram.codes``,
``engram.hebb``, ``engram.stats``, ``engram.runs``) and the experiments built on them.
"""

__version__ = "0.1.0"
