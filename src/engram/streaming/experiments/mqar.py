"""MQAR on the recall-vs-state frontier: every eviction memory on a sliding window with sinks,
against full attention, the window alone, and linear attention / DeltaNet of equal state.

The task is Zoology's multi-query associative recall (``engram.streaming.mqar``). Every model
is the same 2-layer ``StreamingTransformer`` (a short causal convolution, then attention; no
MLP, as Zoology's) and differs only in its attention layer: full softmax attention; softmax over
``n_sink`` sinks + a ``window`` of recent tokens, alone or with one eviction memory; or linear
attention / the delta rule over the whole sequence through one d_head × d_head matrix per head,
the bytes of the ``matrix`` memory. Each model trains on fresh batches until its validation
accuracy reaches ``solve_at`` ("solves the task") or its steps run out; full attention gets
``full_steps``. The unit of analysis is the trained model (one per seed): its accuracy over
the fixed test set's queries, placed against the bytes of state it holds after streaming a
test sequence (KV cache in the window or in full, memory, convolution buffers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engram import stats
from engram.errors import ConfigError
from engram.runs import Claim, Job, Result, RunFolder, against, run_jobs
from engram.streaming.experiments.mqar_training import CONDITIONS, Cell, train_cell

MEMORIES = ("matrix_ones", "matrix", "matrix_delta", "association", "knn")
REFERENCE = "window"


@dataclass(frozen=True)
class Config:
    """The frontier's grid; the defaults are the reported CPU run (docs/eviction/README.md)."""

    n_pairs: tuple[int, ...] = (16,)
    lengths: tuple[int, ...] = (256,)
    vocab_size: int = 8192
    power_a: float = 0.01
    random_fillers: bool = True
    d_models: tuple[int, ...] = (64,)
    n_heads: int = 1
    n_layers: int = 2
    conv_kernel: int = 4
    window: int = 16
    n_sink: int = 1
    conditions: tuple[str, ...] = tuple(CONDITIONS)
    seeds: int = 2
    steps: int = 600
    full_steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    eval_every: int = 50
    solve_at: float = 0.99
    valid_size: int = 128
    test_size: int = 256
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.n_pairs) != len(self.lengths) or not self.n_pairs:
            raise ConfigError(
                f"n_pairs/lengths: expected two tuples of the same non-zero length (one task "
                f"each), got {self.n_pairs} and {self.lengths}"
            )
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown or REFERENCE not in self.conditions:
            raise ConfigError(
                f"conditions: expected names from {tuple(CONDITIONS)} including {REFERENCE!r}, "
                f"got {self.conditions}"
            )
        if self.seeds < 2:
            raise ConfigError(f"seeds: expected at least 2 (intervals need a spread), got {self.seeds}")
        if not 0 < self.solve_at <= 1:
            raise ConfigError(f"solve_at: expected an accuracy in (0, 1], got {self.solve_at}")
        for cell in self.cells():
            cell.task()
            cell.model()

    def cells(self) -> list[Cell]:
        """Every (task, d_model, condition) to train, in a fixed order."""
        out = []
        for n, length in zip(self.n_pairs, self.lengths, strict=True):
            for d in self.d_models:
                for condition in self.conditions:
                    out.append(
                        Cell(
                            condition, n, length, self.vocab_size, self.power_a, self.random_fillers,
                            d, self.n_heads, self.n_layers, self.conv_kernel, self.window,
                            self.n_sink, self.full_steps if condition == "full" else self.steps,
                            self.batch_size, self.lr, self.weight_decay, self.eval_every,
                            self.solve_at, self.valid_size, self.test_size, self.device,
                        )
                    )
        return out


QUICK = Config(
    n_pairs=(2,),
    lengths=(16,),
    vocab_size=64,
    d_models=(8,),
    window=4,
    conditions=("full", "window", "matrix_delta", "delta"),
    steps=2,
    full_steps=2,
    batch_size=4,
    eval_every=1,
    valid_size=4,
    test_size=4,
)

