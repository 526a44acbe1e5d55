"""Ablation: the plain GPT against each hippocampal part on its own and all parts together,
same data, optimiser, step budget and seeds; validation loss over the whole validation split,
intervals over seeds and Holm-corrected Welch tests against the baseline. ``baseline-matched``
is the plain GPT with its MLP widened to the all-parts model's parameter count, so that all
parts can also be judged at equal parameters.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.lm.model import PARTS
from engram.runs import RunFolder, markdown_table

MATCHED = "baseline-matched"
VARIANTS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    **{part: (part,) for part in PARTS},
    "all": PARTS,
    MATCHED: (),
}


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


def _default_model() -> dict[str, Any]:
    # nanoGPT's shakespeare-char CPU recipe: ~0.8M parameters
    return {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0}


@dataclass
class Config:
    """Which variants and seeds, and the shared training budget."""

    variants: tuple[str, ...] = tuple(VARIANTS)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 2000
    batch_size: int = 12
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    eval_interval: int = 250
    model: dict[str, Any] = field(default_factory=_default_model)
    data: str = ""
    workers: int = 2
    sample_tokens: int = 300
    sample_prompt: str = "ROMEO:\n"
    train_missing: bool = True

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"variants: unknown {unknown}; expected names from {list(VARIANTS)}")
        if "baseline" not in self.variants:
            raise ValueError("variants: the ablation needs 'baseline' to compare against")
        if not self.seeds:
            raise ValueError("seeds: expected at least one seed")


def _train_one(job: tuple[Config, str, int, str]) -> dict[str, Any]:
    import torch

    from engram.data.text import TextCorpus
    from engram.lm.evaluate import validation_loss
    from engram.lm.train import TrainConfig, train

    cfg, variant, seed, folder = job
    torch.set_num_threads(1)
    os.environ["ENGRAM_QUIET"] = "1"
    tcfg = TrainConfig(
        data=cfg.data or TrainConfig().data,
        model=variant_model(cfg.model, variant),
        batch_size=cfg.batch_size,
        max_steps=cfg.steps,
        learning_rate=cfg.learning_rate,
        min_lr=cfg.min_lr,
        warmup_steps=min(cfg.warmup_steps, cfg.steps),
        eval_interval=cfg.eval_interval,
        checkpoint_interval=cfg.steps,
        seed=seed,
    )
    os.makedirs(folder, exist_ok=True)
    result = train(tcfg, folder)
    from engram.lm.train import model_from_checkpoint

    model, _, _ = model_from_checkpoint(folder)
    corpus = TextCorpus.open(os.path.join(folder, "corpus"))
    report = validation_loss(model, corpus.val, corpus.n_val_chars)
    curve = [(r["step"], r["val_loss"]) for r in result.history if "val_loss" in r]
    row = {
        "variant": variant,
        "seed": seed,
        "params": result.params,
        "val_loss": report.nats_per_token,
        "val_bpc": report.bits_per_char,
        "tokens_per_second": result.tokens_per_second,
        "curve": curve,
        "folder": folder,
    }
    RunFolder(folder).write_json("ablation_row.json", row)
    return row


def _samples(cfg: Config, rows: list[dict[str, Any]]) -> dict[str, str]:
    import torch

    from engram.lm.sample import SamplingConfig, complete
    from engram.lm.train import model_from_checkpoint

    samples = {}
    first_seed = cfg.seeds[0]
    for row in rows:
        if row["seed"] != first_seed:
            continue
        model, tok, _ = model_from_checkpoint(row["folder"])
        prompt = torch.tensor([tok.encode(cfg.sample_prompt)])
        seq = complete(
            model,
            prompt,
            cfg.sample_tokens,
            SamplingConfig("sample", temperature=0.8, top_k=40, seed=0),
        )
        samples[row["variant"]] = tok.decode(seq[0].tolist())
    return samples


def summarise(rows: list[dict[str, Any]], variants: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per variant: parameters, mean val loss with a t interval over seeds, difference to the
    baseline with Welch's test, Holm-corrected over the variants, and a verdict."""
    from engram.stats import correct, mean_ci, welch_test

    by_variant = {v: [r for r in rows if r["variant"] == v] for v in variants}
    variants = tuple(v for v in variants if by_variant[v])
    base = np.array([r["val_loss"] for r in by_variant["baseline"]])
    table, p_values = [], []
    for v in variants:
        losses = np.array([r["val_loss"] for r in by_variant[v]])
        ci = mean_ci(losses)
        entry = {
            "variant": v,
            "params": by_variant[v][0]["params"],
            "seeds": len(losses),
            "val_loss": ci.estimate,
            "ci_low": ci.low,
            "ci_high": ci.high,
            "val_bpc": float(np.mean([r["val_bpc"] for r in by_variant[v]])),
            "tokens_per_s": float(np.mean([r["tokens_per_second"] for r in by_variant[v]])),
        }
        if v != "baseline":
            entry["diff_vs_baseline"] = float(losses.mean() - base.mean())
            if len(losses) > 1 and len(base) > 1:
                p = welch_test(losses, base).p_value
                entry["p_welch"] = p if math.isfinite(p) else 1.0
                p_values.append(entry["p_welch"])
        table.append(entry)
    if p_values:
        reject, adjusted = correct(p_values, method="holm")
        for entry, rej, adj in zip(
            [e for e in table if "p_welch" in e], reject, adjusted, strict=True
        ):
            entry["p_holm"] = float(adj)
            if rej:
                entry["verdict"] = "helps" if entry["diff_vs_baseline"] < 0 else "hurts"
            else:
                entry["verdict"] = "no detectable difference"
    return table


