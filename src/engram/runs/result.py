"""What an experiment returns: its claims, its tables and its figures, frozen once built."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Claim:
    """One row of a claims table: a statement, what we measured (one headline number), what
    theory or the target says, the verdict, and the conditions it holds under (a claim is only
    as good as those); ``details`` holds the measurement under every condition."""

    statement: str
    measured: str
    target: str
    verdict: str
    conditions: str
    source: str = ""
    value: float | None = None  # the headline number behind ``measured``, for machines
    details: str = ""  # the measurement in full (every condition), for the run's report

    def __post_init__(self) -> None:
        for name in ("statement", "measured", "target", "verdict", "conditions", "source",
                     "details"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name}: expected a string, got {getattr(self, name)!r}")
        if not self.statement or not self.verdict:
            raise ValueError("statement and verdict: expected non-empty text")


def _frozen_rows(name: str, rows: Any) -> tuple[Mapping[str, Any], ...]:
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise TypeError(
            f"tables[{name!r}]: expected a sequence of rows (mappings), got {type(rows).__name__}"
        )
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"tables[{name!r}][{i}]: expected a mapping, got {type(row).__name__}")
        out.append(MappingProxyType(dict(row)))
    return tuple(out)


RESERVED_TABLES = frozenset({"claims"})  # claims.csv is written from the claims


@dataclass(frozen=True)
class Result:
    """An experiment's outcome: claims, named tables (rows of column -> value, written as
    ``<name>.csv``), figure files it saved in its folder, and the text of its report."""

    claims: tuple[Claim, ...] = ()
    tables: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    figures: tuple[str, ...] = ()
    title: str = ""
    intro: str = ""
    sections: tuple[str, ...] = ()  # further Markdown for report.md (tables, notes)

    def __post_init__(self) -> None:
        claims = tuple(self.claims)
        for i, claim in enumerate(claims):
            if not isinstance(claim, Claim):
                raise TypeError(f"claims[{i}]: expected a Claim, got {type(claim).__name__}")
        if not isinstance(self.tables, Mapping):
            raise TypeError(f"tables: expected a mapping of name -> rows, got {type(self.tables).__name__}")
        tables = {}
        for name, rows in self.tables.items():
            if not isinstance(name, str) or not name or any(c in name for c in "/\\."):
                raise ValueError(f"tables: expected plain names (no '/', '\\\\' or '.'), got {name!r}")
            if name in RESERVED_TABLES:
                raise ValueError(f"tables: {name!r} is the writer's own file; name the table otherwise")
            tables[name] = _frozen_rows(name, rows)
        figures = tuple(self.figures)
        for figure in figures:
            if not isinstance(figure, str) or not figure.endswith(".png"):
                raise ValueError(f"figures: expected PNG file names, got {figure!r}")
        object.__setattr__(self, "claims", claims)
        object.__setattr__(self, "tables", MappingProxyType(tables))
        object.__setattr__(self, "figures", figures)
        object.__setattr__(self, "sections", tuple(self.sections))
