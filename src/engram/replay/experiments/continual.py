"""``engram continual``: strategies side by side on a continual-learning stream, over seeds.

``engram continual run`` trains each chosen strategy for each seed on one benchmark and
scenario and writes a run folder: per-seed accuracy matrices (CSV), the summary with 95%
intervals (JSON), one task × task heat-map per strategy (PNG) and ``report.md``.
``engram continual ablate`` runs the pre-registered variants of ``sleep-replay`` and compares each
with the full method (effect sizes with intervals, Holm-corrected p-values).
"""

from __future__ import annotations

import argparse
import dataclasses
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engram import stats
from engram.data.location import data_root
from engram.data.streams import BENCHMARKS, SCENARIOS, Stream, make_stream
from engram.io import atomic_write_text, to_json
from engram.replay.experiments.continual_train import STRATEGIES, LearnerConfig, RunResult, train_stream
from engram.runs import RunFolder, markdown_table, progress

HIDDEN = {"split-digits": 400, "split-mnist": 400, "permuted-mnist": 1000}
ITERS = {"split-digits": 100, "split-mnist": 500, "permuted-mnist": 500}

# Pre-registered ablations of ``sleep-replay``: name → overrides of LearnerConfig (see docs/continual).
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "uniform": {"sampling": "uniform"},
    "no-reward": {"signals_off": ("reward",)},
    "no-novelty": {"signals_off": ("novelty",)},
    "no-salience": {"signals_off": ("salience",)},
    "no-unfinished": {"signals_off": ("unfinished",)},
    "no-recombination": {"recombine": False},
    "adaptive": {"schedule": "adaptive"},
    # Equal-compute control: uniform reservoir replay while awake, and at each boundary the
    # same number of sleep steps on uniform replay alone — no priorities, no dreams.
    "replay-equal-compute": {"sampling": "uniform", "recombine": False},
}


@dataclass(frozen=True)
class Config:
    """A comparison: one stream, several strategies (or variants), several seeds."""

    benchmark: str = "split-digits"
    scenario: str = "class"
    strategies: tuple[str, ...] = STRATEGIES
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    data_path: str | None = None
    train: LearnerConfig = field(default_factory=LearnerConfig)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    workers: int = 1
    threads: int = 1
    validation: bool = False

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise ValueError(
                f"benchmark: expected one of {list(BENCHMARKS)}, got {self.benchmark!r}"
            )
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario: expected one of {list(SCENARIOS)}, got {self.scenario!r}")
        for s in self.strategies:
            if s not in STRATEGIES:
                raise ValueError(f"strategy: expected one of {list(STRATEGIES)}, got {s!r}")
        if not self.seeds:
            raise ValueError("seeds: expected at least one seed")
        if self.workers < 1 or self.threads < 1:
            raise ValueError(f"workers/threads: expected ≥ 1, got {self.workers}/{self.threads}")
        if self.benchmark != "split-digits":
            path = Path(self.data_path or "")
            if not path.is_file():
                raise FileNotFoundError(f"data_path: MNIST file {self.data_path} does not exist")

    def arms(self) -> dict[str, LearnerConfig]:
        """Each compared arm's training config: named variants if given, else strategies."""
        if self.variants:
            return {
                name: dataclasses.replace(self.train, strategy="sleep-replay", **over)
                for name, over in self.variants.items()
            }
        return {s: dataclasses.replace(self.train, strategy=s) for s in self.strategies}


# ------------------------------------------------------------------------ metrics
def summarize(acc: np.ndarray) -> dict[str, Any]:
    """Final average accuracy, forgetting per task, and backward transfer of one matrix.

    Forgetting of task j: its best accuracy before the last task minus its final accuracy;
    BWT: mean of final minus just-learned accuracy over all but the last task.
    """
    t = acc.shape[0]
    final = acc[-1]
    forgetting = [float(acc[j:t - 1, j].max() - final[j]) for j in range(t - 1)]
    bwt = float(np.mean([final[j] - acc[j, j] for j in range(t - 1)])) if t > 1 else 0.0
    return {
        "final_accuracy": float(final.mean()),
        "forgetting": forgetting,
        "mean_forgetting": float(np.mean(forgetting)) if forgetting else 0.0,
        "bwt": bwt,
    }


