"""Claims of the eviction experiments: one per pre-registered hypothesis, with its headline
number, its target and its verdict, for the toolkit's claims table."""

from __future__ import annotations

from typing import Any

from engram.runs import Claim
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
