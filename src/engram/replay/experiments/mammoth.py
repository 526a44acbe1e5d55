"""The mammoth protocol (Buzzega et al. 2020): baselines with their published settings, ER-ACE and
Engram's sleep at equal buffer and equal compute, on Seq-MNIST or Permuted MNIST.

Arms are named ``method`` or ``method-buffer``, optionally with ``:key=value,…`` overrides of
their ``Arm`` fields (``"sleep-200:sleep_lr=0.0003"``). Unset fields take mammoth's
``best_args`` for that benchmark and buffer (utils/best_args.py of aimagelab/mammoth) or, for the
methods mammoth gives none here, the rules of ``resolve_arm``. Each (arm, seed) is one job.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engram import stats
from engram.data.location import data_root
from engram.errors import ConfigError
from engram.replay.experiments.mammoth_train import (
    BENCHMARKS,
    METHODS,
    REPLAYING,
    SLEEPING,
    Arm,
    Cell,
    base_stream,
    final_accuracy,
    mean_forgetting,
    steps_per_task,
    train_one,
)
from engram.runs import Claim, Job, Result, RunFolder, compare, markdown_table, run_jobs

# The protocol's batch and task count per benchmark (mammoth's seq-mnist / perm-mnist).
PROTOCOL = {"seq-mnist": {"batch": 10, "n_tasks": 5}, "perm-mnist": {"batch": 128, "n_tasks": 20}}

# mammoth's best_args (utils/best_args.py, aimagelab/mammoth; the paper's appendix), by method and
# buffer (0: no buffer). Every run of this protocol is one epoch.
BEST: dict[str, dict[str, dict[int, dict[str, float]]]] = {
    "seq-mnist": {
        "sgd": {0: {"lr": 0.03}},
        "ewc_on": {0: {"lr": 0.03, "e_lambda": 90.0, "gamma": 1.0}},
        "lwf": {0: {"lr": 0.03, "alpha": 1.0}},
        "agem": {b: {"lr": 0.1, "minibatch": 128} for b in (200, 500, 5120)},
        "er": {200: {"lr": 0.01, "minibatch": 10}, 500: {"lr": 0.1, "minibatch": 10},
               5120: {"lr": 0.1, "minibatch": 10}},
        "derpp": {200: {"lr": 0.03, "minibatch": 128, "alpha": 0.2, "beta": 1.0},
                  500: {"lr": 0.03, "minibatch": 10, "alpha": 1.0, "beta": 0.5},
                  5120: {"lr": 0.1, "minibatch": 64, "alpha": 0.2, "beta": 0.5}},
    },
    "perm-mnist": {
        "sgd": {0: {"lr": 0.2}},
        "ewc_on": {0: {"lr": 0.1, "e_lambda": 0.7, "gamma": 1.0}},
        "er": {b: {"lr": 0.2, "minibatch": 128} for b in (200, 500, 5120)},
        "agem": {b: {"lr": 0.1, "minibatch": 128} for b in (200, 500, 5120)},
        "derpp": {200: {"lr": 0.1, "minibatch": 128, "alpha": 1.0, "beta": 1.0},
                  500: {"lr": 0.2, "minibatch": 128, "alpha": 1.0, "beta": 0.5},
                  5120: {"lr": 0.2, "minibatch": 128, "alpha": 0.5, "beta": 1.0}},
    },
}

# Published figures, (mean, ±) in percent: Buzzega et al. 2020, NeurIPS, Table 2 (10 runs).
# Transcribed without the paper at hand (only its abstract page could be read in the session that
# wrote this): check each against the paper before citing it.
PUBLISHED_SOURCE = "Buzzega et al. 2020, Table 2 (unverified transcription)"
PUBLISHED: dict[tuple[str, str, str, int], tuple[float, float]] = {
    ("seq-mnist", "class", "sgd", 0): (19.60, 0.04),
    ("seq-mnist", "task", "sgd", 0): (97.86, 0.35),
    ("seq-mnist", "class", "ewc_on", 0): (20.46, 1.01),
    ("seq-mnist", "task", "ewc_on", 0): (98.39, 0.48),
    ("seq-mnist", "class", "er", 200): (80.43, 1.89),
    ("seq-mnist", "task", "er", 200): (97.86, 0.35),
    ("seq-mnist", "class", "er", 500): (86.12, 1.89),
    ("seq-mnist", "task", "er", 500): (99.04, 0.18),
    ("seq-mnist", "class", "er", 5120): (93.40, 1.29),
    ("seq-mnist", "task", "er", 5120): (99.33, 0.22),
    ("seq-mnist", "class", "derpp", 200): (85.61, 1.40),
    ("seq-mnist", "task", "derpp", 200): (98.76, 0.28),
    ("seq-mnist", "class", "derpp", 500): (91.00, 1.49),
    ("seq-mnist", "task", "derpp", 500): (99.16, 0.08),
    ("seq-mnist", "class", "derpp", 5120): (95.30, 0.20),
    ("seq-mnist", "task", "derpp", 5120): (99.47, 0.07),
    ("perm-mnist", "domain", "sgd", 0): (40.70, 2.33),
    ("perm-mnist", "domain", "ewc_on", 0): (78.48, 1.36),
    ("perm-mnist", "domain", "er", 200): (72.37, 0.87),
    ("perm-mnist", "domain", "er", 500): (80.60, 0.86),
    ("perm-mnist", "domain", "er", 5120): (89.90, 0.13),
    ("perm-mnist", "domain", "derpp", 200): (83.58, 0.59),
    ("perm-mnist", "domain", "derpp", 500): (88.21, 0.39),
    ("perm-mnist", "domain", "derpp", 5120): (92.26, 0.17),
}

# mammoth's online EWC takes its Fisher over every training item of a task (MNIST has 60,000),
# each squared gradient weighted by p(y|x).
FISHER_ITEMS = 60_000
FISHER = "weighted"
ENGRAM = ("sleep", "sleep_response")


@dataclass(frozen=True)
class Config:
    """Arms on one benchmark for seeds ``seed`` … ``seed + n_seeds − 1``.

    ``batch`` and ``n_tasks`` default to the protocol's (10 and 5 on Seq-MNIST, 128 and 20 on
    Permuted MNIST). ``validation`` tests on a split held out of the training images (for every
    choice made here); ``train_items``/``test_items`` > 0 keep only that many items per task
    (quick forms). ``data_path``: the MNIST file (default: the shared data folder's).
    """

    benchmark: str = "seq-mnist"
    arms: tuple[str, ...] = ("sgd", "er-200", "derpp-200")
    seed: int = 0
    n_seeds: int = 5
    batch: int | None = None
    n_tasks: int | None = None
    data_path: str = ""
    validation: bool = False
    train_items: int = 0
    test_items: int = 0

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise ConfigError(f"benchmark: expected one of {list(BENCHMARKS)}, "
                              f"got {self.benchmark!r}")
        if not self.arms or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"arms: expected distinct arm names, got {list(self.arms)}")
        for spec in self.arms:
            parse_arm(spec)
        for key in ("seed", "train_items", "test_items"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key}: expected an integer ≥ 0, got {value!r}")
        for key in ("n_seeds", "batch", "n_tasks"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
        if self.benchmark == "seq-mnist" and self.n_tasks not in (None, 5):
            raise ConfigError(f"n_tasks: Seq-MNIST has 5 tasks, got {self.n_tasks}")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.n_seeds))

    @property
    def protocol_batch(self) -> int:
        return self.batch or PROTOCOL[self.benchmark]["batch"]

    @property
    def protocol_tasks(self) -> int:
        return self.n_tasks or PROTOCOL[self.benchmark]["n_tasks"]


_FIELDS = {f.name: f.type for f in dataclasses.fields(Arm)}


def parse_arm(spec: str) -> tuple[str, int, dict[str, float | str]]:
    """``"method[-buffer][:key=value,…]"`` → (method, buffer, overrides)."""
    head, _, tail = spec.partition(":")
    method, _, size = head.partition("-")
    if method not in METHODS:
        raise ConfigError(f"arms: {spec!r}: expected a method from {list(METHODS)}")
    try:
        buffer = int(size) if size else 0
    except ValueError:
        raise ConfigError(f"arms: {spec!r}: expected an integer buffer size after '-'") from None
    if (buffer > 0) != (method in REPLAYING):
        raise ConfigError(f"arms: {spec!r}: the replaying methods {list(REPLAYING)} take a "
                          "buffer size ('er-200'), the others none")
    overrides: dict[str, float | str] = {}
    for item in filter(None, tail.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in _FIELDS or key in ("name", "method", "buffer"):
            raise ConfigError(f"arms: {spec!r}: expected key=value with a key of "
                              f"{sorted(set(_FIELDS) - {'name', 'method', 'buffer'})}, got {item!r}")
        if _FIELDS[key] in (str, "str"):
            overrides[key] = value
            continue
        try:
            overrides[key] = float(value)
        except ValueError:
            raise ConfigError(f"arms: {spec!r}: {key} expected a number, got {value!r}") from None
    return method, buffer, overrides


QUICK = Config(arms=("sgd", "er-200", "er_ace-200", "sleep-200:sleep_steps=3"), n_seeds=2,
               train_items=60, test_items=50)

def _best(benchmark: str, method: str, buffer: int) -> dict[str, float]:
    if method not in BEST[benchmark]:
        raise ConfigError(f"arms: mammoth runs no {method} on {benchmark} (its methods there: "
                          f"{sorted(BEST[benchmark])})")
    table = BEST[benchmark][method]
    if buffer not in table:
        raise ConfigError(f"arms: mammoth gives {method} on {benchmark} for buffers "
                          f"{sorted(table)}, got {buffer}")
    return dict(table[buffer])


def resolve_arm(spec: str, benchmark: str, steps: int, batch: int, n_tasks: int) -> Arm:
    """The arm ``spec`` names with every hyper-parameter set.

    - sgd, ewc_on, er, derpp, lwf, agem: mammoth's best_args (lwf on Seq-MNIST only, as
      mammoth runs it: class- and task-IL); online EWC's Fisher as mammoth's: over every
      training item of a task, weighted by p(y|x) (``FISHER_ITEMS``, ``FISHER``).
    - er_ace: ER's rate and buffer draw at that buffer (mammoth tunes no ER-ACE on MNIST; no
      rate was chosen here, so no validation run was needed).
    - sleep (Engram, ER awake) and er_rehearse (its control: the same boundary steps on uniform
      replay, no priorities, no dreams): ER's rate and draw awake; sleep_response: DER++'s rate,
      draw and α awake, its responses also replayed in sleep. Sleeps keep Engram's defaults
      (Adam at 1e-3, batch 128, a quarter of each batch dreams; none for the control).
    - Equal compute: unless given, a sleeping arm's ``sleep_steps`` make its trained items
      (one forward and backward pass each) equal DER++'s at the same buffer: ``steps`` wake
      steps of ``batch`` + minibatch items, then ``n_tasks`` sleeps of ``sleep_batch`` items.
    """
    method, buffer, overrides = parse_arm(spec)
    values: dict[str, Any] = {}
    if method in ("sgd", "ewc_on", "er", "derpp", "lwf", "agem"):
        values = _best(benchmark, method, buffer)
        if method == "ewc_on":
            values.update(fisher_items=FISHER_ITEMS, fisher=FISHER)
    elif method in ("er_ace", "sleep", "er_rehearse"):
        er = _best(benchmark, "er", buffer)
        values = {"lr": er["lr"], "minibatch": er["minibatch"]}
    else:
        d = _best(benchmark, "derpp", buffer)
        values = {"lr": d["lr"], "minibatch": d["minibatch"], "alpha": d["alpha"]}
    values.update(overrides)
    for key, value in values.items():
        if _FIELDS[key] in (int, "int"):
            if value != int(value):
                raise ConfigError(f"arms: {spec!r}: {key} expected an integer, got {value}")
            values[key] = int(value)
    if method in SLEEPING and "sleep_steps" not in values:
        derpp = _best(benchmark, "derpp", buffer)["minibatch"]
        extra = steps * (2 * derpp - values["minibatch"])
        sleep_batch = int(values.get("sleep_batch", 128))
        values["sleep_steps"] = max(1, math.ceil(extra / (n_tasks * sleep_batch)))
    return Arm(name=spec, method=method, buffer=buffer, **values)


def _readings(benchmark: str) -> tuple[str, ...]:
    return ("class", "task") if benchmark == "seq-mnist" else ("domain",)


def _rows(result: dict[str, Any], reading: str) -> list[list[float]]:
    return result["task_accuracy"] if reading == "task" else result["accuracy"]


def _ci(values: list[float]) -> tuple[float, float, float]:
    ci = stats.mean_ci(values)
    return 100 * ci.estimate, 100 * ci.low, 100 * ci.high


def _fmt(mean: float, low: float, high: float) -> str:
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def published(benchmark: str, reading: str, arm: Arm) -> tuple[float, float] | None:
    """The published (mean, ±) for this arm, where its hyper-parameters are mammoth's own."""
    return PUBLISHED.get((benchmark, reading, arm.method, arm.buffer))


