"""Claims of the eviction experiments: one per pre-registered hypothesis, with its headline
number, its target and its verdict, for the toolkit's claims table."""

from __future__ import annotations

try:
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import sys
from pathlib import Path
from typing import Any

from engram.runs import Claim, claims_markdown
from engram.streaming.experiments.statistics import holds


def _p(value: float) -> str:
    return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


def hypothesis_claim(row: dict[str, Any], conditions: str) -> Claim:
    """A tested hypothesis (a row of the battery's columns with ``id``, ``claim`` and
    ``directional``) as a claim: a's mean against b's, Holm p and Cohen's d."""
    directional = row.get("directional", True)
    return Claim(
        statement=row["claim"],
        measured=(
            f"{row['mean_a']:.3f} vs {row['mean_b']:.3f} "
            f"(Holm p = {_p(row['p_holm'])}, d = {row['cohens_d']:.2f})"
        ),
        target=(f"mean > {row['b']}" if directional else f"mean ≠ {row['b']}") + ", Holm p < 0.05",
        verdict="supported" if holds(row) else "not supported",
        conditions=conditions,
        source=row["id"],
        value=float(row["mean_a"]),
    )


def binding_claim(row: dict[str, Any], conditions: str) -> Claim:
    """A memory's binding-recall test (family B) as a claim."""
    return Claim(
        statement=f"{row['a']} recalls evicted bindings, not only evicted values",
        measured=(
            f"{row['mean_a']:.3f}; {row['seeds_at_least_0.75']}/{row['n_a']} seeds ≥ 0.75 "
            f"(Holm p = {_p(row['p_holm'])})"
        ),
        target=f"mean > value-set level {row['mean_b']:g}, Holm p < 0.05",
        verdict="supported" if holds(row) else "not supported",
        conditions=conditions,
        source="B",
        value=float(row["mean_a"]),
    )


def reported_claims(path: str | Path) -> tuple[list[Claim], list[str]]:
    """The claims of the reported runs, from the headline rows recorded in ``path`` (a TOML
    file of families, each with ``conditions``, ``command`` and ``rows`` in the battery's
    columns), and the command reproducing each."""
    data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    claims, commands = [], []
    for family in data.values():
        for row in family["rows"]:
            recorded = {"directional": True, **row, "diff": row["mean_a"] - row["mean_b"],
                        "significant": row["p_holm"] < 0.05}
            where = f"{row['variant']}; " if "variant" in row else ""
            claims.append(hypothesis_claim(recorded, where + family["conditions"]))
            commands.append(family["command"])
    return claims, commands


def front_page(path: str | Path) -> str:
    """The eviction study's claims table (docs/eviction/notes.md), by the toolkit's writer."""
    return claims_markdown(*reported_claims(path))


if __name__ == "__main__":
    print(front_page(sys.argv[1]), end="")
