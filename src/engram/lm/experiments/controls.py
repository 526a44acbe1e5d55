"""Controls for "biology helps": each hippocampal position code against generic features of the
same width given the same way (sinusoids), a short causal convolution, RoPE and ALiBi; and the
plain GPT against RoPE and ALiBi (whether the generic relative positions help at all).

Every (corpus, variant, seed) trains with the same optimiser, step budget and batches per seed
(the seed fixes the batch order), and is scored over its corpus's whole validation split. The
pre-registered family of comparisons — each code against each of its controls present in the
run, on each corpus, paired by seed — gets ONE Holm correction. A code is "better than its
generic control" only where that comparison is Holm-significant with a lower loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engram.lm.experiments.ablation import Sizes
from engram.runs import Claim, Job, Result, RunFolder, compare, markdown_table, run_jobs

# variant -> (hippocampal parts, controls) of HippocampalTransformerConfig
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "baseline": ((), ()),
    "theta_gamma": (("theta_gamma",), ()),
    "sin_theta_gamma": ((), ("sin_theta_gamma",)),
    "grid": (("grid",), ()),
    "sin_grid": ((), ("sin_grid",)),
    "time": (("time",), ()),
    "sin_time": ((), ("sin_time",)),
    "conv": ((), ("conv",)),
    "rope": ((), ("rope",)),
    "alibi": ((), ("alibi",)),
}
CODES = ("theta_gamma", "grid", "time")
# each code's own generic control first (the verdict), then the generic relative-position ones
CODE_CONTROLS: dict[str, tuple[str, ...]] = {
    "theta_gamma": ("sin_theta_gamma", "rope", "alibi"),
    "grid": ("sin_grid", "rope", "alibi"),
    "time": ("sin_time", "conv", "rope", "alibi"),
}
# the plain GPT against the relative-position controls: Δ > 0 = the control helps it
PAIRS: tuple[tuple[str, str], ...] = (
    *((code, control) for code in CODES for control in CODE_CONTROLS[code]),
    ("baseline", "rope"),
    ("baseline", "alibi"),
)


@dataclass(frozen=True)
class Config:
    """The design: variants and seeds on the first corpus, and on an optional second one
    (``second_corpus`` empty = none), the shared training budget and where it runs.

    ``reuse`` names earlier ``lm.controls`` run folders: an arm whose very job (the same
    training, data and seed; only the folder it trained in differs) is in one's job cache is
    read from there instead of trained again.
    """

    corpus: str = "tinyshakespeare"
    variants: tuple[str, ...] = tuple(VARIANTS)
    n_seeds: int = 5
    second_corpus: str = "wikitext2-valid"
    second_variants: tuple[str, ...] = tuple(VARIANTS)
    second_seeds: int = 5
    seed: int = 0
    steps: int = 5000
    batch_size: int = 12
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    eval_interval: int = 250
    eval_batches: int = 20
    model: Sizes = field(default_factory=Sizes)
    val_tokens: int = 0  # score the first N validation tokens; 0 = the whole split
    device: str = "cpu"
    reuse: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from engram.data.text import CORPORA
        from engram.params import Interval, check

        for name in ("corpus", "second_corpus"):
            value = getattr(self, name)
            if value not in CORPORA and not (name == "second_corpus" and value == ""):
                raise ValueError(f"{name}: expected one of {sorted(CORPORA)}, got {value!r}")
        if self.second_corpus == self.corpus:
            raise ValueError(f"second_corpus: expected a corpus other than {self.corpus!r}")
        for name in ("variants", "second_variants"):
            chosen = getattr(self, name)
            unknown = [v for v in chosen if v not in VARIANTS]
            if unknown:
                raise ValueError(f"{name}: unknown {unknown}; expected names from {list(VARIANTS)}")
            if len(set(chosen)) != len(chosen):
                raise ValueError(f"{name}: expected distinct names, got {list(chosen)}")
        for name in ("n_seeds", "second_seeds", "steps", "batch_size", "eval_interval",
                     "eval_batches"):
            check(name, getattr(self, name), Interval(int, 1, None))
        for name in ("seed", "val_tokens", "warmup_steps"):
            check(name, getattr(self, name), Interval(int, 0, None))
        if any(not isinstance(r, str) or not r for r in self.reuse):
            raise ValueError(f"reuse: expected run folder paths, got {list(self.reuse)!r}")
        if not self.pairs():
            raise ValueError(
                f"variants: no code is run beside one of its controls; expected pairs from {PAIRS}"
            )

    def arms(self) -> list[tuple[str, str, int]]:
        """Every (corpus, variant, seed) of the design, seed by seed."""
        designs = [(self.corpus, self.variants, self.n_seeds)]
        if self.second_corpus:
            designs.append((self.second_corpus, self.second_variants, self.second_seeds))
        out = []
        for s in range(max(n for _, _, n in designs)):
            for corpus, variants, n in designs:
                if s < n:
                    out += [(corpus, v, self.seed + s) for v in variants]
        return out

    def pairs(self) -> list[tuple[str, str]]:
        """The family: (corpus/code, corpus/control) for every pair of ``PAIRS`` run on a corpus."""
        designs = [(self.corpus, self.variants)]
        if self.second_corpus:
            designs.append((self.second_corpus, self.second_variants))
        return [
            (f"{corpus}/{a}", f"{corpus}/{b}")
            for corpus, variants in designs
            for a, b in PAIRS
            if a in variants and b in variants
        ]


QUICK = Config(
    variants=("theta_gamma", "sin_theta_gamma"),
    n_seeds=2,
    second_variants=("theta_gamma", "sin_theta_gamma"),
    second_seeds=2,
    steps=3,
    batch_size=4,
    warmup_steps=1,
    eval_interval=3,
    eval_batches=2,
    model=Sizes(n_layer=1, n_head=2, n_embd=16, block_size=24),
    val_tokens=2000,
)


def variant_model(sizes: Sizes, variant: str) -> dict[str, Any]:
    """The model config of one variant: the shared sizes with its parts and controls."""
    parts, controls = VARIANTS[variant]
    return {**dataclasses.asdict(sizes), "parts": parts, "controls": controls}


def jobs(cfg: Config, folder: RunFolder | Path) -> list[Job]:
    """Every (corpus, variant, seed) as a job of the ablation's trainer, into
    ``folder/<corpus>/<variant>-seed<s>`` (a run folder ``engram lm sample|eval`` reads)."""
    from engram.data.text import corpus_path
    from engram.lm.experiments.ablation import TrainJob, train_variant

    root = folder.path if isinstance(folder, RunFolder) else Path(folder)
    out = []
    for corpus, variant, seed in cfg.arms():
        job = TrainJob(
            variant=variant,
            model=variant_model(cfg.model, variant),
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            min_lr=cfg.min_lr,
            warmup_steps=cfg.warmup_steps,
            eval_interval=cfg.eval_interval,
            eval_batches=cfg.eval_batches,
            data=str(corpus_path(corpus)),
            folder=str(root / f"{corpus}/{variant}-seed{seed}"),
            val_tokens=cfg.val_tokens,
            sample_tokens=0,
            sample_prompt="",
            memory_tokens=0,
            memory_lambda=0.0,
            memory_k=1,
            device=cfg.device,
        )
        out.append(Job.of(train_variant, job, seed))
    return out


def reused(cfg: Config) -> dict[int, tuple[Job, str]]:
    """Arm index -> (its job as it ran, the earlier run folder) for every arm of the design
    whose job is in the cache of a folder of ``cfg.reuse`` (the first one holding it)."""
    from engram.runs.jobs import cache_path

    found: dict[int, tuple[Job, str]] = {}
    for earlier in cfg.reuse:
        if not (Path(earlier) / "jobs").is_dir():
            raise ValueError(f"reuse: expected a run folder with a jobs/ cache, got {earlier!r}")
        for i, job in enumerate(jobs(cfg, Path(earlier))):
            if i not in found and cache_path(earlier, job).is_file():
                found[i] = (job, earlier)
    return found


def share_corpora(arms: list[tuple[str, str, int]], folder: RunFolder) -> None:
    """Tokenise each corpus once, in ``folder/corpora/<name>``, and hard-link it into the folder
    of every (corpus, variant, seed) of ``arms`` not yet holding one: ``train`` then opens it
    instead of tokenising the text again (a job whose folder lacks it prepares the same arrays
    itself)."""
    import os
    import shutil

    from engram.data.text import TextCorpus, corpus_path

    prepared: dict[str, Path] = {}
    for corpus, variant, seed in arms:
        target = Path(folder.file(f"{corpus}/{variant}-seed{seed}")) / "corpus"
        if (target / "corpus.json").is_file():
            continue
        if corpus not in prepared:
            prepared[corpus] = Path(folder.file(f"corpora/{corpus}"))
            if not (prepared[corpus] / "corpus.json").is_file():
                TextCorpus.prepare(corpus_path(corpus), prepared[corpus])
        target.mkdir(parents=True, exist_ok=True)
        names = sorted(p.name for p in prepared[corpus].iterdir() if p.name != "corpus.json")
        for name in [*names, "corpus.json"]:  # corpus.json last: it marks the folder complete
            (target / name).unlink(missing_ok=True)  # left by an interrupted run
            try:
                os.link(prepared[corpus] / name, target / name)
            except OSError:  # a file system without hard links
                shutil.copyfile(prepared[corpus] / name, target / name)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (corpus, variant): parameters, seeds, mean loss with a 95% t interval over seeds."""
    from engram.stats import mean_ci

    table = []
    for corpus, variant in dict.fromkeys((r["corpus"], r["variant"]) for r in rows):
        mine = [r for r in rows if (r["corpus"], r["variant"]) == (corpus, variant)]
        losses = np.array([r["val_loss"] for r in mine])
        ci = mean_ci(losses) if len(losses) > 1 else None
        table.append(
            {
                "corpus": corpus,
                "variant": variant,
                "params": mine[0]["params"],
                "seeds": len(mine),
                "val_loss": float(losses.mean()),
                "ci_low": ci.low if ci else float("nan"),
                "ci_high": ci.high if ci else float("nan"),
            }
        )
    return table