def reproduction(pub: tuple[float, float] | None, low: float, high: float) -> str:
    """'reproduced' when our 95% interval meets the published mean ± its spread."""
    if pub is None:
        return "measured (no published figure in this protocol)"
    mean, spread = pub
    if high >= mean - spread and low <= mean + spread:
        return "reproduced"
    return "not reproduced (lower)" if high < mean - spread else "not reproduced (higher)"


def _peers(arms: dict[str, Arm]) -> list[tuple[str, str]]:
    """Each Engram arm against DER++, ER, ER-ACE and the equal-compute control at its buffer;
    each later variant of a method at one buffer against the one listed before it."""
    pairs = []
    before: dict[tuple[str, int], str] = {}
    for name, arm in arms.items():
        if (arm.method, arm.buffer) in before:
            pairs.append((name, before[(arm.method, arm.buffer)]))
        before[(arm.method, arm.buffer)] = name
    for name, arm in arms.items():
        if arm.method not in ENGRAM:
            continue
        for other, peer in arms.items():
            if peer.buffer == arm.buffer and peer.method in ("derpp", "er", "er_ace",
                                                             "er_rehearse"):
                pairs.append((name, other))
    return pairs


def plan(cfg: Config) -> tuple[dict[str, Arm], list[Job]]:
    """Every arm resolved, and the jobs that train them: seed-major, so a run stopped early has
    every arm for its first seeds (``--resume`` adds more)."""
    path = cfg.data_path or str(data_root() / "mnist" / "mnist.npz")
    if not Path(path).is_file():
        raise ConfigError(f"data_path: MNIST file {path} does not exist")
    stream = base_stream(cfg.benchmark, cfg.protocol_tasks, path, cfg.validation)
    sizes = [min(t.n_train, cfg.train_items or t.n_train) for t in stream.tasks]
    steps = sum(steps_per_task(n, cfg.protocol_batch) for n in sizes)
    arms = {spec: resolve_arm(spec, cfg.benchmark, steps, cfg.protocol_batch, cfg.protocol_tasks)
            for spec in cfg.arms}
    cells = [Cell(cfg.benchmark, cfg.protocol_tasks, cfg.protocol_batch, path, cfg.validation,
                  cfg.train_items, cfg.test_items, arm) for arm in arms.values()]
    return arms, [Job.of(train_one, cell, seed) for seed in cfg.seeds for cell in cells]