SEED_STRIDE = 1000  # model seeds of run seed s: 1000·s + i


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (task, d_model, condition): mean accuracy with its 95% t interval, state, solves."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["n_pairs"], r["length"], r["d_model"], r["condition"]), []).append(r)
    out = []
    for (n, length, d, condition), group in groups.items():
        acc = stats.mean_ci([r["accuracy"] for r in group])
        beyond = [r["beyond_window_accuracy"] for r in group if r["beyond_window_accuracy"] is not None]
        out.append(
            {
                "condition": condition,
                "n_pairs": n,
                "length": length,
                "d_model": d,
                "state_bytes": int(np.median([r["state_bytes"] for r in group])),
                "seeds": len(group),
                "accuracy": acc.estimate,
                "low": acc.low,
                "high": acc.high,
                "beyond_window_accuracy": float(np.mean(beyond)) if beyond else None,
                "solved": sum(r["solved"] for r in group),
                "mean_steps": float(np.mean([r["steps"] for r in group])),
                "train_seconds": float(np.sum([r["train_seconds"] for r in group])),
            }
        )
    return out


def _claims(cfg: Config, rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[Claim]:
    """Full attention solves (in every seed?); each other arm against the window alone (Holm)."""
    claims = []
    for n, length in zip(cfg.n_pairs, cfg.lengths, strict=True):
        for d in cfg.d_models:
            here = [r for r in rows if (r["n_pairs"], r["length"], r["d_model"]) == (n, length, d)]
            table = {
                s["condition"]: s
                for s in summary
                if (s["n_pairs"], s["length"], s["d_model"]) == (n, length, d)
            }
            conditions = (
                f"MQAR {n} pairs, length {length}, vocabulary {cfg.vocab_size}; d_model {d}, "
                f"window {cfg.window} + {cfg.n_sink} sink; {cfg.seeds} seeds; ≤ {cfg.steps} steps "
                f"(full ≤ {cfg.full_steps}) of {cfg.batch_size}"
            )
            if "full" in table:
                s = table["full"]
                claims.append(
                    Claim(
                        f"full attention solves MQAR (validation accuracy ≥ {cfg.solve_at}) in every seed",
                        f"{s['solved']}/{s['seeds']} seeds; test {s['accuracy']:.3f} "
                        f"[{s['low']:.3f}, {s['high']:.3f}] after {s['mean_steps']:.0f} steps",
                        f"{s['seeds']}/{s['seeds']} seeds",
                        "supported" if s["solved"] == s["seeds"] else "not supported",
                        conditions,
                        value=s["accuracy"],
                    )
                )
            samples = {
                c: [r["accuracy"] for r in here if r["condition"] == c]
                for c in cfg.conditions
                if c != "full"
            }
            for comp in against(samples, REFERENCE) if len(samples) > 1 else ():
                s = table[comp.a]
                better = comp.significant and comp.diff > 0
                claims.append(
                    Claim(
                        f"{comp.a} ({s['state_bytes']:,} B of state) recalls better than the window alone",
                        f"{comp.mean_a:.3f} [{s['low']:.3f}, {s['high']:.3f}] vs {comp.mean_b:.3f} "
                        f"(Holm p = {comp.p_holm:.2g})",
                        f"mean > {REFERENCE}, Holm p < 0.05",
                        "supported" if better else "not supported",
                        conditions,
                        value=comp.mean_a,
                    )
                )
    return claims


def run(cfg: Config, folder: RunFolder) -> Result:
    """Train every cell's seeds (resumable jobs), summarise, test, plot the frontier."""
    from engram.streaming.experiments.mqar_plots import plot_frontier

    seeds = [SEED_STRIDE * cfg.seed + i for i in range(cfg.seeds)]
    jobs = [Job.of(train_cell, cell, s) for cell in cfg.cells() for s in seeds]
    rows = run_jobs(jobs, folder.path, description="mqar frontier")
    summary = _summary(rows)
    figures = plot_frontier(cfg, folder, rows, summary)
    per_seed = [{k: v for k, v in r.items() if k != "curve"} for r in rows]
    return Result(
        claims=tuple(_claims(cfg, rows, summary)),
        tables={"per_seed": per_seed, "summary": summary},
        figures=figures,
        title="MQAR: recall against state size",
        intro=(__doc__ or "").split("\n\n", 1)[1],
    )

