"""A language model that learns in its sleep: days of conversations, consolidated each night,
against no consolidation, naive fine-tuning, uniform replay, EWC and the sleep with each part off.

Every arm sees the same stream of days and starts from the same base model per (model, seed)
(pretrained on tiny shakespeare once, a cached job); every night has the same budget (steps ×
batch). Each morning the weights answer closed-book questions in held-out forms about every fact
told so far; the day × day retention matrix, corrected facts, base-corpus loss drift and the
night's tokens and seconds are recorded. The complementary-learning-systems check: before the
last night the hippocampus answers by retrieval (the day's conversation in context) while the
weights do not; after it the weights answer alone; then the hippocampus forgets the older days
and the weights still answer for them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.runs import Claim, Job, Result, RunFolder, compare, markdown_table, run_jobs

ARMS: dict[str, dict[str, Any]] = {
    "none": {},
    "naive": {"mode": "all", "old": 0.0, "base": 0.0, "dream": 0.0, "prioritized": False},
    "replay": {"mode": "all", "old": 0.5, "base": 0.0, "dream": 0.0, "prioritized": False},
    "ewc": {"mode": "all", "old": 0.0, "base": 0.0, "dream": 0.0, "prioritized": False,
            "ewc": True},
    "sleep": {"ewc": True},
    "sleep-no-priorities": {"ewc": True, "prioritized": False},
    "sleep-no-interleaving": {"ewc": True, "old": 0.0, "base": 0.0},
    "sleep-no-dreams": {"ewc": True, "dream": 0.0},
    "sleep-no-frozen": {"ewc": True, "mode": "all"},
    "sleep-no-ewc": {},
    "sleep-adamw": {"ewc": True, "optimizer": "adamw"},
    "sleep-gpt": {"ewc": True, "model": "gpt"},
}


@dataclass(frozen=True)
class Model:
    """The base model both kinds share; ``parts`` are the HippocampalTransformer's."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    block_size: int = 96
    parts: tuple[str, ...] = ("grid", "theta_gamma")


