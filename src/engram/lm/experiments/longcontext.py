"""Memory beyond the window at inference: a pretrained char LM run with a sliding window whose
evicted tokens are written, without any training, to an episodic kNN memory, a compressed
memory of equal bytes or one of engram.streaming's memories, against the window alone and
Transformer-XL-style recurrence, on passkey and key-value retrieval inside text and on loss
by position; plus the kNN-LM's retrieval accuracy.

Pre-registered (fixed before the first reported run; every comparison below is one Holm
family, paired over the same streams, units = (pretraining seed, task draw)):
- P1–P7 passkey, distances ≥ 2 windows, mean log-probability of the secret word's letters:
  each of episodic, episodic_all, compressive, matrix, knn, projection, xl above the window
  alone;
- P8 episodic against compressive at equal bytes (two-sided);
- K1–K2 key-value retrieval beyond the window: episodic and compressive above the window;
- L1–L3 loss on long text at positions ≥ 4 windows: episodic, compressive and xl below the
  window alone (units = (pretraining seed, stream)).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.lm.longcontext.arms import ARMS, Span, check_arms
from engram.lm.longcontext.pretrain import Pretraining
from engram.runs import Claim, Job, Result, RunFolder, compare, run_jobs

HYPOTHESES: tuple[tuple[str, str, str, str], ...] = (
    # (id, metric, arm a, arm b): a better than b (log-prob higher, loss lower); P8 two-sided
    ("P1", "passkey", "episodic", "window"),
    ("P2", "passkey", "episodic_all", "window"),
    ("P3", "passkey", "compressive", "window"),
    ("P4", "passkey", "matrix", "window"),
    ("P5", "passkey", "knn", "window"),
    ("P6", "passkey", "projection", "window"),
    ("P7", "passkey", "xl", "window"),
    ("P8", "passkey", "episodic", "compressive"),
    ("K1", "key_value", "episodic", "window"),
    ("K2", "key_value", "compressive", "window"),
    ("L1", "late_loss", "episodic", "window"),
    ("L2", "late_loss", "compressive", "window"),
    ("L3", "late_loss", "xl", "window"),
)


METRICS = {
    "passkey": "passkey log-prob (distances ≥ 2 windows)",
    "key_value": "key-value log-prob",
    "late_loss": "−loss at positions ≥ 4 windows",
}


@dataclass(frozen=True)
class Config:
    """Pretraining seeds and recipe, the shared span, the arms and the task sizes (task draws
    come from ``seed``); ``models_dir`` keeps the pretrained models (empty: in the run folder)."""

    pretrain_seeds: tuple[int, ...] = (0, 1, 2)
    seed: int = 0
    pretraining: Pretraining = field(default_factory=Pretraining)
    models_dir: str = ""
    span: Span = field(default_factory=Span)
    arms: tuple[str, ...] = tuple(a for a in ARMS if a != "full")
    distances: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # in windows
    trials: int = 16
    kv_distances: tuple[int, ...] = (2, 8)
    kv_pairs: int = 4
    loss_streams: int = 8
    loss_tokens: int = 1024
    knn_tokens: int = 50_000
    knn_eval_tokens: int = 4096
    knn_k: int = 8
    knn_draws: int = 3

    def __post_init__(self) -> None:
        from engram.params import Interval, check

        check_arms(self.arms)
        if "window" not in self.arms:
            raise ValueError("arms: the experiment needs 'window' to compare against")
        if not self.pretrain_seeds or not self.distances:
            raise ValueError("pretrain_seeds, distances: expected at least one each")
        for name in ("trials", "kv_pairs", "loss_streams", "loss_tokens", "knn_k", "knn_eval_tokens",
                     "knn_draws"):
            check(name, getattr(self, name), Interval(int, 1, None))
        check("knn_tokens", self.knn_tokens, Interval(int, 0, None))
        for d in (*self.distances, *self.kv_distances):
            check("distances", d, Interval(int, 1, None))


QUICK = Config(
    pretrain_seeds=(0,),
    pretraining=Pretraining(
        model={"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 40}, steps=3, batch_size=4,
        warmup_steps=1, eval_batches=1,
    ),
    span=Span(window=16, sinks=2, chunk=8, capacity=8, top_k=4),
    arms=("window", "episodic", "compressive", "xl"),
    distances=(2, 4),
    trials=3,
    kv_distances=(2,),
    kv_pairs=2,
    loss_streams=2,
    loss_tokens=96,
    knn_tokens=600,
    knn_eval_tokens=200,
    knn_draws=2,
)


@dataclass(frozen=True)
class EvalJob:
    """Everything one pretraining seed's evaluation depends on."""

    pretraining: Pretraining
    folder: str
    span: Span
    arms: tuple[str, ...]
    distances: tuple[int, ...]
    trials: int
    kv_distances: tuple[int, ...]
    kv_pairs: int
    loss_streams: int
    loss_tokens: int
    knn_tokens: int
    knn_eval_tokens: int
    knn_k: int
    knn_draws: int
    task_seed: int


