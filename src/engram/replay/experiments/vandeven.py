"""The van de Ven protocol: split MNIST in one scenario, its baselines beside Engram's sleep method.

van de Ven, Tuytelaars & Tolias 2022 ("Three types of incremental learning", Nature Machine
Intelligence 4:1185) run split MNIST (5 tasks of 2 digits) in the task-, domain- and
class-incremental scenarios with a 2×400 MLP, Adam 1e-3, batch 128, 2,000 iterations per task
and 100 stored items per class (``vandeven_train``). One job per (method, seed) through the
toolkit's resumable runner; the result sets each method's final average accuracy (mean and 95%
t-interval over seeds) beside the published figure, and compares Engram's sleep method with ER
and the other replay arms at equal buffer and equal back-propagated items.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engram import stats
from engram.data.location import data_root
from engram.data.streams import SCENARIOS, Stream, make_stream
from engram.errors import ConfigError
from engram.replay.experiments.vandeven_train import (
    METHODS,
    SLEEPING,
    ProtocolConfig,
    train_protocol,
    wake_iters,
)
from engram.runs import Claim, Job, Result, RunFolder, against, markdown_table, run_jobs

SOURCE = ("GMvandeVen/continual-learning figures/splitMNIST_results_tutorial.png (same code and "
          "protocol, 20 seeds, ±1 s.e.m. bands), read off the plot at context 5")
# Final average accuracy (%) after 5 tasks read off that figure, and how far the reading (plus
# its band) can be off: the printed table of the article was not reachable from here.
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "task": {"none": (84.0, 3.0), "joint": (99.7, 0.3), "ewc": (99.0, 0.5),
             "si": (99.0, 0.5), "er": (99.4, 0.4), "dgr": (99.4, 0.4)},
    "domain": {"none": (59.5, 3.0), "joint": (98.5, 0.5), "ewc": (62.0, 3.0),
               "si": (68.0, 3.0), "er": (94.0, 1.0), "dgr": (96.0, 1.0)},
    "class": {"none": (20.0, 1.0), "joint": (98.0, 0.5), "ewc": (20.5, 1.0),
              "si": (22.5, 1.5), "er": (89.0, 1.5), "dgr": (90.0, 1.5)},
}
# Engram's method is compared with these arms (Welch, Holm over the family).
N_TASKS = 5  # split MNIST
REFERENCE = "sleep-replay"
PEERS = ("replay-equal-compute", "er", "dgr", "dgr+distill", "response-replay")


@dataclass(frozen=True)
class Config:
    """One scenario, several methods, seeds ``seed`` … ``seed + n_seeds − 1``.

    ``learner`` holds what every method shares (its ``method`` is set per arm); ``data_path``:
    the MNIST file (default: the shared data folder's); ``validation`` tests on a split held
    out of the training images; ``test_items`` > 0 tests on the first that many items of each
    task (quick forms only).
    """

    scenario: str = "class"
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    n_seeds: int = 5
    learner: ProtocolConfig = field(default_factory=ProtocolConfig)
    data_path: str = ""
    validation: bool = False
    test_items: int = 0

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"scenario: expected one of {list(SCENARIOS)}, got {self.scenario!r}")
        if not self.methods:
            raise ConfigError("methods: expected at least one method, got none")
        for name in self.methods:
            if name not in METHODS:
                raise ConfigError(f"methods: expected names from {list(METHODS)}, got {name!r}")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods: expected each name once, got {list(self.methods)}")
        for name in ("seed", "test_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}: expected an integer ≥ 0, got {value!r}")
        if isinstance(self.n_seeds, bool) or not isinstance(self.n_seeds, int) or self.n_seeds < 1:
            raise ConfigError(f"n_seeds: expected a positive integer, got {self.n_seeds!r}")
        if any(m in SLEEPING for m in self.methods):
            wake_iters(self.learner, N_TASKS)  # refuses sleep that leaves no wake steps

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.n_seeds))


QUICK = Config(
    methods=("none", "si", "er", "dgr", "sleep-replay"), n_seeds=2, test_items=100,
    learner=ProtocolConfig(hidden=16, iters=4, batch=16, budget=5, fisher_samples=16, z_dim=4,
                           sleep_steps=2),
)


@dataclass(frozen=True)
class Cell:
    """One job's config: the stream and one method's learner (the seed comes with the job)."""

    scenario: str
    data_path: str
    validation: bool
    test_items: int
    learner: ProtocolConfig


_STREAMS: dict[tuple[str, str, bool], Stream] = {}


def train_one(cell: Cell, seed: int) -> dict[str, Any]:
    """One method on its stream with one seed, on one torch thread (bit-reproducible)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        key = (cell.scenario, cell.data_path, cell.validation)
        if key not in _STREAMS:
            _STREAMS[key] = make_stream("split-mnist", cell.scenario, cell.data_path,
                                        validation=cell.validation)
        stream = _STREAMS[key]
        if cell.test_items:
            stream = dataclasses.replace(stream, tasks=tuple(
                dataclasses.replace(t, x_test=t.x_test[: cell.test_items],
                                    y_test=t.y_test[: cell.test_items]) for t in stream.tasks))
        return train_protocol(stream, cell.learner, seed)
    finally:
        torch.set_num_threads(threads)


def _interval(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return float(values[0]), float("nan"), float("nan")
    ci = stats.mean_ci(values)
    return ci.estimate, ci.low, ci.high


def _pct(mean: float, low: float, high: float) -> str:
    if np.isnan(low):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} [{100 * low:.2f}, {100 * high:.2f}]"


def published_verdict(scenario: str, method: str, low: float, high: float) -> str:
    """Whether the reproduced 95% interval meets the published reading ± its tolerance."""
    if method not in PUBLISHED[scenario]:
        return "no published figure"
    value, tol = PUBLISHED[scenario][method]
    if np.isnan(low):
        return "one seed: no interval"
    if 100 * high < value - tol:
        return "below the published figure"
    if 100 * low > value + tol:
        return "above the published figure"
    return "within the published figure"


def summary_rows(cfg: Config, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per method: final average accuracy (mean, 95% interval), the published figure, costs."""
    rows = []
    for name, results in runs.items():
        mean, low, high = _interval([r["final_mean"] for r in results])
        published = PUBLISHED[cfg.scenario].get(name)
        rows.append({
            "method": name, "final_accuracy": mean, "final_accuracy_low": low,
            "final_accuracy_high": high,
            "published": published[0] if published else None,
            "published_tolerance": published[1] if published else None,
            "verdict": published_verdict(cfg.scenario, name, low, high),
            "items": results[0]["items"], "stored": results[0]["stored"],
            "wall_s": float(np.mean([r["wall_s"] for r in results])),
            "cpu_s": float(np.mean([r["cpu_s"] for r in results])),
            "final_per_task": np.mean([r["final"] for r in results], axis=0).tolist(),
        })
    return rows


def conditions(cfg: Config) -> str:
    """The setting every method shares, in one line."""
    lc = cfg.learner
    split = "validation split" if cfg.validation else "test set"
    if cfg.test_items:
        split += f" (first {cfg.test_items} items of each task)"
    return (f"split MNIST {cfg.scenario}-IL, MLP 2×{lc.hidden}, Adam {lc.lr:g}, batch {lc.batch}, "
            f"{lc.iters} iterations per task, {lc.budget} stored items per class, seeds "
            f"{cfg.seeds[0]}–{cfg.seeds[-1]}, {split}")


def run(cfg: Config, folder: RunFolder) -> Result:
    """Train every method for every seed (resumable: finished jobs are read from the folder)."""
    path = cfg.data_path or str(data_root() / "mnist" / "mnist.npz")
    if not Path(path).is_file():
        raise ConfigError(f"data_path: MNIST file {path} does not exist")
    arms = {m: dataclasses.replace(cfg.learner, method=m) for m in cfg.methods}
    jobs = [Job.of(train_one, Cell(cfg.scenario, path, cfg.validation, cfg.test_items, lc), seed)
            for lc in arms.values() for seed in cfg.seeds]
    done = run_jobs(jobs, folder.path, description="vandeven")
    n = len(cfg.seeds)
    runs = {name: done[i * n:(i + 1) * n] for i, name in enumerate(arms)}
    rows = summary_rows(cfg, runs)
    where = conditions(cfg)
    claims = [
        Claim(statement=f"{row['method']}: final average accuracy",
              measured=_pct(row["final_accuracy"], row["final_accuracy_low"],
                            row["final_accuracy_high"]) + "%",
              target=(f"≈ {row['published']:.1f} ± {row['published_tolerance']:.1f}%"
                      if row["published"] is not None else ""),
              verdict=row["verdict"], conditions=where,
              source=SOURCE if row["published"] is not None else "",
              value=row["final_accuracy"])
        for row in rows
    ]
    battery: list[dict[str, Any]] = []
    peers = [p for p in PEERS if p in runs]
    if REFERENCE in runs and peers and n > 1:
        samples = {name: [r["final_mean"] for r in runs[name]] for name in (REFERENCE, *peers)}
        battery = [c.row() for c in against(samples, REFERENCE)]
        claims += [
            Claim(statement=f"{c['a']} − {c['b']}: final average accuracy",
                  measured=f"{100 * c['diff']:+.2f} points [{100 * c['diff_low']:+.2f}, "
                           f"{100 * c['diff_high']:+.2f}], Holm p {c['p_holm']:.3f}",
                  target="≠ 0 (Welch, Holm over the family)",
                  verdict=("no difference detected" if not c["significant"]
                           else "higher" if c["diff"] > 0 else "lower"),
                  conditions=where, value=c["diff"])
            for c in battery
        ]
    shown = [{"method": r["method"],
              "published %": (f"≈ {r['published']:.1f} ± {r['published_tolerance']:.1f}"
                              if r["published"] is not None else "—"),
              "reproduced %": _pct(r["final_accuracy"], r["final_accuracy_low"],
                                   r["final_accuracy_high"]),
              "verdict": r["verdict"], "items back-propagated": r["items"],
              "stored": r["stored"], "CPU s": f"{r['cpu_s']:.1f}"} for r in rows]
    per_seed = [{"method": name, "seed": seed, "final_accuracy": r["final_mean"],
                 "final_per_task": r["final"], "accuracy_matrix": r["accuracy"],
                 "wall_s": r["wall_s"], "cpu_s": r["cpu_s"]}
                for name, results in runs.items()
                for seed, r in zip(cfg.seeds, results, strict=True)]
    tables: dict[str, list[dict[str, Any]]] = {"summary": rows, "per_seed": per_seed}
    if battery:
        tables["comparisons"] = battery
    return Result(
        claims=tuple(claims), tables=tables,
        title=f"The van de Ven protocol: split MNIST, {cfg.scenario}-incremental",
        intro=f"{where}. Mean and 95% t-interval over seeds, in percent. Published: {SOURCE}.",
        sections=("## Methods\n\n" + markdown_table(shown),),
    )