_STREAMS: dict[tuple[str, str, str | None, bool], Stream] = {}


def _job(args: tuple[str, str, str | None, LearnerConfig, int, int, bool]) -> RunResult:
    benchmark, scenario, path, train, seed, threads, validation = args
    import torch

    torch.set_num_threads(threads)
    key = (benchmark, scenario, path, validation)
    if key not in _STREAMS:
        _STREAMS[key] = make_stream(benchmark, scenario, path, validation=validation)
    return train_stream(_STREAMS[key], train, seed)


def compare(cfg: Config, folder: RunFolder | None = None) -> dict[str, list[RunResult]]:
    """Run every arm for every seed (in ``cfg.workers`` processes of ``cfg.threads`` threads).

    With a ``folder``, each finished run is appended to ``partial.jsonl`` as it arrives, so an
    interrupted comparison still leaves its finished runs behind.
    """
    arms = cfg.arms()
    labels = [(name, seed) for name in arms for seed in cfg.seeds]
    jobs = [
        (cfg.benchmark, cfg.scenario, cfg.data_path, train, seed, cfg.threads, cfg.validation)
        for train in arms.values() for seed in cfg.seeds
    ]
    results: list[RunResult] = []
    lines: list[str] = []

    def keep(result: RunResult) -> None:
        results.append(result)
        if folder is not None:
            name, seed = labels[len(results) - 1]
            lines.append(to_json({"arm": name, "seed": seed, **dataclasses.asdict(result)})
                         .replace("\n", ""))
            atomic_write_text(folder.file("partial.jsonl"), "\n".join(lines) + "\n")

    if cfg.workers == 1:
        for job in progress(jobs, "continual"):
            keep(_job(job))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn")) as pool:
            for result in progress(pool.map(_job, jobs), "continual", total=len(jobs)):
                keep(result)
    n = len(cfg.seeds)
    return {name: results[i * n:(i + 1) * n] for i, name in enumerate(arms)}


def _interval(values: list[float]) -> dict[str, float]:
    ci = stats.mean_ci(values)
    return {"mean": ci.estimate, "low": ci.low, "high": ci.high}


def tabulate(cfg: Config, results: dict[str, list[RunResult]]) -> dict[str, Any]:
    """Per-arm summaries with 95% intervals over seeds, and the mean accuracy matrices."""
    out: dict[str, Any] = {}
    for name, runs in results.items():
        per_seed = [summarize(r.accuracy) for r in runs]
        out[name] = {
            "final_accuracy": _interval([s["final_accuracy"] for s in per_seed]),
            "mean_forgetting": _interval([s["mean_forgetting"] for s in per_seed]),
            "bwt": _interval([s["bwt"] for s in per_seed]),
            "forgetting_per_task": np.mean([s["forgetting"] for s in per_seed], axis=0),
            "wall_s": _interval([r.wall_s for r in runs]),
            "buffer_bytes": runs[0].buffer_bytes,
            "buffer_items": runs[0].buffer_items,
            "sleeps": runs[0].sleeps,
            "accuracy_matrix": np.mean([r.accuracy for r in runs], axis=0),
            "final_accuracy_per_seed": [s["final_accuracy"] for s in per_seed],
        }
    return out


def contrasts(table: dict[str, Any], reference: str = "full") -> list[dict[str, Any]]:
    """Each arm against ``reference`` on final accuracy: difference, Cohen's d, Holm p."""
    ref = table[reference]["final_accuracy_per_seed"]
    rows = []
    for name, row in table.items():
        if name == reference:
            continue
        other = row["final_accuracy_per_seed"]
        diff = stats.bootstrap_ci(np.subtract(other, ref)) if len(ref) == len(other) else None
        d = stats.cohens_d(other, ref)
        p = stats.welch_test(other, ref).p_value if np.std(other) + np.std(ref) > 0 else 1.0
        rows.append({
            "variant": name, "difference": diff.estimate if diff else float("nan"),
            "diff_low": diff.low if diff else float("nan"),
            "diff_high": diff.high if diff else float("nan"),
            "cohens_d": d.estimate, "d_low": d.low, "d_high": d.high, "p": p,
        })
    if rows:
        reject, adjusted = stats.correct([r["p"] for r in rows], method="holm")
        for r, rej, adj in zip(rows, reject, adjusted, strict=True):
            r["p_holm"], r["significant"] = float(adj), bool(rej)
    return rows