def run(cfg: Config, folder: RunFolder) -> Result:
    """Train every arm for every seed (resumable), then tabulate against the published figures."""
    arms, jobs = plan(cfg)
    done = run_jobs(jobs, folder.path, description="mammoth")
    n, k = len(cfg.seeds), len(arms)
    runs = {spec: done[i::k] for i, spec in enumerate(arms)}
    split = "validation split" if cfg.validation else "test set"
    where = (f"{cfg.benchmark}, {cfg.protocol_tasks} tasks, MLP 2×100, SGD, 1 epoch, batch "
             f"{cfg.protocol_batch}, seeds {cfg.seeds[0]}–{cfg.seeds[-1]}, {split}")
    if cfg.train_items or cfg.test_items:
        where += f" (first {cfg.train_items or 'all'}/{cfg.test_items or 'all'} items per task)"
    comparable = not (cfg.validation or cfg.train_items or cfg.test_items)
    summary, per_seed, shown, claims = [], [], [], []
    samples: dict[str, list[float]] = {}
    for spec, arm in arms.items():
        results = runs[spec]
        row: dict[str, Any] = {"arm": spec, "method": arm.method, "buffer": arm.buffer,
                               "hyperparameters": _knobs(arm)}
        line = {"arm": spec}
        for reading in _readings(cfg.benchmark):
            finals = [final_accuracy(_rows(r, reading)) for r in results]
            samples[f"{spec} ({reading})"] = finals
            mean, low, high = _ci(finals)
            pub = published(cfg.benchmark, reading, arm)
            verdict = (reproduction(pub, low, high) if comparable
                       else "not compared (validation split or cut stream)")
            forget = [100 * mean_forgetting(_rows(r, reading)) for r in results]
            row.update({f"{reading}_il": mean, f"{reading}_il_low": low,
                        f"{reading}_il_high": high, f"{reading}_forgetting": float(np.mean(forget)),
                        f"{reading}_published": None if pub is None else pub[0],
                        f"{reading}_published_spread": None if pub is None else pub[1],
                        f"{reading}_verdict": verdict})
            line[f"{reading}-IL %"] = _fmt(mean, low, high)
            line[f"published {reading}-IL"] = "—" if pub is None else f"{pub[0]:.2f} ± {pub[1]:.2f}"
            line[f"{reading} verdict"] = verdict
            claims.append(Claim(
                statement=f"{spec}: final {reading}-IL accuracy",
                measured=_fmt(mean, low, high) + "%",
                target="—" if pub is None else f"{pub[0]:.2f} ± {pub[1]:.2f}% (published)",
                verdict=verdict, conditions=where,
                source=PUBLISHED_SOURCE if pub is not None else "", value=mean))
        trained = float(np.mean([r["trained_items"] for r in results]))
        row.update(steps=results[0]["steps"], sleep_steps=results[0]["sleep_steps"],
                   trained_items=trained, wall_s=float(np.mean([r["wall_s"] for r in results])))
        line.update({"trained items (M)": f"{trained / 1e6:.2f}",
                     "gradient steps": str(results[0]["steps"] + results[0]["sleep_steps"])})
        summary.append(row)
        shown.append(line)
        for seed, r in zip(cfg.seeds, results, strict=True):
            per_seed.append({"arm": spec, "seed": seed,
                             **{f"{rd}_il": 100 * final_accuracy(_rows(r, rd))
                                for rd in _readings(cfg.benchmark)},
                             "trained_items": r["trained_items"], "wall_s": r["wall_s"],
                             "accuracy": r["accuracy"], "task_accuracy": r["task_accuracy"]})
    battery = []
    pairs = [(f"{a} ({rd})", f"{b} ({rd})") for a, b in _peers(arms)
             for rd in _readings(cfg.benchmark)]
    if pairs and n > 1:
        battery = [c.row() for c in compare(samples, pairs)]
        for c in battery:
            claims.append(Claim(
                statement=f"{c['a']} − {c['b']}: final accuracy",
                measured=f"{100 * c['diff']:+.2f} points [{100 * c['diff_low']:+.2f}, "
                         f"{100 * c['diff_high']:+.2f}], Holm p {c['p_holm']:.3f}",
                target="≠ 0 (Welch, Holm over the family)",
                verdict=("no difference detected" if not c["significant"]
                         else "higher" if c["diff"] > 0 else "lower"),
                conditions=where, value=c["diff"]))
    tables: dict[str, list[dict[str, Any]]] = {"summary": summary, "per_seed": per_seed}
    if battery:
        tables["comparisons"] = battery
    return Result(
        claims=tuple(claims), tables=tables,
        title=f"The mammoth protocol: {cfg.benchmark}",
        intro=(f"{where}. Mean and 95% t-interval over seeds, in percent; published figures "
               f"from {PUBLISHED_SOURCE}, mean ± their spread over 10 runs. 'Reproduced': our "
               "interval meets the published mean ± spread."),
        sections=("## Arms\n\n" + markdown_table(shown),),
    )


def _knobs(arm: Arm) -> str:
    """The arm's hyper-parameters that its method reads, in one line."""
    keys = {"sgd": ("lr",), "ewc_on": ("lr", "e_lambda", "gamma", "fisher_items", "fisher"),
            "lwf": ("lr", "alpha"), "agem": ("lr", "minibatch"),
            "er": ("lr", "minibatch"), "er_ace": ("lr", "minibatch"),
            "derpp": ("lr", "minibatch", "alpha", "beta"),
            "sleep": ("lr", "minibatch", "sleep_steps", "sleep_batch", "sleep_lr"),
            "er_rehearse": ("lr", "minibatch", "sleep_steps", "sleep_batch", "sleep_lr"),
            "sleep_response": ("lr", "minibatch", "alpha", "sleep_steps", "sleep_batch",
                               "sleep_lr")}[arm.method]
    return ", ".join(f"{k}={getattr(arm, k)}" if isinstance(getattr(arm, k), str)
                     else f"{k}={getattr(arm, k):g}" for k in keys)
