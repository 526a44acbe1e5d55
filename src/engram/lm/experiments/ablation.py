"""The plain GPT against each hippocampal part alone and all of them, same data, budget and seeds.

Every (variant, seed) trains with the same optimiser, step budget and batches per seed, and is
scored over the whole validation split (or its first ``val_tokens``); the comparison battery
tests each variant against ``baseline`` (Welch, Holm over the family) and, at equal
parameters, all parts against ``baseline-matched``: the plain GPT with its MLP widened to the
all-parts parameter count. Optionally the first seed's baseline is also scored as a kNN-LM.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.lm.model import PARTS
from engram.runs import Claim, Job, Result, RunFolder, against, compare, markdown_table, run_jobs

MATCHED = "baseline-matched"
VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    **{part: (part,) for part in PARTS},
    "all": PARTS,
    MATCHED: (),
}
CURVE_COLUMNS = ("variant", "seed", "step", "val_loss")


def variant_model(model: dict[str, Any], variant: str) -> dict[str, Any]:
    """The model config of one variant: the shared ``model`` with the variant's parts, and for
    ``baseline-matched`` the MLP width that gives the plain GPT the all-parts parameter count.

    The width does not depend on the vocabulary: both models hold the same tied embedding.
    """
    from engram.lm.model import HippocampalTransformer, HippocampalTransformerConfig, matched_mlp_hidden

    out = {**model, "parts": VARIANTS[variant]}
    if variant == MATCHED:
        full = HippocampalTransformerConfig.from_dict({**model, "parts": PARTS})
        target = HippocampalTransformer(full, token_strings=[" "] * full.vocab_size).num_params()
        out["mlp_hidden"] = matched_mlp_hidden(full, target).mlp_hidden
    return out


@dataclass(frozen=True)
class Sizes:
    """The transformer every variant shares (nanoGPT's shakespeare-char CPU recipe, ~0.8M)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0


@dataclass(frozen=True)
class Config:
    """Which variants and seeds (``n_seeds`` from ``seed``), the shared training budget, the
    text (``data``; empty = the shared tiny shakespeare) and what else to measure."""

    variants: tuple[str, ...] = tuple(VARIANTS)
    n_seeds: int = 3
    seed: int = 0
    steps: int = 2000
    batch_size: int = 12
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    eval_interval: int = 250
    eval_batches: int = 20
    model: Sizes = field(default_factory=Sizes)
    data: str = ""
    val_tokens: int = 0  # score the first N validation tokens; 0 = the whole split
    sample_tokens: int = 300
    sample_prompt: str = "ROMEO:\n"
    memory_tokens: int = 0  # kNN-LM: training tokens in the first baseline's memory; 0 = off
    memory_lambda: float = 0.25
    memory_k: int = 8

    def __post_init__(self) -> None:
        from engram.params import Interval, check

        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"variants: unknown {unknown}; expected names from {list(VARIANTS)}")
        if "baseline" not in self.variants:
            raise ValueError("variants: the ablation needs 'baseline' to compare against")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants: expected distinct names, got {list(self.variants)}")
        for name in ("n_seeds", "steps", "batch_size", "eval_interval", "eval_batches", "memory_k"):
            check(name, getattr(self, name), Interval(int, 1, None))
        for name in ("seed", "val_tokens", "sample_tokens", "memory_tokens", "warmup_steps"):
            check(name, getattr(self, name), Interval(int, 0, None))
        check("memory_lambda", self.memory_lambda, Interval(float, 0, 1, closed="both"))

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.n_seeds))


QUICK = Config(
    variants=("baseline", "all"),
    n_seeds=2,
    steps=3,
    batch_size=4,
    warmup_steps=1,
    eval_interval=3,
    eval_batches=2,
    model=Sizes(n_layer=1, n_head=2, n_embd=16, block_size=24),
    val_tokens=2000,
    sample_tokens=20,
    memory_tokens=500,
)


@dataclass(frozen=True)
class TrainJob:
    """One (variant, seed) run of an ablation: what it trains, where, and what it scores.

    ``folder`` (where the model is kept for ``engram lm sample|eval``) is part of the job's
    cache key, so a run folder moved elsewhere trains its jobs again when resumed.
    """

    variant: str
    model: dict[str, Any]
    steps: int
    batch_size: int
    learning_rate: float
    min_lr: float
    warmup_steps: int
    eval_interval: int
    eval_batches: int
    data: str
    folder: str
    val_tokens: int
    sample_tokens: int
    sample_prompt: str
    memory_tokens: int
    memory_lambda: float
    memory_k: int
    place_map: bool = False
    device: str = "cpu"