@dataclass(frozen=True)
class Config:
    """Stream, base model, night budget and arms (pre-registered in configs/lm/sleep.toml)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    seed: int = 0
    arms: tuple[str, ...] = tuple(ARMS)
    days: int = 10
    facts_per_day: int = 6
    corrections_per_day: int = 1
    model: Model = field(default_factory=Model)
    pretrain_steps: int = 600
    pretrain_batch: int = 16
    pretrain_lr: float = 2e-3
    steps: int = 60
    batch: int = 16
    lr: float = 1e-3
    decision_tokens: int = 16
    ewc: float = 100.0
    optimizer: str = "apollo"
    apollo_rank: int = 8
    base_batches: int = 4
    skill_documents: int = 0
    skill_subjects: int = 64
    probe_split: str = "test"
    shared_base: bool = False
    shares: tuple[float, float, float] = (0.25, 0.25, 0.25)
    baseline_optimizer: str = ""
    data: str = ""
    device: str = "cpu"

    def __post_init__(self) -> None:
        from engram.params import Interval, Options, check

        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"arms: unknown {unknown}; expected names from {list(ARMS)}")
        if "sleep" not in self.arms:
            raise ValueError("arms: the comparisons need 'sleep'")
        if not self.seeds:
            raise ValueError("seeds: expected at least one seed, got none")
        for name in ("days", "facts_per_day", "pretrain_steps", "pretrain_batch", "steps", "batch",
                     "decision_tokens", "apollo_rank", "base_batches"):
            check(name, getattr(self, name), Interval(int, 1, None))
        check("optimizer", self.optimizer, Options(("adamw", "apollo")))
        check("skill_documents", self.skill_documents, Interval(int, 0, None))
        check("skill_subjects", self.skill_subjects, Interval(int, 1, None))
        check("probe_split", self.probe_split, Options(("validation", "test")))
        check("baseline_optimizer", self.baseline_optimizer, Options(("", "adamw", "apollo")))
        if len(self.shares) != 3 or not 0 <= sum(self.shares) < 1 or min(self.shares) < 0:
            raise ValueError(f"shares: expected (old, base, dream) shares ≥ 0 summing below 1, "
                             f"got {self.shares}")


QUICK = Config(seeds=(0,), arms=("none", "naive", "sleep", "sleep-gpt"), days=2, facts_per_day=2,
               model=Model(n_layer=1, n_head=2, n_embd=16, block_size=64), pretrain_steps=2,
               pretrain_batch=2, steps=2, batch=4, optimizer="adamw", base_batches=1)


@dataclass(frozen=True)
class PretrainJob:
    """One base model: its kind, sizes, budget and the folder it trains into."""

    kind: str
    model: dict[str, Any]
    steps: int
    batch: int
    lr: float
    data: str
    folder: str
    device: str = "cpu"
    skill_documents: int = 0
    skill_subjects: int = 64
    exclude: tuple[str, ...] = ()


def mixture(text: str, skill: str, seed: int) -> tuple[str, float]:
    """(text, train_fraction): the base text's training part with the skill documents shuffled in
    among its paragraphs, then the base text's own validation part unchanged (so base-corpus loss
    is measured on the base text alone); the fraction splits the result exactly there."""
    import random

    from engram.data.text import split_text

    train_part, val_part = split_text(text, 0.9)
    pieces = [p + "\n\n" for p in train_part.split("\n\n") if p]
    docs = [d + "\n\n" for d in skill.split("\n\n") if d.strip()]
    rng = random.Random(f"engram.lm.sleep.mixture/{seed}")
    slots = sorted(rng.randrange(len(pieces) + 1) for _ in docs)
    out, j = [], 0
    for i, piece in enumerate(pieces):
        while j < len(slots) and slots[j] <= i:
            out.append(docs[j])
            j += 1
        out.append(piece)
    out.extend(docs[j:])
    mixed = "".join(out)
    return mixed + val_part, (len(mixed) + 0.5) / (len(mixed) + len(val_part))


def pretrain(job: PretrainJob, seed: int) -> dict[str, Any]:
    """Train one base model on the base corpus (with ``skill_documents`` of teaching text about
    subjects disjoint from the stream's mixed in) into ``job.folder`` (the job runner caches it)."""
    from pathlib import Path

    from engram.data.facts import skill_text
    from engram.data.text import read_text
    from engram.io import atomic_write_text
    from engram.lm.train import TrainConfig, train

    data, fraction = job.data or TrainConfig().data, 0.9
    if job.skill_documents:
        text, fraction = mixture(read_text(data), skill_text(job.skill_documents, seed, job.exclude,
                                                             job.skill_subjects), seed)
        data = str(atomic_write_text(Path(job.folder) / "mixture.txt", text))
    cfg = TrainConfig(data=data, train_fraction=fraction, model=job.model, batch_size=job.batch,
                      max_steps=job.steps, learning_rate=job.lr, min_lr=job.lr / 10,
                      warmup_steps=min(50, job.steps), eval_interval=job.steps, eval_batches=4,
                      checkpoint_interval=job.steps, seed=seed, device=job.device)
    result = train(cfg, job.folder)
    return {"kind": job.kind, "seed": seed, "val_loss": result.final_val_loss,
            "params": result.params, "folder": job.folder}


@dataclass(frozen=True)
class ArmJob:
    """One arm on one seed: the base model's folder, the stream and the night's settings."""

    arm: str
    base: str
    days: int
    facts_per_day: int
    corrections_per_day: int
    steps: int
    batch: int
    lr: float
    decision_tokens: int
    ewc: float
    optimizer: str
    apollo_rank: int
    base_batches: int
    device: str = "cpu"
    probe_split: str = "test"
    shares: tuple[float, float, float] = (0.25, 0.25, 0.25)
    baseline_optimizer: str = ""


BASELINES = ("naive", "replay", "ewc")


def _night_config(job: ArmJob, seed: int):
    from engram.lm.sleep.night import NightConfig

    spec = ARMS[job.arm]
    values = {k: v for k, v in spec.items() if k in ("mode", "old", "base", "dream", "prioritized",
                                                   "optimizer", "dream_length", "alpha")}
    if job.arm in BASELINES and job.baseline_optimizer:
        values.setdefault("optimizer", job.baseline_optimizer)
    values.setdefault("optimizer", job.optimizer)
    values = {**dict(zip(("old", "base", "dream"), job.shares, strict=True)), **values}
    return NightConfig(steps=job.steps, batch=job.batch, lr=job.lr, ewc=job.ewc if spec.get("ewc") else 0.0,
                       apollo_rank=job.apollo_rank, checkpoint_every=job.steps, seed=seed, **values)


def run_arm(job: ArmJob, seed: int) -> dict[str, Any]:
    """Live the stream with one strategy: each day into the hippocampus, a night, a morning probe."""
    import time

    import torch

    from engram.data.facts import generate_days
    from engram.data.text import TextCorpus
    from engram.lm.sleep import Hippocampus, Layout, Scorer, Sleep, probe
    from engram.lm.train import estimate_loss, model_from_checkpoint
    from engram.replay.priority import PrioritySignals

    torch.manual_seed(seed)
    model, tokenizer, _ = model_from_checkpoint(job.base, job.device)
    corpus = TextCorpus.open(f"{job.base}/corpus")
    stream = generate_days(job.days, job.facts_per_day, job.corrections_per_day, seed=seed)
    layout = Layout(model.config.block_size, job.decision_tokens)
    width = layout.context  # prompts laid out as the episodes are (engram.lm.sleep.probe)
    h = Hippocampus(tokenizer, layout, capacity=job.days * (job.facts_per_day + job.corrections_per_day) + 8,
                    seed=seed)
    config = _night_config(job, seed)
    sleep = Sleep(model, h, config, base=corpus.train,
                  scorer=Scorer(PrioritySignals() if config.prioritized else None, seed))

    def base_loss() -> float:
        return estimate_loss(model, corpus.val, layout.length, 16, job.base_batches, seed=seed,
                             dtype="float32")

    base0 = base_loss()
    matrix = np.full((job.days, job.days), np.nan)  # [after day, facts first told on day]
    corrected, nights, validation = [], [], []
    cls: dict[str, float] = {}
    for day in range(1, job.days + 1):
        h.add(list(stream.days[day - 1]), model=model)
        if day == job.days:  # the CLS check, before the last night
            today = stream.probe(day, job.probe_split, day=day)
            contexts = [_retrieved(h, q) for q in today]
            cls["retrieval_before_sleep"] = probe(model, tokenizer, today, contexts, width=width).accuracy
            cls["weights_before_sleep"] = probe(model, tokenizer, today, width=width).accuracy
        tic = time.perf_counter()
        report = sleep.night(day) if job.arm != "none" else None
        nights.append({"day": day, "seconds": time.perf_counter() - tic,
                       "tokens_forward": report.tokens_forward if report else 0,
                       "tokens_gradient": report.tokens_gradient if report else 0})
        questions = stream.probe(day, job.probe_split)
        result = probe(model, tokenizer, questions, width=width)
        for d in range(1, day + 1):
            mine = [i for i, q in enumerate(questions) if q.fact.day == d]
            matrix[day - 1, d - 1] = float(result.correct[mine].mean())
        fixed = [i for i, q in enumerate(questions) if q.fact.correction]
        if fixed:
            corrected.append(float(result.correct[fixed].mean()))
        validation.append(probe(model, tokenizer, stream.probe(day, "validation", day=day),
                                width=width).accuracy)
    last = stream.probe(job.days, job.probe_split, day=job.days)
    cls["weights_after_sleep"] = probe(model, tokenizer, last, width=width).accuracy
    old = [q for q in stream.probe(job.days, job.probe_split) if q.fact.day < job.days]
    if old:
        cls["retrieval_old_days"] = probe(model, tokenizer, old, [_retrieved(h, q) for q in old],
                                            width=width).accuracy
        h.forget(set(range(1, job.days)))
        cls["after_forgetting_old_days"] = probe(model, tokenizer, old,
                                                 [_retrieved(h, q) for q in old], width=width).accuracy
    base1 = base_loss()
    return {"arm": job.arm, "seed": seed, "matrix": matrix.tolist(), "corrected": corrected,
            "validation_next_morning": validation, "base_loss_before": base0,
            "base_loss_after": base1, "nights": nights, "cls": cls}


def _retrieved(h, question) -> str:
    """The hippocampus's answer to a question: the latest stored conversation turn about its subject."""
    episode = h.retrieve(question.fact.subject)
    if episode is None:
        return ""
    return episode.context.split("\n")[-1] + episode.decision + "\n"


def _kind(arm: str) -> str:
    return ARMS[arm].get("model", "ht")


def jobs(cfg: Config, folder: RunFolder) -> tuple[list[Job], list[Job]]:
    """(pretraining jobs per (model kind, seed) — or per kind, seed ``cfg.seed``, with
    ``shared_base`` — and arm jobs per (arm, seed)); the skill text excludes every subject of
    every seed's stream."""
    from engram.data.facts import generate_days

    sizes = dataclasses.asdict(cfg.model)
    kinds = sorted({_kind(a) for a in cfg.arms})
    exclude = tuple(sorted({q.subject for s in cfg.seeds for q in generate_days(
        cfg.days, cfg.facts_per_day, cfg.corrections_per_day, seed=s).facts_after(cfg.days).values()}))
    pre, arms = [], []

    def base_of(kind: str, seed: int) -> str:
        return str(folder.file(f"base-{kind}" if cfg.shared_base else f"base-{kind}-seed{seed}"))

    for seed in (cfg.seed,) if cfg.shared_base else cfg.seeds:
        for kind in kinds:
            model = {**sizes, "parts": list(sizes["parts"]) if kind == "ht" else []}
            pre.append(Job.of(pretrain, PretrainJob(kind, model, cfg.pretrain_steps,
                                                    cfg.pretrain_batch, cfg.pretrain_lr, cfg.data,
                                                    base_of(kind, seed), cfg.device,
                                                    cfg.skill_documents, cfg.skill_subjects,
                                                    exclude if cfg.skill_documents else ()), seed))
    for seed in cfg.seeds:
        for arm in cfg.arms:
            base = base_of(_kind(arm), seed)
            arms.append(Job.of(run_arm, ArmJob(arm, base, cfg.days, cfg.facts_per_day,
                                               cfg.corrections_per_day, cfg.steps, cfg.batch, cfg.lr,
                                               cfg.decision_tokens, cfg.ewc, cfg.optimizer,
                                               cfg.apollo_rank, cfg.base_batches, cfg.device,
                                               cfg.probe_split, tuple(cfg.shares),
                                               cfg.baseline_optimizer),
                                        seed))
    return pre, arms


def metrics(row: dict[str, Any]) -> dict[str, float]:
    """One run's headline numbers from its retention matrix and losses."""
    m = np.array(row["matrix"], dtype=float)
    n = m.shape[0]
    next_morning = float(np.mean([m[d, d] for d in range(n)]))
    forgetting = float(np.mean([m[d, d] - m[n - 1, d] for d in range(n - 1)])) if n > 1 else 0.0
    nights = row["nights"]
    return {
        "next_morning": next_morning,
        "final_all_days": float(np.mean(m[n - 1])),
        "day1_final": float(m[n - 1, 0]),
        "forgetting": forgetting,
        "corrected": float(np.mean(row["corrected"])) if row["corrected"] else math.nan,
        "validation_next_morning": float(np.mean(row["validation_next_morning"])),
        "base_drift_pct": 100 * (row["base_loss_after"] / row["base_loss_before"] - 1),
        "seconds_per_night": float(np.mean([x["seconds"] for x in nights])),
        "tokens_per_night": float(np.mean([x["tokens_forward"] for x in nights])),
        "gradient_tokens_per_night": float(np.mean([x["tokens_gradient"] for x in nights])),
        **{f"cls_{k}": v for k, v in row["cls"].items()},
    }


def _summary(per_run: list[dict[str, Any]], arms: tuple[str, ...]) -> list[dict[str, Any]]:
    from engram.stats import mean_ci

    out = []
    for arm in arms:
        mine = [r for r in per_run if r["arm"] == arm]
        entry: dict[str, Any] = {"arm": arm, "seeds": len(mine)}
        for key in ("next_morning", "day1_final", "final_all_days", "forgetting", "corrected",
                    "base_drift_pct", "seconds_per_night", "tokens_per_night"):
            values = np.array([r[key] for r in mine], dtype=float)
            values = values[np.isfinite(values)]
            ci = mean_ci(values) if values.size else None
            entry[key] = ci.estimate if ci else math.nan
            if key in ("next_morning", "day1_final", "final_all_days", "forgetting"):
                entry[f"{key}_ci"] = f"[{ci.low:.3f}, {ci.high:.3f}]" if ci else ""
        out.append(entry)
    return out


def _heatmaps(rows: list[dict[str, Any]], arms: tuple[str, ...]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [a for a in ("naive", "replay", "sleep", "sleep-gpt") if a in arms]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.4), squeeze=False)
    for ax, arm in zip(axes[0], shown, strict=True):
        m = np.nanmean([np.array(r["matrix"], dtype=float) for r in rows if r["arm"] == arm], 0)
        image = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", origin="upper")
        ax.set_title(arm)
        ax.set_xlabel("facts of day")
        ax.set_ylabel("morning after day")
        n = m.shape[0]
        ax.set_xticks(range(n), [str(i + 1) for i in range(n)])
        ax.set_yticks(range(n), [str(i + 1) for i in range(n)])
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="closed-book accuracy")
    return fig


