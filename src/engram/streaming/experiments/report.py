"""The Markdown sections of the eviction experiments' reports (tables in a fixed column order);
the toolkit writes report.md around them (title, claims, figures, config)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engram.runs import COLUMNS, markdown_table

# the battery's columns every hypothesis table shows, after the hypothesis's own
TEST_COLUMNS = ("id", *(c for c in COLUMNS if c not in ("test", "statistic")), "h")
RANK_COLUMNS = ("family", "variant", "a", "b", "mean_a", "mean_b", "diff", "cohens_d", "d_low",
                "d_high", "p", "p_holm", "significant", "escaped_a", "escaped_b", "fisher_p")

Tables = Mapping[str, Sequence[Mapping[str, Any]]]


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    return markdown_table(rows, columns) if rows else "(none)\n"


def main_sections(tables: Tables) -> tuple[str, ...]:
    """The main run's tables: accuracy, hypotheses, binding, costs, perplexity, variants."""
    return (
        "## Accuracy on final queries (per trained model, mean and 95% intervals)\n\n"
        + _table(tables["accuracy"]),
        "## Hypotheses (family H, Holm)\n\n" + _table(tables["tests"], ("claim", *TEST_COLUMNS)),
        "## Binding recall (family B: above the value-set level 1/N, Holm)\n\n"
        + _table(tables["binding"]),
        "## Costs\n\n" + _table(tables["costs"]),
        "## Perplexity (tinyshakespeare validation, char-level)\n\n" + _table(tables["perplexity"]),
        "## Variants (exploratory)\n\n" + _table(tables["variants"]),
    )


def variants_sections(tables: Tables, seeds: Sequence[int], planned: int) -> tuple[str, ...]:
    """The variant study's tables: cells, family V, ranking R, the main run's ranking, costs."""
    return (
        f"Seeds complete in every cell: {list(seeds)} (planned {planned}); see "
        "preregistration-variants.md.",
        "## Cells\n\n" + _table(tables["cells"]),
        "## Confirmatory family V (Holm)\n\n"
        + _table(tables["tests"], ("variant", "score", *TEST_COLUMNS)),
        "## Ranking (family R, Holm within)\n\n" + _table(tables["ranking"], RANK_COLUMNS),
        "## Main run ranking (post hoc, Holm within)\n\n"
        + _table(tables["main_ranking_post_hoc"], RANK_COLUMNS),
        "## Costs at the far task's length\n\n" + _table(tables["far_costs"]),
    )