def evaluate_seed(job: EvalJob, seed: int) -> dict[str, Any]:
    """Pretrain (or reuse) the model of ``seed`` and measure every arm on every task."""
    import torch

    from engram.data.text import TextCorpus
    from engram.lm.longcontext import tasks
    from engram.lm.longcontext.arms import arm_logits
    from engram.lm.longcontext.pretrain import pretrained
    from engram.lm.memory import EpisodicMemory, retrieval_report
    from engram.lm.train import model_from_checkpoint

    torch.set_num_threads(1)
    trained = pretrained(job.pretraining, seed, job.folder)
    model, tokenizer, _ = model_from_checkpoint(job.folder)
    corpus = TextCorpus.open(os.path.join(job.folder, "corpus"))
    val = np.asarray(corpus.val, dtype=np.int64)
    span = job.span
    block = model.config.block_size
    rows: list[dict[str, Any]] = []
    state: dict[str, int] = {}
    probes = [("passkey", d, tasks.passkey(val, tokenizer, d * span.window, job.trials,
                                           job.task_seed * 1000 + seed * 100 + d))
              for d in job.distances]
    probes += [("key_value", d, tasks.key_value(val, tokenizer, d * span.window, job.trials,
                                                job.task_seed * 1000 + seed * 100 + 50 + d, job.kv_pairs))
               for d in job.kv_distances]
    for task, d, probe in probes:
        for arm in (*job.arms, "full"):
            if arm == "full" and probe.tokens.shape[1] > block:
                continue
            logits, memory_bytes = arm_logits(model, arm, span, probe.tokens)
            state[arm] = max(state.get(arm, 0), memory_bytes)
            scored = tasks.score(logits, probe)
            for trial in range(job.trials):
                rows.append({
                    "task": task, "distance": d, "arm": arm, "seed": seed, "trial": trial,
                    "log_prob": float(scored.log_prob[trial]),
                    "letter_accuracy": float(scored.letter_accuracy[trial]),
                    "solved": bool(scored.solved[trial]),
                })
    rng = np.random.default_rng(job.task_seed * 1000 + seed)
    starts = rng.integers(0, len(val) - job.loss_tokens - 1, job.loss_streams)
    streams = torch.from_numpy(np.stack([val[s : s + job.loss_tokens] for s in starts]))
    curves = {}
    for arm in job.arms:
        logits, _ = arm_logits(model, arm, span, streams)
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        nll = -logp.gather(-1, streams[:, 1:, None])[..., 0].numpy()  # (streams, T - 1)
        curves[arm] = nll.mean(0).tolist()
        late = nll[:, 4 * span.window :].mean(1) if nll.shape[1] > 4 * span.window else nll.mean(1)
        for i, value in enumerate(late):
            rows.append({"task": "late_loss", "distance": 4, "arm": arm, "seed": seed, "trial": i,
                         "log_prob": -float(value), "letter_accuracy": float("nan"), "solved": False})
    with torch.no_grad():
        full_logits = model(streams[:, :block]).logits
    curves["full"] = tasks.position_losses(full_logits, streams[:, :block]).tolist()
    knn = []
    for draw in range(job.knn_draws if job.knn_tokens else 0):
        # each draw: its own stretch of training text in the memory, its own validation stretch
        pick = np.random.default_rng([job.task_seed, seed, draw])
        begin = int(pick.integers(0, len(corpus.train) - job.knn_tokens))
        at = int(pick.integers(0, len(val) - job.knn_eval_tokens - 1))
        memory = EpisodicMemory(model.config.n_embd, k=job.knn_k, keep_log=False)
        stored = np.asarray(corpus.train[begin : begin + job.knn_tokens], dtype=np.int64)
        memory.store_text(model, torch.from_numpy(stored))
        report = retrieval_report(model, memory, val[at : at + job.knn_eval_tokens + 1], ks=(1, 5))
        knn.append({"draw": draw, "entries": len(memory), "positions": report.positions,
                    **{f"{who}_top{k}": getattr(report, who)[i]
                       for who in ("model", "memory", "mixed") for i, k in enumerate(report.ks)}})
    return {"seed": seed, "val_loss": trained["val_loss"], "rows": rows, "curves": curves,
            "state_bytes": state, "knn": knn, "tokens_per_frame": span.sinks + span.window + span.chunk}