def _comparisons(per_run: list[dict[str, Any]], arms: tuple[str, ...], seeds: int) -> list[dict]:
    """Pre-registered family (Holm over all, paired by seed): the sleep against every other arm on
    final accuracy over all days' facts, and on forgetting against naive fine-tuning."""
    if seeds < 2:
        return []
    samples = {a: [r["final_all_days"] for r in per_run if r["arm"] == a] for a in arms}
    pairs = [("sleep", a) for a in arms if a != "sleep"]
    if "naive" in arms:  # the same family: one Holm correction over every pair
        for a in ("sleep", "naive"):
            samples[f"{a}:forgetting"] = [r["forgetting"] for r in per_run if r["arm"] == a]
        pairs.append(("sleep:forgetting", "naive:forgetting"))
    rows = []
    for c in compare(samples, pairs, paired=True):
        row = c.row()
        metric = "forgetting" if row["a"].endswith(":forgetting") else "final_all_days"
        rows.append({**row, "a": row["a"].split(":")[0], "b": row["b"].split(":")[0],
                     "metric": metric})
    return rows


def _claims(cfg: Config, summary: list[dict[str, Any]], comparisons: list[dict[str, Any]],
            per_run: list[dict[str, Any]]) -> list[Claim]:
    by = {s["arm"]: s for s in summary}
    s = by["sleep"]
    cond = (f"{cfg.days} days × {cfg.facts_per_day} facts (+{cfg.corrections_per_day} correction/day), "
            f"{len(cfg.seeds)} seeds, {cfg.model.n_layer}×{cfg.model.n_embd} char model, night "
            f"{cfg.steps} steps × {cfg.batch}, closed-book 8-way choice (chance 0.125), held-out forms")
    claims = [
        Claim("Next-morning closed-book accuracy (sleep)", f"{s['next_morning']:.3f} {s['next_morning_ci']}",
              "≥ 0.90", "met" if s["next_morning"] >= 0.9 else "not met", cond, value=s["next_morning"]),
        Claim(f"Day-1 facts after day {cfg.days} (sleep)", f"{s['day1_final']:.3f} {s['day1_final_ci']}",
              "≥ 0.90", "met" if s["day1_final"] >= 0.9 else "not met", cond, value=s["day1_final"]),
        Claim("Base-corpus loss drift (sleep)", f"{s['base_drift_pct']:+.2f}%", "within ±2%",
              "met" if abs(s["base_drift_pct"]) <= 2 else "not met", cond, value=s["base_drift_pct"]),
    ]
    if "naive" in by:
        n = by["naive"]
        ratio = s["forgetting"] / n["forgetting"] if n["forgetting"] > 0 else math.nan
        met = (s["forgetting"] <= n["forgetting"] / 10) if n["forgetting"] > 0 else False
        claims.append(Claim("Forgetting, sleep vs naive fine-tuning",
                            f"{s['forgetting']:.3f} vs {n['forgetting']:.3f} (ratio {ratio:.2f})",
                            "≤ 1/10 of naive's", "met" if met else "not met",
                            f"{cond}; forgetting = mean over days d < last of "
                            "acc(d after d) − acc(d after last)",
                            value=s["forgetting"]))
    if "sleep-gpt" in by:
        g = by["sleep-gpt"]
        row = next((c for c in comparisons
                    if c["b"] == "sleep-gpt" and c["metric"] == "final_all_days"), None)
        verdict = "no detectable difference"
        if row and row["significant"]:
            verdict = "HT better" if row["diff"] > 0 else "GPT better"
        claims.append(Claim("HippocampalTransformer vs plain GPT, full sleep (final accuracy, all days)",
                            f"{s['final_all_days']:.3f} vs {g['final_all_days']:.3f}"
                            + (f", Holm p = {row['p_holm']:.3g}" if row else ""),
                            "pre-registered comparison", verdict, cond, value=s["final_all_days"]))
    cls = [r for r in per_run if r["arm"] == "sleep" and "cls_retrieval_before_sleep" in r]
    if cls:
        mean = {k: float(np.mean([r[k] for r in cls if k in r])) for k in cls[0] if k.startswith("cls_")}
        claims.append(Claim(
            "CLS: retrieval answers before sleep, the weights after; "
            "they keep old days without the hippocampus",
            f"last day: retrieval {mean['cls_retrieval_before_sleep']:.2f}, weights "
            f"{mean['cls_weights_before_sleep']:.2f} → {mean['cls_weights_after_sleep']:.2f} after sleep; "
            f"old days: retrieval {mean.get('cls_retrieval_old_days', math.nan):.2f} → "
            f"{mean.get('cls_after_forgetting_old_days', math.nan):.2f} with the hippocampus emptied",
            "weights after sleep ≈ retrieval before", "measured", cond,
            value=mean["cls_weights_after_sleep"]))
    return claims


