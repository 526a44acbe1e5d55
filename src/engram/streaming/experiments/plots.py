"""The eviction experiments' figures: accuracy by condition, against distance and pairs, and
against state size."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engram import stats
from engram.data.recall_tasks import min_query_distance
from engram.runs import RunFolder
from engram.streaming.experiments.design import CONDITIONS, Config


def plot_main(
    cfg: Config,
    folder: RunFolder,
    table: list[dict],
    variants: list[dict],
    costs: list[dict],
    by_condition: dict[str, list[float]],
) -> tuple[str, ...]:
    """Accuracy by condition, against distance and pairs (variants), against state size;
    returns the names of the figures saved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    note = "shared 2-core CPU"
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = [r["condition"] for r in table]
    means = np.array([r["accuracy"] for r in table])
    err = np.array(
        [[r["accuracy"] - r["t_low"] for r in table], [r["t_high"] - r["accuracy"] for r in table]]
    )
    ax.bar(names, means, yerr=err, capsize=3, color="tab:blue", alpha=0.6)
    for i, name in enumerate(names):  # every model, to show how the seeds spread
        ys = by_condition[name]
        ax.scatter(np.full(len(ys), i) + np.linspace(-0.2, 0.2, len(ys)), ys, s=6, c="k")
    ax.axhline(table[0]["chance"], color="grey", ls="--", label="chance")
    ax.axhline(1 / cfg.n_pairs, color="tab:red", ls=":", label="value-set level 1/N")
    ax.set_ylabel("final-query accuracy")
    ax.set_title(f"Recall after eviction (mean, 95% t-interval over seeds; {note})")
    ax.tick_params(axis="x", rotation=45)
    ax.legend()
    folder.save_figure("accuracy_by_condition.png", fig)

    for axis, variants_on_axis, name in (
        ("min_query_distance", ("in_window", "base", "far"), "accuracy_vs_distance.png"),
        ("n_pairs", ("pairs_1", "base", "pairs_4"), "accuracy_vs_pairs.png"),
    ):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for condition in cfg.variant_conditions:
            pts = {}
            for r in variants:
                if r["condition"] == condition and r["variant"] in variants_on_axis:
                    pts.setdefault(r[axis], []).append(r["accuracy"])
            if pts:
                xs = sorted(pts)
                ax.plot(xs, [np.mean(pts[x]) for x in xs], "o-", label=condition)
        ax.axhline(cfg.task().chance, color="grey", ls="--")
        ax.set_xlabel(axis.replace("_", " "))
        ax.set_ylabel("final-query accuracy")
        ax.set_title(f"({note})")
        ax.legend(fontsize=7)
        folder.save_figure(name, fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    acc = {r["condition"]: r["accuracy"] for r in table}
    for c in costs:
        if c["condition"] in acc:
            ax.scatter(c["state_bytes"], acc[c["condition"]])
            ax.annotate(c["condition"], (c["state_bytes"], acc[c["condition"]]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("inference state after one sequence (bytes)")
    ax.set_ylabel("final-query accuracy")
    ax.set_title(f"Accuracy vs state size ({note})")
    folder.save_figure("accuracy_vs_state.png", fig)
    return ("accuracy_by_condition.png", "accuracy_vs_distance.png", "accuracy_vs_pairs.png",
            "accuracy_vs_state.png")


def plot_variants(
    cfg: Config,
    folder: RunFolder,
    cells: list[dict],
    main_rows: list[dict],
    scores: Callable[[str, str], list[float]],
) -> None:
    """Accuracy against distance and against pairs per condition; base from the main run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base_n = len({r["seed"] for r in main_rows})
    for axis, variants, name in (
        ("min_query_distance", ("in_window", "base", "far"), "accuracy_vs_distance.png"),
        ("n_pairs", ("pairs_1", "base", "pairs_4"), "accuracy_vs_pairs.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        conditions = [c for c in CONDITIONS if any(x["condition"] == c for x in cells)]
        for k, c in enumerate(conditions):
            xs, ys, lo, hi = [], [], [], []
            for v in variants:
                if v == "base":
                    acc = [float(r["accuracy"]) for r in main_rows if r["condition"] == c]
                else:
                    acc = (
                        [x for x in scores(v, c)]
                        if any(x["variant"] == v and x["condition"] == c for x in cells)
                        else []
                    )
                if not acc:
                    continue
                ci = stats.mean_ci(acc)
                task = cfg.task(v)
                x = min_query_distance(task) if axis == "min_query_distance" else task.n_pairs
                offset = (k - len(conditions) / 2) * (0.35 if axis == "min_query_distance" else 0.04)
                xs.append(x + offset if axis == "min_query_distance" else x * (1 + offset))
                ys.append(ci.estimate)
                lo.append(ci.estimate - ci.low)
                hi.append(ci.high - ci.estimate)
                ax.scatter(np.full(len(acc), xs[-1]), acc, s=5, color=f"C{k}", alpha=0.5)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", capsize=3, color=f"C{k}", label=c)
        ax.axhline(cfg.task().chance, color="grey", ls="--", lw=0.8, label="chance")
        if axis == "n_pairs":
            ax.set_xscale("log", base=2)
            ax.plot([1, 2, 4], [1, 0.5, 0.25], ":", color="tab:red", lw=0.8, label="1/N")
        else:
            ax.axvline(cfg.receptive_field() + 0.5, color="k", lw=0.6, ls=":")
            ax.axhline(0.5, color="tab:red", ls=":", lw=0.8, label="1/N")
        ax.set_xlabel(axis.replace("_", " "))
        ax.set_ylabel("final-query accuracy")
        ax.set_title(
            f"mean, 95% t-interval; base: main run (n = {base_n}); shared 2-core CPU",
            fontsize=8,
        )
        ax.legend(fontsize=7)
        folder.save_figure(name, fig)
    return ("accuracy_vs_distance.png", "accuracy_vs_pairs.png")