# ------------------------------------------------------------------------ output
def heatmaps(table: dict[str, Any], title: str):
    """One task × task accuracy heat-map per arm, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names), 2.8), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
        m = np.asarray(table[name]["accuracy_matrix"])
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{100 * m[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] < 0.6 else "black")
        ax.set_title(f"{name}\n{100 * m[-1].mean():.1f}%", fontsize=8)
        ax.set_xlabel("tested on task", fontsize=7)
        if k == 0:
            ax.set_ylabel("after training task", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def _pct(iv: dict[str, float]) -> str:
    return f"{100 * iv['mean']:.2f} [{100 * iv['low']:.2f}, {100 * iv['high']:.2f}]"


def report(cfg: Config, table: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    head = (
        f"# engram continual: {cfg.benchmark}, {cfg.scenario}-incremental\n\n"
        f"Seeds {list(cfg.seeds)}; MLP 2×{cfg.train.hidden}, Adam lr {cfg.train.lr}, batch "
        f"{cfg.train.batch}, {cfg.train.iters} steps per task; buffer {cfg.train.buffer_size} "
        f"items. Mean and 95% t-interval over seeds, in percent."
        + (" **Tested on the validation split held out of the training data.**"
           if cfg.validation else "") + "\n\n"
    )
    lines = [
        {
            "arm": name, "final acc %": _pct(r["final_accuracy"]),
            "forgetting %": _pct(r["mean_forgetting"]), "BWT %": _pct(r["bwt"]),
            "wall s": f"{r['wall_s']['mean']:.1f}", "buffer KiB": f"{r['buffer_bytes'] / 1024:.0f}",
        }
        for name, r in table.items()
    ]
    text = head + markdown_table(lines) + "\n![accuracy matrices](accuracy_matrices.png)\n"
    if rows:
        text += "\n## Against the full method (final accuracy)\n\n" + markdown_table(rows)
    return text


def run(cfg: Config, folder: RunFolder) -> dict[str, Any]:
    """Run the comparison and write results, per-seed CSV, heat-maps and the report."""
    results = compare(cfg, folder)
    table = tabulate(cfg, results)
    rows = contrasts(table) if cfg.variants and "full" in table else []
    folder.write_json("results.json", {"arms": table, "contrasts": rows})
    folder.write_csv("per_seed.csv", [
        {"arm": name, "seed": seed, **{k: v for k, v in summarize(r.accuracy).items()
                                       if k != "forgetting"},
         "wall_s": r.wall_s, "buffer_bytes": r.buffer_bytes,
         "accuracy_matrix": r.accuracy.round(4).tolist()}
        for name, runs in results.items() for seed, r in zip(cfg.seeds, runs, strict=True)
    ])
    folder.save_figure("accuracy_matrices.png",
                       heatmaps(table, f"{cfg.benchmark} ({cfg.scenario}-incremental)"))
    folder.write_report(report(cfg, table, rows))
    return {"arms": table, "contrasts": rows}


# --------------------------------------------------------------------------- CLI
def _seeds(text: str) -> tuple[int, ...]:
    try:
        if "-" in text:
            lo, hi = (int(v) for v in text.split("-"))
            return tuple(range(lo, hi + 1))
        return tuple(int(v) for v in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"seeds: expected e.g. 0-4 or 0,1,2, got {text!r}"
        ) from error


def _config(args: argparse.Namespace, variants: dict[str, dict[str, Any]]) -> Config:
    hidden = args.hidden or HIDDEN[args.benchmark]
    train = LearnerConfig(
        hidden=hidden, iters=args.iters or ITERS[args.benchmark], batch=args.batch, lr=args.lr,
        buffer_size=args.buffer, replay_batch=args.batch, ewc_lambda=args.ewc_lambda,
        storage=args.storage, schedule=args.schedule, sleep_steps=args.sleep_steps,
        sleep_lr=args.sleep_lr, sleep_current=args.sleep_current, pair=args.pair,
        pair_decay=args.pair_decay,
        sampling=args.sampling, weight_norm=args.weight_norm, recombine=not args.no_recombine,
        reset_optimizer=not args.keep_optimizer, latent=args.latent, distill=args.distill,
        device=args.device,
    )
    path = args.data
    if path is None and args.benchmark != "split-digits":
        path = str(data_root() / "mnist" / "mnist.npz")
    strategies = STRATEGIES
    if args.strategies:
        strategies = tuple(s.strip() for s in args.strategies.split(","))
    return Config(args.benchmark, args.scenario, strategies, args.seeds, path, train, variants,
                  args.workers, args.threads, args.validation)


def _main(args: argparse.Namespace) -> int:
    variants = {}
    if args.action == "ablate":
        names = args.variants.split(",") if args.variants else list(ABLATIONS)
        for n in names:
            if n not in ABLATIONS:
                raise ValueError(f"variants: expected names from {list(ABLATIONS)}, got {n!r}")
        variants = {n: ABLATIONS[n] for n in names}
    cfg = _config(args, variants)
    name = f"continual-{args.action}-{cfg.benchmark}-{cfg.scenario}"
    folder = RunFolder.create(args.out, name, cfg, seed=cfg.seeds[0])
    out = run(cfg, folder)
    for arm, r in out["arms"].items():
        print(f"{arm:>16}: final {_pct(r['final_accuracy'])}  forgetting "
              f"{_pct(r['mean_forgetting'])}  wall {r['wall_s']['mean']:.1f}s")
    print(f"run folder: {folder.path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "continual", help="continual-learning benchmarks: strategies and ablations",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("run", "ablate"), nargs="?", default="run")
    parser.add_argument("--benchmark", default="split-digits", help=f"one of {list(BENCHMARKS)}")
    parser.add_argument("--scenario", default="class", help=f"one of {list(SCENARIOS)}")
    parser.add_argument("--strategies", default=None,
                        help=f"comma-separated, from {list(STRATEGIES)} (default: all)")
    parser.add_argument("--variants", default=None,
                        help=f"for ablate: comma-separated from {list(ABLATIONS)} (default: all)")
    parser.add_argument("--seeds", type=_seeds, default=(0, 1, 2, 3, 4), help="e.g. 0-4")
    parser.add_argument("--data", default=None, help="MNIST .npz (default: shared data folder)")
    parser.add_argument("--buffer", type=int, default=1000, help="buffer capacity (items)")
    parser.add_argument("--iters", type=int, default=None,
                        help=f"training steps per task (default {ITERS})")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=None, help="units per hidden layer")
    parser.add_argument("--ewc-lambda", type=float, default=1000.0)
    parser.add_argument("--storage", default="float32", choices=("float32", "float16", "uint8"))
    parser.add_argument("--schedule", default="boundary", choices=("boundary", "every", "adaptive"))
    parser.add_argument("--sleep-steps", type=int, default=300)
    parser.add_argument("--sleep-lr", type=float, default=3e-4)
    parser.add_argument("--sleep-current", type=float, default=0.0,
                        help="share of each sleep batch from the current task's data, on top "
                        "of its items already in the buffer")
    parser.add_argument("--pair", action="store_true", help="fast/slow pair for sleep-replay")
    parser.add_argument("--pair-decay", type=float, default=0.999,
                        help="the slow learner's EMA decay per wake step (with --pair)")
    parser.add_argument("--sampling", default="prioritized", choices=("prioritized", "uniform"),
                        help="how sleep-replay samples its replay (wake and sleep)")
    parser.add_argument("--weight-norm", default="max", choices=("max", "mean"),
                        help="importance weights scaled to batch max 1 or batch mean 1")
    parser.add_argument("--no-recombine", action="store_true",
                        help="no dreams in sleep (their share of the batch goes to replay)")
    parser.add_argument("--latent", type=int, default=0, choices=(0, 1, 2),
                        help="compressed replay: store hidden block 1 or 2 instead of the input")
    parser.add_argument("--keep-optimizer", action="store_true",
                        help="keep the wake Adam state across sleeps instead of resetting it")
    parser.add_argument("--distill", type=float, default=0.0,
                        help="response replay: weight of the distance to each replayed item's "
                             "logits at storage time (DER++; 0 = off)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1, help="processes (1 thread each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--validation", action="store_true",
                        help="test on a split held out of the training data (for tuning)")
    parser.add_argument("--out", default="runs", help="root folder of run folders")
    parser.set_defaults(func=_main)