def run(cfg: Config, folder: RunFolder) -> Result:
    """Pretrain the base models (cached), live the stream with every arm, compare, report."""
    pre, arm_jobs = jobs(cfg, folder)
    bases = run_jobs(pre, folder.path, description="lm sleep: base models")
    rows = run_jobs(arm_jobs, folder.path, description="lm sleep: arms")
    per_run = [{"arm": r["arm"], "seed": r["seed"], **metrics(r)} for r in rows]
    summary = _summary(per_run, cfg.arms)
    comparisons = _comparisons(per_run, cfg.arms, len(cfg.seeds))
    folder.save_figure("retention.png", _heatmaps(rows, cfg.arms))
    matrix = [{"arm": r["arm"], "seed": r["seed"], "after_day": i + 1, "facts_of_day": j + 1, "accuracy": v}
              for r in rows for i, line in enumerate(r["matrix"]) for j, v in enumerate(line)
              if v is not None and not (isinstance(v, float) and math.isnan(v))]
    tables = {"summary": summary, "per_seed": per_run, "retention": matrix,
              "base_models": [{k: v for k, v in b.items() if k != "folder"} for b in bases]}
    if comparisons:
        tables["comparisons"] = comparisons
    show = ("arm", "seeds", "next_morning", "next_morning_ci", "day1_final", "final_all_days",
            "forgetting", "corrected", "base_drift_pct", "seconds_per_night", "tokens_per_night")
    sections = ["## Arms (means over seeds, 95% t intervals)\n\n"
                + markdown_table([{k: e[k] for k in show} for e in summary])]
    if comparisons:
        keep = ("metric", "a", "b", "mean_a", "mean_b", "diff", "diff_low", "diff_high", "p", "p_holm",
                "significant")
        sections.append("## Pre-registered comparisons (paired by seed, Holm)\n\n"
                        + markdown_table([{k: c[k] for k in keep} for c in comparisons]))
    return Result(
        claims=tuple(_claims(cfg, summary, comparisons, per_run)),
        tables=tables,
        figures=("retention.png",),
        title="A language model that learns in its sleep",
        intro=(f"Arms {', '.join(cfg.arms)}; seeds {list(cfg.seeds)}; {cfg.days} days of "
               f"{cfg.facts_per_day} facts; base model {dataclasses.asdict(cfg.model)} pretrained "
               f"{cfg.pretrain_steps} steps on tiny shakespeare"
               + (f" mixed with {cfg.skill_documents} skill documents about other invented subjects"
                  if cfg.skill_documents else "")
               + (" (one base per model kind for every seed)" if cfg.shared_base else "")
               + f"; nights of {cfg.steps} steps × {cfg.batch} at lr {cfg.lr} (shares old, base, "
               f"dream {tuple(cfg.shares)}). Accuracy: closed-book 8-way choice by likelihood "
               f"(chance 0.125) on the {cfg.probe_split} question forms, prompts laid out as the "
               "night's episodes."),
        sections=tuple(sections),
    )