def train_variant(job: TrainJob, seed: int) -> dict[str, Any]:
    """Train one variant with one seed into ``job.folder`` and score it (the job runner's unit)."""
    import torch

    from engram.data.text import TextCorpus
    from engram.lm.evaluate import memory_validation_loss, validation_loss
    from engram.lm.memory import EpisodicMemory
    from engram.lm.sample import SamplingConfig, complete
    from engram.lm.train import TrainConfig, model_from_checkpoint, train

    tcfg = TrainConfig(
        data=job.data or TrainConfig().data,
        model=job.model,
        batch_size=job.batch_size,
        max_steps=job.steps,
        learning_rate=job.learning_rate,
        min_lr=job.min_lr,
        warmup_steps=min(job.warmup_steps, job.steps),
        eval_interval=job.eval_interval,
        eval_batches=job.eval_batches,
        checkpoint_interval=job.steps,
        seed=seed,
        device=job.device,
    )
    os.makedirs(job.folder, exist_ok=True)
    trained = train(tcfg, job.folder)
    model, tokenizer, _ = model_from_checkpoint(job.folder)
    corpus = TextCorpus.open(os.path.join(job.folder, "corpus"))
    val = corpus.val[: job.val_tokens] if job.val_tokens else corpus.val
    val_chars = round(corpus.n_val_chars * len(val) / len(corpus.val))
    report = validation_loss(model, val, val_chars)
    row: dict[str, Any] = {
        "variant": job.variant,
        "seed": seed,
        "params": trained.params,
        "val_loss": report.nats_per_token,
        "val_bpc": report.bits_per_char,
        "val_tokens": report.tokens,
        "estimate_20_batches": trained.final_val_loss,
        "tokens_per_second": trained.tokens_per_second,
        "curve": [[r["step"], r["val_loss"]] for r in trained.history if "val_loss" in r],
    }
    if job.sample_tokens:
        prompt = torch.tensor([tokenizer.encode(job.sample_prompt)])
        sampling = SamplingConfig("sample", temperature=0.8, top_k=40, seed=0)
        row["sample"] = tokenizer.decode(complete(model, prompt, job.sample_tokens, sampling)[0].tolist())
    if job.memory_tokens:
        memory = EpisodicMemory(
            model.config.n_embd, k=job.memory_k, interpolation=job.memory_lambda, keep_log=False
        )
        memory.store_text(model, torch.from_numpy(corpus.train[: job.memory_tokens].astype("int64")))
        knn = memory_validation_loss(model, memory, val, val_chars)
        row["knn_lm"] = {
            "memory_entries": len(memory),
            "search": memory.backend,
            "val_loss": knn.nats_per_token,
            "val_bpc": knn.bits_per_char,
        }
    if job.place_map and model.place is not None:
        from engram.lm.evaluate import place_cell_activity, place_cell_figure
        from engram.runs import RunFolder

        ids = torch.from_numpy(corpus.val[: min(96, model.config.block_size)].astype("int64"))[None]
        labels = [tokenizer.decode([int(i)]) for i in ids[0]]
        figure = place_cell_figure(place_cell_activity(model, ids), labels)
        RunFolder(job.folder).save_figure("place_cells.png", figure)
        row["place_coding_level"] = float(model.place.coding_level.detach())
    return row


def jobs(cfg: Config, folder: RunFolder) -> list[Job]:
    """Every (seed, variant) of the ablation as a job, training into ``folder/<variant>-seed<s>``."""
    out = []
    sizes = dataclasses.asdict(cfg.model)
    for seed in cfg.seeds:
        for variant in cfg.variants:
            first = seed == cfg.seed
            job = TrainJob(
                variant=variant,
                model=variant_model(sizes, variant),
                steps=cfg.steps,
                batch_size=cfg.batch_size,
                learning_rate=cfg.learning_rate,
                min_lr=cfg.min_lr,
                warmup_steps=cfg.warmup_steps,
                eval_interval=cfg.eval_interval,
                eval_batches=cfg.eval_batches,
                data=cfg.data,
                folder=str(folder.file(f"{variant}-seed{seed}")),
                val_tokens=cfg.val_tokens,
                sample_tokens=cfg.sample_tokens if first else 0,
                sample_prompt=cfg.sample_prompt,
                memory_tokens=cfg.memory_tokens if first and variant == "baseline" else 0,
                memory_lambda=cfg.memory_lambda,
                memory_k=cfg.memory_k,
                place_map=first and "place" in VARIANTS[variant],
            )
            out.append(Job.of(train_variant, job, seed))
    return out