def jobs(cfg: Config, folder: RunFolder) -> list[Job]:
    models = cfg.models_dir or str(folder.file("models"))
    out = []
    for seed in cfg.pretrain_seeds:
        job = EvalJob(
            cfg.pretraining, os.path.join(models, f"seed{seed}"), cfg.span, cfg.arms, cfg.distances,
            cfg.trials, cfg.kv_distances, cfg.kv_pairs, cfg.loss_streams, cfg.loss_tokens,
            cfg.knn_tokens, cfg.knn_eval_tokens, cfg.knn_k, cfg.knn_draws, cfg.seed,
        )
        out.append(Job.of(evaluate_seed, job, seed))
    return out


def units(rows: list[dict[str, Any]], metric: str, arm: str, beyond: int) -> list[float]:
    """Per (seed, distance, trial) unit of ``metric``'s rows for ``arm``, in one fixed order;
    passkey units only at distances ≥ ``beyond`` windows (late_loss: log-prob = −loss)."""
    mine = [r for r in rows if r["task"] == metric and r["arm"] == arm
            and (metric != "passkey" or r["distance"] >= beyond)]
    mine.sort(key=lambda r: (r["seed"], r["distance"], r["trial"]))
    return [r["log_prob"] for r in mine]


def hypothesis_rows(rows: list[dict[str, Any]], arms: tuple[str, ...]) -> list[dict[str, Any]]:
    """The pre-registered comparisons whose arms were run, paired, Holm over all of them."""
    chosen = [h for h in HYPOTHESES if h[2] in arms and h[3] in arms]
    samples, pairs = {}, []
    for _, metric, a, b in chosen:
        key_a, key_b = f"{metric}:{a}", f"{metric}:{b}"
        samples[key_a] = units(rows, metric, a, 2)
        samples[key_b] = units(rows, metric, b, 2)
        pairs.append((key_a, key_b))
    if not pairs or min(len(v) for v in samples.values()) < 2:
        return []
    table = []
    for (hid, metric, a, b), c in zip(chosen, compare(samples, pairs, paired=True), strict=True):
        row = c.row()
        better = row["diff"] > 0
        verdict = "no detectable difference"
        if row["significant"]:
            verdict = ("differ" if hid == "P8" else "holds") if better or hid == "P8" else "reversed"
        table.append({"id": hid, "metric": metric, "a": a, "b": b, "n": row["n_a"],
                      "diff": row["diff"], "diff_low": row["diff_low"], "diff_high": row["diff_high"],
                      "p": row["p"], "p_holm": row["p_holm"], "verdict": verdict})
    return table


