"""Continual learning: strategies (or ablations of sleep replay) side by side on a stream, over seeds.

Each arm — a strategy of ``continual_train.STRATEGIES``, or a pre-registered variant of
``sleep-replay`` (``ABLATIONS``) — is trained for each seed on one benchmark and scenario, one
job per (arm, seed) through the toolkit's resumable runner. The result holds per-arm
summaries with 95% intervals over seeds, per-seed accuracy matrices, the comparison battery
against the reference arm and one task × task heat-map per arm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engram import stats
from engram.data.location import data_root
from engram.data.streams import BENCHMARKS, SCENARIOS, Stream, make_stream
from engram.errors import ConfigError
from engram.replay.experiments.continual_train import STRATEGIES, LearnerConfig, train_stream
from engram.runs import Claim, Job, Result, RunFolder, against, markdown_table, run_jobs

METHOD = "sleep-replay"

# Pre-registered ablations of sleep replay: name → overrides of LearnerConfig (see docs/continual).
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
    """A comparison: one stream, several arms, seeds ``seed`` … ``seed + n_seeds − 1``.

    ``strategies`` are the arms, unless ``variants`` (names of ``ABLATIONS``) are given: then
    each variant of sleep replay is an arm, compared with ``full``. ``learner`` holds what
    every arm shares (its ``strategy`` is set per arm). ``data_path``: the MNIST file (default:
    the shared data folder's). ``validation`` tests on a split held out of the training data;
    ``test_items`` > 0 tests on only the first that many items of each task (quick forms).
    """

    benchmark: str = "split-digits"
    scenario: str = "class"
    strategies: tuple[str, ...] = STRATEGIES
    variants: tuple[str, ...] = ()
    seed: int = 0
    n_seeds: int = 5
    learner: LearnerConfig = field(default_factory=lambda: LearnerConfig(iters=100))
    data_path: str = ""
    validation: bool = False
    test_items: int = 0

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise ConfigError(
                f"benchmark: expected one of {list(BENCHMARKS)}, got {self.benchmark!r}"
            )
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"scenario: expected one of {list(SCENARIOS)}, got {self.scenario!r}")
        for name, choices in (("strategies", STRATEGIES), ("variants", tuple(ABLATIONS))):
            arms = getattr(self, name)
            for arm in arms:
                if arm not in choices:
                    raise ConfigError(f"{name}: expected names from {list(choices)}, got {arm!r}")
            if len(set(arms)) != len(arms):
                raise ConfigError(f"{name}: expected each name once, got {list(arms)}")
        if not self.strategies and not self.variants:
            raise ConfigError("strategies: expected at least one arm, got none")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed: expected a non-negative integer, got {self.seed!r}")
        if isinstance(self.n_seeds, bool) or not isinstance(self.n_seeds, int) or self.n_seeds < 1:
            raise ConfigError(f"n_seeds: expected a positive integer, got {self.n_seeds!r}")
        if isinstance(self.test_items, bool) or not isinstance(self.test_items, int) \
                or self.test_items < 0:
            raise ConfigError(f"test_items: expected an integer ≥ 0, got {self.test_items!r}")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.n_seeds))

    @property
    def reference(self) -> str | None:
        """The arm the others are compared with: ``full`` in an ablation, else sleep replay."""
        if self.variants:
            return "full" if "full" in self.variants else None
        return METHOD if METHOD in self.strategies else None

    def arms(self) -> dict[str, LearnerConfig]:
        """Each compared arm's learner: named variants of sleep replay if given, else strategies."""
        if self.variants:
            return {name: dataclasses.replace(self.learner, strategy=METHOD, **ABLATIONS[name])
                    for name in self.variants}
        return {s: dataclasses.replace(self.learner, strategy=s) for s in self.strategies}


QUICK = Config(
    strategies=("finetune", "replay", METHOD), n_seeds=2, test_items=200,
    learner=LearnerConfig(hidden=16, iters=10, batch=16, replay_batch=16, buffer_size=40,
                          sleep_steps=5),
)


@dataclass(frozen=True)
class Cell:
    """One job's config: the stream and one arm's learner (the seed comes with the job)."""

    benchmark: str
    scenario: str
    data_path: str
    validation: bool
    test_items: int
    learner: LearnerConfig


_STREAMS: dict[tuple[str, str, str, bool], Stream] = {}


def mnist_path(cfg: Config) -> str:
    """The MNIST file an MNIST benchmark reads: ``data_path``, else the shared data folder's."""
    if cfg.benchmark == "split-digits":
        return ""
    return cfg.data_path or str(data_root() / "mnist" / "mnist.npz")


def train_one(cell: Cell, seed: int) -> dict[str, Any]:
    """One arm on its stream with one seed, on one torch thread (so results are bit-reproducible)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        key = (cell.benchmark, cell.scenario, cell.data_path, cell.validation)
        if key not in _STREAMS:
            _STREAMS[key] = make_stream(cell.benchmark, cell.scenario, cell.data_path or None,
                                        validation=cell.validation)
        stream = _STREAMS[key]
        if cell.test_items:
            stream = dataclasses.replace(stream, tasks=tuple(
                dataclasses.replace(t, x_test=t.x_test[: cell.test_items],
                                    y_test=t.y_test[: cell.test_items]) for t in stream.tasks))
        result = train_stream(stream, cell.learner, seed)
    finally:
        torch.set_num_threads(threads)
    return dataclasses.asdict(result)


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


def _interval(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return float(values[0]), float("nan"), float("nan")
    ci = stats.mean_ci(values)
    return ci.estimate, ci.low, ci.high


def _pct(mean: float, low: float, high: float) -> str:
    if np.isnan(low):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} [{100 * low:.2f}, {100 * high:.2f}]"


def summary_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per arm: final accuracy, mean forgetting and BWT (mean and 95% t-interval over seeds)."""
    rows = []
    for name, results in runs.items():
        per_seed = [summarize(np.asarray(r["accuracy"])) for r in results]
        row: dict[str, Any] = {"arm": name}
        for metric in ("final_accuracy", "mean_forgetting", "bwt"):
            mean, low, high = _interval([s[metric] for s in per_seed])
            row.update({metric: mean, f"{metric}_low": low, f"{metric}_high": high})
        row.update(
            forgetting_per_task=np.mean([s["forgetting"] for s in per_seed], axis=0).tolist(),
            wall_s=float(np.mean([r["wall_s"] for r in results])),
            buffer_bytes=results[0]["buffer_bytes"], buffer_items=results[0]["buffer_items"],
            sleeps=results[0]["sleeps"],
            accuracy_matrix=np.mean([r["accuracy"] for r in results], axis=0).tolist(),
        )
        rows.append(row)
    return rows


def _verdict(significant: bool, diff: float) -> str:
    if not significant:
        return "no difference detected"
    return "higher" if diff > 0 else "lower"


# ------------------------------------------------------------------------ output
def heatmaps(rows: list[dict[str, Any]], title: str):
    """One task × task accuracy heat-map per arm, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows), 2.8), squeeze=False)
    for k, (ax, row) in enumerate(zip(axes[0], rows, strict=True)):
        m = np.asarray(row["accuracy_matrix"])
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{100 * m[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] < 0.6 else "black")
        ax.set_title(f"{row['arm']}\n{100 * m[-1].mean():.1f}%", fontsize=8)
        ax.set_xlabel("tested on task", fontsize=7)
        if k == 0:
            ax.set_ylabel("after training task", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def conditions(cfg: Config) -> str:
    """The setting every arm shares, in one line (for claims and the report)."""
    lc = cfg.learner
    split = "validation split" if cfg.validation else "test set"
    if cfg.test_items:
        split += f" (first {cfg.test_items} items of each task)"
    return (f"{cfg.benchmark} {cfg.scenario}-IL, MLP 2×{lc.hidden}, Adam {lc.lr:g}, batch "
            f"{lc.batch}, {lc.iters} steps per task, buffer {lc.buffer_size}, seeds "
            f"{cfg.seeds[0]}–{cfg.seeds[-1]}, {split}")


def run(cfg: Config, folder: RunFolder) -> Result:
    """Train every arm for every seed (resumable: finished jobs are read from the folder)."""
    arms = cfg.arms()
    path = mnist_path(cfg)
    if path and not Path(path).is_file():
        raise ConfigError(f"data_path: MNIST file {path} does not exist")
    jobs = [Job.of(train_one, Cell(cfg.benchmark, cfg.scenario, path, cfg.validation,
                                   cfg.test_items, learner), seed)
            for learner in arms.values() for seed in cfg.seeds]
    done = run_jobs(jobs, folder.path, description="continual")
    n = len(cfg.seeds)
    runs = {name: done[i * n:(i + 1) * n] for i, name in enumerate(arms)}
    rows = summary_rows(runs)
    per_seed = [
        {"arm": name, "seed": seed,
         **{k: v for k, v in summarize(np.asarray(r["accuracy"])).items() if k != "forgetting"},
         "wall_s": r["wall_s"], "buffer_bytes": r["buffer_bytes"],
         "accuracy_matrix": np.round(r["accuracy"], 4).tolist()}
        for name, results in runs.items() for seed, r in zip(cfg.seeds, results, strict=True)
    ]
    where = conditions(cfg)
    claims = [
        Claim(statement=f"{row['arm']}: final average accuracy", measured=_pct(
            row["final_accuracy"], row["final_accuracy_low"], row["final_accuracy_high"]) + "%",
            target="", verdict="measured", conditions=where, value=row["final_accuracy"])
        for row in rows
    ]
    battery: list[dict[str, Any]] = []
    if cfg.reference is not None and len(arms) > 1 and n > 1:
        samples = {name: [summarize(np.asarray(r["accuracy"]))["final_accuracy"] for r in rs]
                   for name, rs in runs.items()}
        battery = [c.row() for c in against(samples, cfg.reference)]
        claims += [
            Claim(statement=f"{c['a']} − {c['b']}: final average accuracy",
                  measured=f"{100 * c['diff']:+.2f} points [{100 * c['diff_low']:+.2f}, "
                           f"{100 * c['diff_high']:+.2f}], Holm p {c['p_holm']:.3f}",
                  target="≠ 0 (Welch, Holm over the family)",
                  verdict=_verdict(c["significant"], c["diff"]), conditions=where,
                  value=c["diff"])
            for c in battery
        ]
    figure = "accuracy_matrices.png"
    folder.save_figure(figure, heatmaps(rows, f"{cfg.benchmark} ({cfg.scenario}-incremental)"))
    shown = [{"arm": r["arm"],
              "final acc %": _pct(r["final_accuracy"], r["final_accuracy_low"],
                                  r["final_accuracy_high"]),
              "forgetting %": _pct(r["mean_forgetting"], r["mean_forgetting_low"],
                                   r["mean_forgetting_high"]),
              "BWT %": _pct(r["bwt"], r["bwt_low"], r["bwt_high"]),
              "wall s": f"{r['wall_s']:.1f}", "buffer KiB": f"{r['buffer_bytes'] / 1024:.0f}"}
             for r in rows]
    tables: dict[str, list[dict[str, Any]]] = {"summary": rows, "per_seed": per_seed}
    if battery:
        tables["comparisons"] = battery
    return Result(
        claims=tuple(claims), tables=tables, figures=(figure,),
        title=f"Continual learning: {cfg.benchmark}, {cfg.scenario}-incremental",
        intro=f"{where}. Mean and 95% t-interval over seeds, in percent.",
        sections=("## Arms\n\n" + markdown_table(shown),),
    )
