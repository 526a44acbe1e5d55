"""The confirmatory families, written before any main-run model: the main run's memories against
window+sinks (H), and the variants' claims (V) with their ranking family (R)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engram.streaming.experiments.design import BASELINE, MEMORIES, Config


def main_family(cfg: Config) -> list[dict[str, Any]]:
    """The confirmatory family: each memory against window+sinks, plus two comparisons."""
    present = set(cfg.conditions) | {"projection_frozen"}
    family = [
        {
            "id": f"H{i + 1}",
            "a": m,
            "b": BASELINE,
            "claim": f"{m} recalls evicted bindings better than {BASELINE}",
            "directional": True,
        }
        for i, m in enumerate(m for m in MEMORIES if m in present)
    ]
    extra = [
        ("matrix", "matrix_ones", "importance weighting changes recall (two-sided)"),
        ("knn", "matrix", "at equal state size, kNN and the matrix differ (two-sided)"),
    ]
    for a, b, claim in extra:
        if a in present and b in present:
            family.append(
                {"id": f"H{len(family) + 1}", "a": a, "b": b, "claim": claim, "directional": False}
            )
    return family


def score_name(variant: str) -> str:
    """The score a variant's hypotheses use: recall of the new value for overwritten keys."""
    return "overwritten_accuracy" if variant == "overwrite" else "accuracy"


def variant_family(cells: Mapping[str, tuple[str, ...]], cfg: Config) -> list[dict[str, Any]]:
    """The confirmatory family over all variants (Holm across all of it)."""
    family: list[dict[str, Any]] = []

    def add(variant: str, a: str, b: str | None, claim: str, directional: bool) -> None:
        family.append(
            {
                "id": f"V{len(family) + 1}",
                "variant": variant,
                "a": a,
                "b": b,
                "score": score_name(variant),
                "directional": directional,
                "claim": claim,
            }
        )

    for variant, conditions in cells.items():
        if variant == "in_window":
            if BASELINE in conditions:
                level = 1 / cfg.task(variant).n_pairs
                add(
                    variant,
                    BASELINE,
                    None,
                    f"with every pair inside the window, {BASELINE} recalls bindings "
                    f"(mean > 1/N = {level:g}; one-sided one-sample t-test)",
                    True,
                )
            continue
        for m in conditions:
            if m in MEMORIES:
                what = "new values of overwritten keys" if variant == "overwrite" else "bindings"
                add(variant, m, BASELINE, f"{m} recalls evicted {what} better than {BASELINE}", True)
        pairs = {
            "far": [
                (
                    "knn",
                    "knn_unbounded",
                    "the bounded kNN, which must drop entries, differs from the unbounded one",
                ),
                ("knn", "matrix", "at equal state size, kNN and the matrix differ"),
            ],
            "overwrite": [
                (
                    "matrix_delta",
                    "matrix",
                    "on overwritten keys the delta rule and the additive matrix differ",
                ),
            ],
        }.get(variant, [])
        for a, b, claim in pairs:
            if a in conditions and b in conditions:
                add(variant, a, b, f"{claim} (two-sided)", False)
    return family


def ranking_pairs(cells: Mapping[str, tuple[str, ...]]) -> list[tuple[str, str, str]]:
    """Secondary family: every pair of memories within each variant (two-sided)."""
    out = []
    for variant, conditions in cells.items():
        memories = [c for c in conditions if c in MEMORIES]
        out += [(variant, a, b) for i, a in enumerate(memories) for b in memories[i + 1 :]]
    return out

