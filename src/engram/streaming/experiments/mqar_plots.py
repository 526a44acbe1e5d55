"""The MQAR frontier figure: test accuracy against bytes of inference state, one marker per
condition (every seed faint, the mean with its 95% interval solid), one panel per task."""

from __future__ import annotations

from typing import Any

from engram.runs import RunFolder

MARKERS = {
    "full": ("k", "*"),
    "window": ("tab:gray", "o"),
    "matrix_ones": ("tab:blue", "s"),
    "matrix": ("tab:cyan", "s"),
    "matrix_delta": ("tab:purple", "D"),
    "association": ("tab:green", "^"),
    "knn": ("tab:orange", "v"),
    "linear": ("tab:red", "P"),
    "delta": ("tab:brown", "X"),
}


def _label(cfg, s: dict[str, Any]) -> str:
    return s["condition"] if len(cfg.d_models) == 1 else f"{s['condition']} (d_model {s['d_model']})"


def plot_frontier(
    cfg, folder: RunFolder, rows: list[dict[str, Any]], summary: list[dict[str, Any]]
) -> tuple[str, ...]:
    """Save ``frontier.png`` and return its name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(zip(cfg.n_pairs, cfg.lengths, strict=True))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, (n, length) in zip(axes[0], tasks, strict=True):
        for r in rows:
            if (r["n_pairs"], r["length"]) == (n, length):
                color, marker = MARKERS[r["condition"]]
                ax.scatter(r["state_bytes"], r["accuracy"], color=color, marker=marker, alpha=0.3, s=18)
        for s in summary:
            if (s["n_pairs"], s["length"]) != (n, length):
                continue
            color, marker = MARKERS[s["condition"]]
            ax.errorbar(
                s["state_bytes"],
                s["accuracy"],
                yerr=[[s["accuracy"] - s["low"]], [s["high"] - s["accuracy"]]],
                color=color,
                marker=marker,
                markersize=8,
                capsize=3,
                linestyle="none",
                label=_label(cfg, s),
            )
        ax.axhline(1 / n, color="gray", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("inference state after one sequence (bytes, log)")
        ax.set_ylabel("MQAR test accuracy")
        ax.set_title(f"{n} pairs, length {length}, vocabulary {cfg.vocab_size}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes[0][-1].legend(unique.values(), unique.keys(), fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(
        f"window {cfg.window} + {cfg.n_sink} sink; {cfg.seeds} seeds (faint: each seed; "
        f"bars: 95% t interval); dotted: 1 / pairs",
        fontsize=8,
    )
    fig.tight_layout()
    folder.save_figure("frontier.png", fig)
    plt.close(fig)
    return ("frontier.png",)