def summary(rows: list[dict[str, Any]], arms: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per task, distance and arm: solved share with its Wilson interval and mean log-prob."""
    from engram.stats import proportion_ci

    table = []
    keys = sorted({(r["task"], r["distance"]) for r in rows if r["task"] != "late_loss"})
    for task, d in keys:
        for arm in (*arms, "full"):
            mine = [r for r in rows if (r["task"], r["distance"], r["arm"]) == (task, d, arm)]
            if not mine:
                continue
            solved = sum(r["solved"] for r in mine)
            ci = proportion_ci(solved, len(mine))
            table.append({"task": task, "distance_windows": d, "arm": arm, "trials": len(mine),
                          "solved": solved / len(mine), "solved_low": ci.low, "solved_high": ci.high,
                          "letter_accuracy": float(np.mean([r["letter_accuracy"] for r in mine])),
                          "log_prob": float(np.mean([r["log_prob"] for r in mine]))})
    return table


def _figures(folder: RunFolder, results: list[dict[str, Any]], table: list[dict[str, Any]],
             cfg: Config) -> tuple[str, ...]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm in (*cfg.arms, "full"):
        points = [(r["distance_windows"], r["letter_accuracy"]) for r in table
                  if r["task"] == "passkey" and r["arm"] == arm]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=arm)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel(f"distance (windows of {cfg.span.window} tokens)")
    ax.set_ylabel("passkey letters correct (top-1 share)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    folder.save_figure("passkey.png", fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 32
    for arm in (*cfg.arms, "full"):
        curves = [np.array(r["curves"][arm]) for r in results if arm in r["curves"]]
        curve = np.mean(curves, 0)
        n = len(curve) // width * width
        if n == 0:
            continue
        smooth = curve[:n].reshape(-1, width).mean(1)
        ax.plot(np.arange(len(smooth)) * width + width / 2, smooth, label=arm)
    ax.axvline(cfg.span.window, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("position in the stream (tokens)")
    ax.set_ylabel(f"loss (nats/char, mean of {width}-token bins)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    folder.save_figure("loss_by_position.png", fig)
    return ("passkey.png", "loss_by_position.png")


def _claims(cfg: Config, results, table, tests) -> list[Claim]:
    span = cfg.span
    seeds = ", ".join(map(str, cfg.pretrain_seeds))
    m = cfg.pretraining.model
    echoed = f", echoed every {cfg.pretraining.echo_every}" if cfg.pretraining.echo_every else ""
    conditions = (
        f"{m['n_layer']}×{m['n_embd']} char LM (block {m['block_size']}), {cfg.pretraining.steps} "
        f"steps{echoed}, pretraining seeds {seeds}; "
        f"window {span.window} + {span.sinks} sinks, chunk {span.chunk}; {cfg.trials} trials per "
        f"distance and seed; memories written at eviction, no training"
    )
    state = {arm: max(r["state_bytes"].get(arm, 0) for r in results) for arm in cfg.arms}
    claims = []
    for t in tests:
        metric = METRICS[t["metric"]]
        sizes = f"{state.get(t['a'], 0):,} B vs {state.get(t['b'], 0):,} B"
        interval = f"[{t['diff_low']:+.3f}, {t['diff_high']:+.3f}]"
        claims.append(Claim(
            f"{t['id']}: {t['a']} vs {t['b']} ({sizes} beyond the frame), {metric}",
            f"Δ {t['diff']:+.3f} {interval} nats, Holm p = {t['p_holm']:.3g}",
            "two-sided difference" if t["id"] == "P8" else f"{t['a']} above {t['b']}",
            t["verdict"], f"{conditions}; n = {t['n']} paired units", value=t["diff"],
        ))
    for arm in ("window", "episodic", "episodic_all", "compressive", "xl"):
        far = [r for r in table if r["task"] == "passkey" and r["arm"] == arm
               and r["distance_windows"] == max(cfg.distances)]
        if far:
            r = far[0]
            claims.append(Claim(
                f"Passkey solved at {max(cfg.distances)} windows: {arm}",
                f"{r['solved']:.2f} [{r['solved_low']:.2f}, {r['solved_high']:.2f}]",
                "measured", "measured", conditions, value=r["solved"],
            ))
    knn = [draw for r in results for draw in r["knn"]]
    if knn:
        from engram.stats import mean_ci

        def interval(key: str) -> str:
            values = [k[key] for k in knn]
            if len(values) < 2:
                return f"{values[0]:.3f}"
            ci = mean_ci(values)
            return f"{np.mean(values):.3f} [{ci.low:.3f}, {ci.high:.3f}]"

        mixed = float(np.mean([k["mixed_top5"] for k in knn]))
        claims.append(Claim(
            "kNN-LM top-5 retrieval accuracy (true next token among the 5 nearest stored states)",
            f"memory {interval('memory_top5')}; model {interval('model_top5')}; "
            f"kNN-LM {interval('mixed_top5')}",
            "source: 75–85% top-5 → > 95%",
            "source's > 95% not reached" if mixed <= 0.95 else "> 95% reached",
            f"{knn[0]['entries']:,} training tokens stored, {knn[0]['positions']:,} validation "
            f"positions per draw, k = {cfg.knn_k}, λ = 0.25; {len(knn)} draws (memory and "
            f"validation stretches) over pretraining seeds {seeds}",
            value=float(np.mean([k["memory_top5"] for k in knn])),
        ))
    return claims


def run(cfg: Config, folder: RunFolder) -> Result:
    """Evaluate every pretraining seed through the job runner, then test the hypotheses."""
    results = run_jobs(jobs(cfg, folder), folder.path, description="lm longcontext")
    rows = [row for r in results for row in r["rows"]]
    table = summary(rows, cfg.arms)
    tests = hypothesis_rows(rows, cfg.arms)
    figures = _figures(folder, results, table, cfg)
    knn_rows = [{"seed": r["seed"], "val_loss": r["val_loss"], **draw} for r in results for draw in r["knn"]]
    state = [{"arm": arm, "memory_bytes": max(r["state_bytes"].get(arm, 0) for r in results)}
             for arm in cfg.arms]
    return Result(
        claims=tuple(_claims(cfg, results, table, tests)),
        tables={"tasks": table, "hypotheses": tests, "knn_lm": knn_rows, "state": state,
                "trials": rows},
        figures=figures,
        title="Memory beyond the window at inference (pretrained char LM)",
        intro=__doc__.split("\n\n")[0],
        sections=(f"## Config\n\n```\n{dataclasses.asdict(cfg)}\n```",),
    )
