"""The report.md of the main run and of the variant study (tables in a fixed column order)."""

from __future__ import annotations

from typing import Any

from engram.runs import markdown_table

EFFECT_COLUMNS = ("diff", "d", "d_low", "d_high", "h", "welch_p", "perm_p", "holm_p", "bh_p", "supported")


def main_report(summary: dict[str, Any]) -> str:
    """The main run's report.md."""
    tests = [{k: t[k] for k in ("id", "a", "b", *EFFECT_COLUMNS)} for t in summary["tests"]]
    return (
        "# Memory after eviction — report\n\n"
        "Measured on a shared 2-core CPU; see preregistration.md for the plan.\n\n"
        "## Accuracy on final queries (per trained model, mean and 95% intervals)\n\n"
        + markdown_table(summary["accuracy"])
        + "\n## Hypotheses\n\n"
        + markdown_table(tests)
        + "\n## Binding recall (secondary family: above the value-set level 1/N)\n\n"
        + markdown_table(summary["binding"])
        + "\n## Costs\n\n"
        + markdown_table(summary["costs"])
        + "\n## Perplexity (tinyshakespeare validation, char-level)\n\n"
        + markdown_table(summary["perplexity"])
        + "\n## Variants (exploratory)\n\n"
        + markdown_table(summary["variants"])
    )


def variants_report(summary: dict[str, Any]) -> str:
    """The variant study's report.md."""
    keep = ("id", "variant", "a", "b", "score", "n_a", "mean_a", "mean_b", *EFFECT_COLUMNS)
    rank = ("family", "variant", "a", "b", "mean_a", "mean_b", "diff", "d", "d_low", "d_high",
            "welch_p", "holm_p", "supported", "escaped_a", "escaped_b", "fisher_p")
    return (
        "# Eviction variants — report\n\n"
        f"Measured on a shared 2-core CPU. Seeds complete in every cell: {summary['seeds']} "
        f"(planned {summary['n_seeds_planned']}); see preregistration-variants.md.\n\n"
        "## Cells\n\n"
        + markdown_table(summary["cells"])
        + "\n## Confirmatory family V (Holm)\n\n"
        + markdown_table([{k: t[k] for k in keep} for t in summary["tests"]])
        + "\n## Ranking (family R, Holm within)\n\n"
        + markdown_table([{k: t[k] for k in rank} for t in summary["ranking"]])
        + "\n## Main run ranking (post hoc, Holm within)\n\n"
        + markdown_table([{k: t[k] for k in rank} for t in summary["main_ranking_post_hoc"]])
        + "\n## Costs at the far task's length\n\n"
        + markdown_table(summary["far_costs"])
    )