def summarise(rows: list[dict[str, Any]], variants: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per variant: parameters, seeds, mean validation loss with a 95% t interval over seeds
    (the mean alone from one seed) and bits per character."""
    from engram.stats import mean_ci

    table = []
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        losses = np.array([r["val_loss"] for r in mine])
        ci = mean_ci(losses) if len(losses) > 1 else None
        table.append(
            {
                "variant": v,
                "params": mine[0]["params"],
                "seeds": len(mine),
                "val_loss": float(losses.mean()),
                "ci_low": ci.low if ci else float("nan"),
                "ci_high": ci.high if ci else float("nan"),
                "val_bpc": float(np.mean([r["val_bpc"] for r in mine])),
            }
        )
    return table


def verdict(comparison: dict[str, Any]) -> str:
    """What a comparison with a lower-is-better loss says: helps, hurts or nothing detected."""
    if not comparison["significant"]:
        return "no detectable difference"
    return "helps" if comparison["diff"] < 0 else "hurts"


def comparisons(rows: list[dict[str, Any]], variants: tuple[str, ...]) -> tuple[list, list]:
    """(each variant against the baseline, all parts against the matched baseline) as battery
    rows, empty where an arm has fewer than two seeds."""
    samples = {v: [r["val_loss"] for r in rows if r["variant"] == v] for v in variants}
    if any(len(values) < 2 for values in samples.values()) or len(samples) < 2:
        return [], []
    family = [c.row() for c in against(samples, "baseline")]
    equal = []
    if "all" in samples and MATCHED in samples:
        equal = [c.row() for c in compare(samples, [("all", MATCHED)])]
    return family, equal


def _figure(rows: list[dict[str, Any]], variants: tuple[str, ...], eval_batches: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, v in enumerate(variants):
        curves = [np.array(r["curve"]) for r in rows if r["variant"] == v]
        mean = np.mean([c[:, 1] for c in curves], 0)
        ax.plot(curves[0][:, 0], mean, label=v, color=colors[i % len(colors)])
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation loss (nats/token, {eval_batches} random batches, mean over seeds)")
    if all(r["curve"][-1][1] < 3.0 for r in rows):  # zoom past the first steps' ln(vocab)
        ax.set_ylim(top=3.0)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _claims(
    cfg: Config, table: list[dict[str, Any]], family: list[dict[str, Any]], equal: list[dict[str, Any]],
    knn: dict[str, Any] | None, place: list[dict[str, Any]],
) -> list[Claim]:
    sizes = cfg.model
    seeds = f"seed {cfg.seed}" if cfg.n_seeds == 1 else f"seeds {cfg.seed}–{cfg.seed + cfg.n_seeds - 1}"
    conditions = (
        f"{cfg.steps} steps, {sizes.n_layer}×{sizes.n_embd} block {sizes.block_size}, batch "
        f"{cfg.batch_size}, {seeds}; loss over "
        f"{'the whole validation split' if not cfg.val_tokens else f'{cfg.val_tokens} validation tokens'}"
    )
    by_variant = {entry["variant"]: entry for entry in table}

    def loss(entry: dict[str, Any]) -> str:
        interval = "" if math.isnan(entry["ci_low"]) else f" [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"
        return f"{entry['val_loss']:.3f}{interval} nats/token"

    base = by_variant["baseline"]
    claims = [
        Claim(
            "The plain GPT's validation loss",
            loss(base),
            "nanoGPT reports 1.88 nats/char for its 2000-step shakespeare-char CPU recipe",
            "measured",
            conditions,
            value=base["val_loss"],
        )
    ]
    for row in family:
        entry = by_variant[row["a"]]
        claims.append(
            Claim(
                f"{row['a']} against the plain GPT",
                f"{loss(entry)}; Δ {row['diff']:+.3f}, Holm p = {row['p_holm']:.3g}",
                "no worse than the plain GPT's interval",
                verdict(row),
                f"{conditions}; {entry['params']:,} vs {base['params']:,} parameters",
                value=entry["val_loss"],
            )
        )
    for row in equal:
        claims.append(
            Claim(
                "All parts against a plain GPT of equal parameters",
                f"Δ {row['diff']:+.3f} nats/token, Welch p = {row['p']:.3g}, Cohen's d = "
                f"{row['cohens_d']:.2f}",
                "no worse than the matched plain GPT",
                verdict(row),
                f"{conditions}; {by_variant['all']['params']:,} vs "
                f"{by_variant[MATCHED]['params']:,} parameters",
                value=row["diff"],
            )
        )
    if knn is not None:
        claims.append(
            Claim(
                "An episodic memory of training text lowers the plain GPT's loss (kNN-LM)",
                f"{knn['plain']:.3f} → {knn['val_loss']:.3f} nats/token",
                "lower with the memory",
                "lower" if knn["val_loss"] < knn["plain"] else "not lower",
                f"seed {cfg.seed} baseline, {knn['memory_entries']:,} memory entries "
                f"({knn['search']} search), k = {cfg.memory_k}, λ = {cfg.memory_lambda}; {conditions}",
                value=knn["val_loss"],
            )
        )
    for r in place:
        claims.append(
            Claim(
                f"Place cells ({r['variant']}) learn their coding level",
                f"{r['place_coding_level']:.3f} after {cfg.steps} steps (started at 0.05)",
                "a sparse code, bounded to [0.01, 0.15]",
                "measured",
                f"seed {r['seed']}; map of the first validation tokens in "
                f"{r['variant']}-seed{r['seed']}/place_cells.png",
                value=r["place_coding_level"],
            )
        )
    return claims


def run(cfg: Config, folder: RunFolder) -> Result:
    """Train every (variant, seed) through the job runner (finished ones are read back from
    ``folder/jobs``), compare, and return the claims, tables and the curves figure."""
    rows = run_jobs(jobs(cfg, folder), folder.path, description="lm ablation")
    table = summarise(rows, cfg.variants)
    family, equal = comparisons(rows, cfg.variants)
    verdicts = {row["a"]: verdict(row) for row in family}
    for entry in table:
        entry["verdict"] = verdicts.get(entry["variant"], "")
    knn = None
    first_base = next(r for r in rows if r["variant"] == "baseline" and r["seed"] == cfg.seed)
    if "knn_lm" in first_base:
        knn = {**first_base["knn_lm"], "plain": first_base["val_loss"]}
    folder.save_figure("curves.png", _figure(rows, cfg.variants, cfg.eval_batches))
    place = [r for r in rows if "place_coding_level" in r]
    figures = ("curves.png", *(f"{r['variant']}-seed{r['seed']}/place_cells.png" for r in place))
    curves = [
        dict(zip(CURVE_COLUMNS, (r["variant"], r["seed"], step, loss), strict=True))
        for r in rows
        for step, loss in r["curve"]
    ]
    runs = [
        {k: v for k, v in r.items() if k not in ("curve", "sample", "knn_lm", "place_coding_level")}
        for r in rows
    ]
    tables: dict[str, list[dict[str, Any]]] = {"variants": table, "runs": runs, "curves": curves}
    if family:
        tables["comparisons"] = family + equal
    if knn is not None:
        tables["knn_lm"] = [knn]
    samples = [
        f"### {r['variant']}\n\n```\n{r['sample']}\n```\n" for r in rows if r.get("sample") is not None
    ]
    sections = [
        "## Variants\n\n" + markdown_table(table),
        *(["## Comparisons\n\n" + markdown_table(family + equal)] if family else []),
        "## Samples (first seed, temperature 0.8, top-k 40)\n\n" + "\n".join(samples),
    ]
    return Result(
        claims=tuple(_claims(cfg, table, family, equal, knn, place)),
        tables=tables,
        figures=figures,
        title="Ablation: the plain GPT against the hippocampal parts",
        intro=(
            f"Variants {', '.join(cfg.variants)}; {cfg.steps} steps, batch {cfg.batch_size}, "
            f"model {dataclasses.asdict(cfg.model)}, seeds {list(cfg.seeds)}. Validation loss "
            "in nats per token (per character for the character tokenizer); interval: 95% "
            "Student t over seeds; p: Welch against the baseline, Holm-corrected."
        ),
        sections=tuple(sections),
    )