def verdict(row: dict[str, Any], code: str) -> str:
    """A code against its control, lower loss better, after the one Holm correction; for the
    plain GPT (``code`` "baseline"), whether the control changes its loss."""
    if code == "baseline":
        if not row["significant"]:
            return "the control does not change the plain GPT's loss detectably"
        return "the control lowers the plain GPT's loss" if row["diff"] > 0 else (
            "the control raises the plain GPT's loss")
    if not row["significant"]:
        return "not better than its control (no detectable difference)"
    return "better than its control" if row["diff"] < 0 else "worse than its control"


def comparisons(rows: list[dict[str, Any]], cfg: Config) -> list[dict[str, Any]]:
    """The family's battery rows (paired by seed, one Holm over all), with corpus, code and
    control named; empty where an arm has fewer than two seeds."""
    samples: dict[str, list[float]] = {}
    for r in sorted(rows, key=lambda r: r["seed"]):
        samples.setdefault(f"{r['corpus']}/{r['variant']}", []).append(r["val_loss"])
    pairs = cfg.pairs()
    if any(len(samples[a]) < 2 or len(samples[b]) < 2 for a, b in pairs):
        return []
    out = []
    for c in compare(samples, pairs, paired=True):
        row = c.row()
        corpus, code = row["a"].split("/")
        control = row["b"].split("/")[1]
        out.append({"corpus": corpus, "code": code, "control": control, **row,
                    "verdict": verdict(row, code)})
    return out


