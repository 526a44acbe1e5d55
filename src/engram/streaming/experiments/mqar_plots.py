"""The MQAR figures: test accuracy against bytes of inference state, one marker per condition
(every seed faint, the mean with its 95% interval solid), one panel per task; and each model's
validation accuracy against training steps (how long each arm took, or that it did not learn)."""

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
    """Save ``frontier.png`` and ``curves.png`` and return their names."""
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
    return ("frontier.png", _curves(cfg, folder, rows, plt))


def _curves(cfg, folder: RunFolder, rows: list[dict[str, Any]], plt) -> str:
    tasks = list(zip(cfg.n_pairs, cfg.lengths, strict=True))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.5), squeeze=False)
    for ax, (n, length) in zip(axes[0], tasks, strict=True):
        seen = set()
        for r in rows:
            if (r["n_pairs"], r["length"]) != (n, length) or not r["curve"]:
                continue
            color, _ = MARKERS[r["condition"]]
            steps, acc = zip(*r["curve"], strict=True)
            label = None if r["condition"] in seen else r["condition"]
            seen.add(r["condition"])
            ax.plot(steps, acc, color=color, alpha=0.8, linewidth=1.2, label=label)
        ax.axhline(cfg.solve_at, color="gray", linestyle=":", linewidth=1)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{n} pairs, length {length}: one line per model; dotted: solves", fontsize=9)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    folder.save_figure("curves.png", fig)
    plt.close(fig)
    return "curves.png"