def equal_parameter_comparison(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """All parts against the plain GPT of equal parameter count (``baseline-matched``): the
    difference of mean losses, Welch's test, Cohen's d (all − matched) with a bootstrap
    interval, and whether the all-parts mean lies at or below the top of the matched interval.
    None unless both have at least two seeds."""
    from engram.stats import cohens_d, mean_ci, welch_test

    full = np.array([r["val_loss"] for r in rows if r["variant"] == "all"])
    matched = np.array([r["val_loss"] for r in rows if r["variant"] == MATCHED])
    if len(full) < 2 or len(matched) < 2:
        return None
    ci = mean_ci(matched)
    d = cohens_d(full, matched)
    params = {r["variant"]: r["params"] for r in rows if r["variant"] in ("all", MATCHED)}
    return {
        "params_all": params["all"],
        "params_matched": params[MATCHED],
        "matched_val_loss": ci.estimate,
        "matched_ci_low": ci.low,
        "matched_ci_high": ci.high,
        "all_val_loss": float(full.mean()),
        "diff": float(full.mean() - matched.mean()),
        "p_welch": welch_test(full, matched).p_value,
        "cohens_d": d.estimate,
        "d_ci_low": d.low,
        "d_ci_high": d.high,
        "no_worse": bool(full.mean() <= ci.high),
    }


def _figure(rows: list[dict[str, Any]], variants: tuple[str, ...]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, v in enumerate(variants):
        curves = [np.array(r["curve"]) for r in rows if r["variant"] == v]
        if not curves:
            continue
        steps = curves[0][:, 0]
        mean = np.mean([c[:, 1] for c in curves], 0)
        ax.plot(steps, mean, label=v, color=colors[i % len(colors)])
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/char, 20 random batches, mean over seeds)")
    ax.set_ylim(top=3.0)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def run(cfg: Config, run_folder: RunFolder) -> list[dict[str, Any]]:
    """Train every (variant, seed), write results.json, runs.csv, curves.png and report.md.

    Runs already finished in ``run_folder`` (an interrupted ablation) are read back, not redone;
    with ``train_missing=False`` the report covers only the finished runs.
    """
    jobs, rows = [], []
    for seed in cfg.seeds:
        for variant in cfg.variants:
            folder = run_folder.file(f"{variant}-seed{seed}")
            done = folder / "ablation_row.json"
            if done.is_file():
                rows.append(json.loads(done.read_text()))
            elif cfg.train_missing:
                jobs.append((cfg, variant, seed, str(folder)))
    if not any(r["variant"] == "baseline" for r in rows) and not jobs:
        raise ValueError("run_folder: no finished baseline run to compare against")
    if cfg.workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(cfg.workers) as pool:
            rows += pool.map(_train_one, jobs, chunksize=1)
    else:
        rows += [_train_one(job) for job in jobs]
    table = summarise(rows, cfg.variants)
    equal = equal_parameter_comparison([r for r in rows if r["variant"] in cfg.variants])
    samples = _samples(cfg, rows)
    run_folder.write_csv("runs.csv", [{k: v for k, v in r.items() if k != "curve"} for r in rows])
    run_folder.write_json(
        "results.json",
        {
            "config": dataclasses.asdict(cfg),
            "table": table,
            "equal_parameters": equal,
            "runs": rows,
            "samples": samples,
        },
    )
    run_folder.save_figure("curves.png", _figure(rows, cfg.variants))
    columns = [
        "variant",
        "params",
        "seeds",
        "val_loss",
        "ci_low",
        "ci_high",
        "val_bpc",
        "diff_vs_baseline",
        "p_welch",
        "p_holm",
        "verdict",
        "tokens_per_s",
    ]
    lines = [
        "# Ablation: plain GPT vs hippocampal parts\n",
        f"{cfg.steps} steps, batch {cfg.batch_size}, model {cfg.model}, seeds {list(cfg.seeds)}.",
        "Validation loss in nats per character over the whole validation split (last 10%);",
        "interval: 95% Student-t over seeds; p: Welch vs baseline, Holm-corrected.\n",
        markdown_table(table, columns),
    ]
    if equal is not None:
        lines += [
            "\n## All parts vs the plain GPT of equal parameters\n",
            f"{MATCHED}: MLP widened to {equal['params_matched']:,} parameters against "
            f"{equal['params_all']:,} with all parts; loss {equal['matched_val_loss']:.4f} "
            f"[{equal['matched_ci_low']:.4f}, {equal['matched_ci_high']:.4f}]. All parts "
            f"{equal['all_val_loss']:.4f}, difference {equal['diff']:+.4f}, Welch p = "
            f"{equal['p_welch']:.4g}, Cohen's d = {equal['cohens_d']:.2f} "
            f"[{equal['d_ci_low']:.2f}, {equal['d_ci_high']:.2f}] (bootstrap). All parts no "
            f"worse than the matched interval: {'yes' if equal['no_worse'] else 'no'}.",
        ]
    lines += [
        "\n![curves](curves.png)\n",
        "## Samples (seed 0, temperature 0.8, top-k 40)\n",
    ]
    for v, text in samples.items():
        lines.append(f"### {v}\n\n```\n{text}\n```\n")
    run_folder.write_report("\n".join(lines))
    return table