def controls_table(family: list[dict[str, Any]]) -> str:
    """The one-screen table: code | its control | Δ loss [95% CI] | Holm p | verdict."""
    lines = [
        "| corpus | code | its control | Δ loss, nats/char [95% CI] | Holm p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in family:
        lines.append(
            f"| {r['corpus']} | {r['code']} | {r['control']} | {r['diff']:+.3f} "
            f"[{r['diff_low']:+.3f}, {r['diff_high']:+.3f}] | {r['p_holm']:.3g} | {r['verdict']} |"
        )
    return "\n".join(lines)


def _figure(table: list[dict[str, Any]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(dict.fromkeys(t["corpus"] for t in table))
    fig, axes = plt.subplots(1, len(corpora), figsize=(5.5 * len(corpora), 4), squeeze=False)
    for ax, corpus in zip(axes[0], corpora, strict=True):
        mine = [t for t in table if t["corpus"] == corpus]
        y = np.array([t["val_loss"] for t in mine])
        low = np.nan_to_num(y - np.array([t["ci_low"] for t in mine]))
        high = np.nan_to_num(np.array([t["ci_high"] for t in mine]) - y)
        ax.errorbar(range(len(mine)), y, yerr=[low, high], fmt="o", capsize=3)
        ax.set_xticks(range(len(mine)), [t["variant"] for t in mine], rotation=45, ha="right")
        ax.set_title(corpus)
        ax.set_ylabel("validation loss (nats/char), mean and 95% CI over seeds")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _claims(cfg: Config, family: list[dict[str, Any]], table: list[dict[str, Any]]) -> list[Claim]:
    sizes = cfg.model
    conditions = (
        f"{cfg.steps} steps, {sizes.n_layer}×{sizes.n_embd} block {sizes.block_size}, batch "
        f"{cfg.batch_size}; paired by seed, Holm over all {len(family)} comparisons"
    )
    by_arm = {(t["corpus"], t["variant"]): t for t in table}
    claims = []
    for r in family:
        a, b = by_arm[r["corpus"], r["code"]], by_arm[r["corpus"], r["control"]]
        claims.append(
            Claim(
                f"{r['code']} against {r['control']} ({r['corpus']}, {a['seeds']} seeds)",
                f"Δ {r['diff']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}] nats/char, "
                f"Holm p = {r['p_holm']:.3g}",
                "a loss other than the plain GPT's" if r["code"] == "baseline"
                else "lower loss than its generic control",
                r["verdict"],
                f"{conditions}; {a['val_loss']:.3f} vs {b['val_loss']:.3f} nats/char, "
                f"{a['params']:,} vs {b['params']:,} parameters",
                value=r["diff"],
            )
        )
    return claims


def run(cfg: Config, folder: RunFolder) -> Result:
    """Train every (corpus, variant, seed) through the job runner, compare each code with its
    controls (one Holm), and return the claims, tables and the loss figure."""
    arms, earlier = cfg.arms(), reused(cfg)
    todo = [i for i in range(len(arms)) if i not in earlier]
    share_corpora([arms[i] for i in todo], folder)
    mine = jobs(cfg, folder)
    results = dict(zip(todo, run_jobs([mine[i] for i in todo], folder.path,
                                      description="lm controls"), strict=True))
    for where in dict.fromkeys(w for _, w in earlier.values()):
        ids = [i for i, (_, w) in earlier.items() if w == where]
        results.update(zip(ids, run_jobs([earlier[i][0] for i in ids], where), strict=True))
    trained = [results[i] for i in range(len(arms))]
    rows = [
        {"corpus": corpus, **{k: v for k, v in r.items() if k != "curve"},
         "trained_in": earlier[i][1] if i in earlier else folder.path.as_posix()}
        for i, ((corpus, _, _), r) in enumerate(zip(arms, trained, strict=True))
    ]
    table = summarise(rows)
    family = comparisons(rows, cfg)
    folder.save_figure("losses.png", _figure(table))
    curves = [
        {"corpus": corpus, "variant": r["variant"], "seed": r["seed"], "step": s, "val_loss": v}
        for (corpus, _, _), r in zip(arms, trained, strict=True)
        for s, v in r["curve"]
    ]
    tables: dict[str, list[dict[str, Any]]] = {"variants": table, "runs": rows, "curves": curves}
    if family:
        tables["comparisons"] = family
    sections = [
        "## Controls\n\n" + (controls_table(family) if family else "(fewer than two seeds)"),
        "## Variants\n\n" + markdown_table(table),
    ]
    scored = "the whole validation split" if not cfg.val_tokens else f"{cfg.val_tokens} tokens"
    return Result(
        claims=tuple(_claims(cfg, family, table)),
        tables=tables,
        figures=("losses.png",),
        title="Controls: each hippocampal code against generic features of its width",
        intro=(
            f"{cfg.corpus}: {', '.join(cfg.variants)} × {cfg.n_seeds} seeds"
            + (
                f"; {cfg.second_corpus}: {', '.join(cfg.second_variants)} × "
                f"{cfg.second_seeds} seeds"
                if cfg.second_corpus
                else ""
            )
            + f". {cfg.steps} steps, batch {cfg.batch_size}, model "
            f"{dataclasses.asdict(cfg.model)}. Loss over {scored} of each corpus, nats per "
            "character; Δ = code − control, 95% paired t interval over seeds; one Holm "
            f"correction over the {len(family)} comparisons. (wikitext2-valid is WikiText-2's "
            "validation file used as a corpus of its own, split 90/10: not WikiText-2 perplexity.)"
            + (
                f" {len(earlier)} of the {len(arms)} runs are the same jobs read from "
                + ", ".join(f"`{w}`" for w in dict.fromkeys(w for _, w in earlier.values()))
                + " (column trained_in of runs.csv)."
                if earlier
                else ""
            )
        ),
        sections=tuple(sections),
    )
