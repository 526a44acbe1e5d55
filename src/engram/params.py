"""Declared parameter constraints, checked by one mechanism.

A function or class states what each argument may be, as data::

    @validated({"n_units": [Interval(int, 2, None)], "code": [Options(("bipolar", "sparse"))]})
    def make(n_units, code="bipolar"): ...

and every violation raises ``InvalidParameterError`` with one wording: the argument's name,
what was expected and what came (``n_units: expected an integer ≥ 2, got 1``). A value of the
wrong kind names its type as well (``got tuple (8, 0)``). Constraints that relate two
arguments (k < n_units) stay with the code that needs them.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, TypeVar

import numpy as np

from engram.errors import EngramError

F = TypeVar("F", bound=Callable[..., Any])
_CLOSED = ("both", "left", "right", "neither")


class InvalidParameterError(EngramError, ValueError, TypeError):
    """An argument outside its declared constraints; a ValueError and a TypeError both, so
    callers catching either (as before the constraints were declared) still catch it."""


def _is_integer(value: Any) -> bool:
    return isinstance(value, (Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (Real, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Interval:
    """Numbers of one kind (``int`` or ``float``; floats admit integers) between two bounds.

    ``None`` leaves a side open-ended; ``closed`` says which bounds belong to the interval;
    ``noun`` names the quantity in messages ("a fraction in [0, 1)").
    """

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"
    noun: str = "value"

    def __post_init__(self) -> None:
        if self.kind not in (int, float):
            raise ValueError(f"kind: expected int or float, got {self.kind!r}")
        if self.closed not in _CLOSED:
            raise ValueError(f"closed: expected one of {_CLOSED}, got {self.closed!r}")

    def admits_type(self, value: Any) -> bool:
        return _is_integer(value) if self.kind is int else _is_real(value)

    def contains(self, value: Any) -> bool:
        if not self.admits_type(value):
            return False
        x = float(value) if self.kind is float else int(value)
        if self.kind is float and math.isnan(x):
            return False
        left = self.closed in ("both", "left")
        right = self.closed in ("both", "right")
        if self.low is not None and (x < self.low or (x == self.low and not left)):
            return False
        return not (self.high is not None and (x > self.high or (x == self.high and not right)))

    def normalise(self, value: Any) -> int | float:
        return int(value) if self.kind is int else float(value)

    def describe(self) -> str:
        low, high = self.low, self.high
        if self.kind is int:
            if high is None and low == 1:
                return "a positive integer"
            if high is None and low == 0:
                return "a non-negative integer"
            parts = [] if low is None else [f"≥ {low}"]
            parts += [] if high is None else [f"≤ {high}"]
            return "an integer " + " and ".join(parts) if parts else "an integer"
        if low is None and high is None:
            return "a number"
        if high is None:
            if low == 0 and self.closed in ("neither", "right"):
                return "a positive number"
            return f"a number {'≥' if self.closed in ('both', 'left') else '>'} {low:g}"
        if low is None:
            return f"a number {'≤' if self.closed in ('both', 'right') else '<'} {high:g}"
        opening = "[" if self.closed in ("both", "left") else "("
        closing = "]" if self.closed in ("both", "right") else ")"
        return f"a {self.noun} in {opening}{low:g}, {high:g}{closing}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (compared with ``==``, strings by exact spelling)."""

    values: tuple[Any, ...]

    def __init__(self, values: Iterable[Any]):
        object.__setattr__(self, "values", tuple(values))

    def admits_type(self, value: Any) -> bool:
        return any(type(value) is type(option) for option in self.values)

    def contains(self, value: Any) -> bool:
        return self.admits_type(value) and value in self.values

    def normalise(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))


@dataclass(frozen=True)
class Instance:
    """Any instance of the given type(s), e.g. ``Instance(torch.Tensor)``."""

    kind: type | tuple[type, ...]
    name: str

    def admits_type(self, value: Any) -> bool:
        return isinstance(value, self.kind)

    contains = admits_type

    def normalise(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return self.name


Constraint = Interval | Options | Instance | None


def _describe(constraints: tuple[Constraint, ...]) -> str:
    return " or ".join("None" if c is None else c.describe() for c in constraints)


def check(name: str, value: Any, *constraints: Constraint) -> Any:
    """``value`` if it meets one of ``constraints`` (``None`` admits None), normalised to a
    plain ``int``/``float``; else an ``InvalidParameterError`` naming ``name``."""
    for constraint in constraints:
        if constraint is None:
            if value is None:
                return None
        elif constraint.contains(value):
            return constraint.normalise(value)
    expected = _describe(constraints)
    if any(c is not None and c.admits_type(value) for c in constraints):
        got = repr(value) if isinstance(value, str) else f"{value}"
    else:
        got = f"{type(value).__name__} {value!r}"
    raise InvalidParameterError(f"{name}: expected {expected}, got {got}")


def check_all(spec: Mapping[str, Iterable[Constraint]], values: Mapping[str, Any]) -> dict[str, Any]:
    """Check every argument ``spec`` declares that ``values`` holds; returns them normalised."""
    return {name: check(name, values[name], *spec[name]) for name in spec if name in values}


def validated(spec: Mapping[str, Iterable[Constraint]]) -> Callable[[F], F]:
    """Decorate a function (or ``__init__``) so that its arguments are checked against
    ``spec`` before it runs, and it receives them normalised."""
    frozen = {name: tuple(constraints) for name, constraints in spec.items()}

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        unknown = set(frozen) - set(signature.parameters)
        if unknown:
            raise ValueError(f"spec: {sorted(unknown)} are not arguments of {function.__qualname__}")

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            bound.arguments.update(check_all(frozen, bound.arguments))
            return function(*bound.args, **bound.kwargs)

        wrapper.__parameter_constraints__ = frozen  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
