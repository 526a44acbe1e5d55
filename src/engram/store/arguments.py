"""Argument checks shared by the engine's public classes (``MemoryStore``, ``RecallConfig``, ...).

Each check returns the value in its plain Python type or raises ``TypeError`` (wrong kind of
value) or ``ValueError`` (right kind, out of range) with a message that starts with the
argument's name and says what was expected and what came.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _came(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def integer(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool) in [low, high]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {_came(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"≥ {low}" if high is None else f"≤ {high}" if low is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: expected an integer {span}, got {value!r}")
    return int(value)


def real(value: Any, name: str, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (not a bool) in the interval given by ``low``/``high``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {_came(value)}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        span = ""
        if low is not None or high is not None:
            left = f"{'(' if low_open else '['}{'-inf' if low is None else f'{low:g}'}"
            right = f"{'inf' if high is None else f'{high:g}'}{')' if high_open else ']'}"
            span = f" in {left}, {right}"
        raise ValueError(f"{name}: expected a finite number{span}, got {value!r}")
    return value


def flag(value: Any, name: str) -> bool:
    """A bool (``numpy.bool_`` too); truthy strings or numbers are refused, not guessed."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {_came(value)}")
    return bool(value)


def choice(value: Any, name: str, choices: tuple[str | None, ...]) -> str | None:
    """One of the names ``choices`` (None too, where it is one of them)."""
    if not (value is None or isinstance(value, str)) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def instance(value: Any, name: str, kind: type) -> Any:
    """An instance of ``kind``."""
    if not isinstance(value, kind):
        raise TypeError(f"{name}: expected a {kind.__name__}, got {_came(value)}")
    return value
