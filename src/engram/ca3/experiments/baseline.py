"""Nearest-neighbour baseline: the same cues answered by a plain lookup over the stored patterns.

A lookup is the maximum-likelihood decoder for "which stored pattern was this a noisy copy
of", so on identification the attractor can at best tie it. Three tasks probe where the
attractor does something a lookup does not: (1) identification of random patterns as noise
and load grow; (2) prototypes — many stored exemplars of a few prototypes, a new noisy
exemplar as the cue, the prototype (never stored) as the answer wanted; (3) cues unlike
anything stored, where the CA1 gate should refuse — compared with a lookup that refuses below
a similarity threshold matched to the gate's acceptance of genuine cues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engram import codes
from engram.ca3 import AttractorMemory
from engram.ca3.experiments.measure import RECALL_OVERLAP, generator, one_thread, recall
from engram.ca3.experiments.summary import (
    caption,
    errorbars,
    figure,
    fmt,
    interval,
    select,
    summarise,
)
from engram.runs import Claim, Result, RunFolder, markdown_table


@dataclass(frozen=True)
class Config:
    n_units: int = 256
    loads: tuple[float, ...] = (0.05, 0.14, 0.25)
    flip_fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    n_prototypes: int = 3
    exemplars: tuple[int, ...] = (3, 10, 30, 60)
    prototype_flip: float = 0.25
    cue_flip: float = 0.1
    gate_load: float = 0.05
    gate_flip: float = 0.25
    max_iterations: int = 30
    n_seeds: int = 8
    seed: int = 0


QUICK = Config(n_units=96, loads=(0.05,), flip_fractions=(0.1, 0.3), exemplars=(3, 30), n_seeds=2)


def _identification(cfg: Config) -> list[dict[str, Any]]:
    rows = []
    for key, load in enumerate(cfg.loads):
        p = max(2, round(load * cfg.n_units))
        for s in range(cfg.n_seeds):
            rng = generator(cfg.seed, s, 1, key)
            patterns = codes.random_bipolar(p, cfg.n_units, rng)
            memory = AttractorMemory(cfg.n_units, max_iterations=cfg.max_iterations, seed=s)
            memory.store(patterns)
            for f in cfg.flip_fractions:
                cues = codes.flip_bits(patterns, round(f * cfg.n_units), rng)
                out = recall(memory, cues, np.arange(p), patterns).means()
                rows.append({"task": "identification", "alpha": p / cfg.n_units, "flip": f,
                             "seed": s, "attractor": out["recall"], "lookup": out["nn_recall"]})
    return rows


def _prototypes(cfg: Config) -> list[dict[str, Any]]:
    """Share of cues whose answer overlaps the cue's prototype ≥ 0.95: the attractor's final
    state against the stored exemplar the lookup returns."""
    rows = []
    n = cfg.n_units
    for key, per_prototype in enumerate(cfg.exemplars):
        for s in range(cfg.n_seeds):
            rng = generator(cfg.seed, s, 2, key)
            prototypes = codes.random_bipolar(cfg.n_prototypes, n, rng)
            owner = np.repeat(np.arange(cfg.n_prototypes), per_prototype)
            flips = rng.random((owner.size, n)) < cfg.prototype_flip
            stored = np.where(flips, -prototypes[owner], prototypes[owner]).astype(np.int8)
            fresh_owner = np.repeat(np.arange(cfg.n_prototypes), 20)
            fresh_flips = rng.random((fresh_owner.size, n)) < cfg.prototype_flip
            fresh = np.where(fresh_flips, -prototypes[fresh_owner], prototypes[fresh_owner])
            cues = codes.flip_bits(fresh.astype(np.int8), round(cfg.cue_flip * n), rng)
            memory = AttractorMemory(n, max_iterations=cfg.max_iterations, seed=s).store(stored)
            states = recall(memory, cues, np.zeros(len(cues), dtype=np.int64), stored).completion.states
            found = codes.overlap(cues, stored, "bipolar").argmax(1)
            attractor = codes.overlap(states, prototypes, "bipolar")[np.arange(len(cues)), fresh_owner]
            lookup = codes.overlap(stored[found], prototypes, "bipolar")[np.arange(len(cues)), fresh_owner]
            rows.append({"task": "prototype", "exemplars": per_prototype, "seed": s,
                         "attractor": float(np.mean(attractor >= RECALL_OVERLAP)),
                         "lookup": float(np.mean(lookup >= RECALL_OVERLAP)),
                         "attractor_overlap": float(attractor.mean()),
                         "lookup_overlap": float(lookup.mean())})
    return rows


def _gate(cfg: Config) -> list[dict[str, Any]]:
    """Genuine cues (stored patterns with ``gate_flip`` flipped) and novel random cues: the CA1
    gate's acceptance of each, against a lookup that accepts when the best cue overlap clears a
    threshold set to accept the same share of genuine cues as the gate."""
    rows = []
    n = cfg.n_units
    p = max(2, round(cfg.gate_load * n))
    for s in range(cfg.n_seeds):
        rng = generator(cfg.seed, s, 3)
        patterns = codes.random_bipolar(p, n, rng)
        memory = AttractorMemory(n, max_iterations=cfg.max_iterations, seed=s).store(patterns)
        genuine = codes.flip_bits(patterns, round(cfg.gate_flip * n), rng)
        novel = codes.random_bipolar(p, n, rng)
        g = recall(memory, genuine, np.arange(p), patterns)
        v = recall(memory, novel, np.zeros(p, dtype=np.int64), patterns)
        accept_genuine = float(g.completion.accepted.mean())
        g_best = codes.overlap(genuine, patterns, "bipolar").max(1)
        v_best = codes.overlap(novel, patterns, "bipolar").max(1)
        threshold = float(np.quantile(g_best, 1.0 - accept_genuine)) if accept_genuine > 0 else np.inf
        rows.append({"task": "gate", "seed": s, "threshold": threshold,
                     "attractor_genuine": accept_genuine,
                     "attractor_novel": float(v.completion.accepted.mean()),
                     "attractor_correct_genuine": float((g.completion.accepted & g.recalled).mean()),
                     "lookup_genuine": float(np.mean(g_best >= threshold)),
                     "lookup_novel": float(np.mean(v_best >= threshold)),
                     "lookup_novel_no_threshold": 1.0})
    return rows


def run(cfg: Config, run_folder: RunFolder) -> Result:
    with one_thread():
        ident, proto, gate = _identification(cfg), _prototypes(cfg), _gate(cfg)
    s_ident = summarise(ident, ("alpha", "flip"), ("attractor", "lookup"))
    s_proto = summarise(proto, ("exemplars",), ("attractor", "lookup", "attractor_overlap",
                                                "lookup_overlap"))
    s_gate = summarise(gate, ("task",), ("attractor_genuine", "attractor_novel",
                                         "lookup_genuine", "lookup_novel"))
    figures = _plot(cfg, s_ident, s_proto, run_folder)
    return Result(
        claims=_claims(cfg, ident, proto, gate),
        tables={"identification": ident, "prototypes": proto, "gate": gate,
                "summary_identification": s_ident, "summary_prototypes": s_proto},
        figures=figures,
        title="Attractor vs nearest-neighbour lookup",
        intro=f"N={cfg.n_units}, Hebbian, sync ≤ {cfg.max_iterations} updates, {cfg.n_seeds} "
        "seeds. Lookup = return the stored pattern with the largest overlap with the cue.",
        sections=("## Identification\n\n" + markdown_table(s_ident),
                  "## Prototypes\n\n" + markdown_table(s_proto),
                  "## Refusing novel cues\n\n" + markdown_table(s_gate)),
    )


def _claims(cfg: Config, ident, proto, gate) -> list[Claim]:
    worst = max(cfg.loads)
    noisy = max(cfg.flip_fractions)
    cells = select(ident, alpha=max(r["alpha"] for r in ident), flip=noisy)
    att, look = (interval([c[k] for c in cells], share=True) for k in ("attractor", "lookup"))
    many = max(cfg.exemplars)
    pc = select(proto, exemplars=many)
    p_att, p_look = (interval([c[k] for c in pc], share=True) for k in ("attractor", "lookup"))
    g_nov, l_nov, g_gen = (interval([r[k] for r in gate], share=True)
                           for k in ("attractor_novel", "lookup_novel", "attractor_genuine"))
    return [Claim(
        statement="identifying a stored pattern from a noisy cue: the attractor is no better "
        "than a lookup",
        source="decoding theory (a lookup is the maximum-likelihood decoder)",
        measured=f"recall: lookup {look.estimate:.0%}, attractor {att.estimate:.0%}",
        details=f"recall attractor {fmt(att, percent=True)} vs lookup {fmt(look, percent=True)}",
        target="lookup ≥ attractor",
        conditions=f"random ±1, α≈{worst}, {noisy:.0%} flipped, N={cfg.n_units}",
        verdict="holds: the lookup is as good or better" if look.estimate >= att.estimate else
        "does not hold: the attractor beat the lookup",
        value=att.estimate,
    ), Claim(
        statement="the attractor recovers a prototype it never stored from many exemplars; "
        "a lookup cannot",
        source="Hopfield 1982; McClelland & Rumelhart 1985",
        measured=f"attractor {p_att.estimate:.0%}, lookup {p_look.estimate:.0%}",
        details=f"answer within 0.95 of the prototype: attractor {fmt(p_att, percent=True)} vs "
        f"lookup {fmt(p_look, percent=True)}",
        target="attractor > lookup",
        conditions=f"{cfg.n_prototypes} prototypes × {many} exemplars ({cfg.prototype_flip:.0%} "
        f"flipped), new exemplar cue with {cfg.cue_flip:.0%} flipped",
        verdict="holds" if p_att.low > p_look.high else "does not hold at this size",
        value=p_att.estimate,
    ), Claim(
        statement="the CA1 gate refuses cues unlike anything stored",
        source="Engram design (CA1 comparator)",
        measured=f"novel cues accepted: {fmt(g_nov, percent=True)}",
        details=f"novel cues accepted: gate {fmt(g_nov, percent=True)} (genuine "
        f"{fmt(g_gen, percent=True)}); thresholded lookup at equal genuine acceptance "
        f"{fmt(l_nov, percent=True)}; plain lookup 100%",
        target="novel cues accepted ≤ 5%",
        conditions=f"α={cfg.gate_load}, genuine cues {cfg.gate_flip:.0%} flipped, novel = random",
        verdict="holds, but a thresholded lookup refuses as well" if g_nov.estimate <= 0.05
        and l_nov.estimate <= 0.05 else "holds" if g_nov.estimate <= 0.05 else "does not hold",
        value=g_nov.estimate,
    )]


def _plot(cfg: Config, s_ident, s_proto, run_folder: RunFolder) -> list[str]:
    fig, ax = figure(2)
    for i, alpha in enumerate(sorted({r["alpha"] for r in s_ident})):
        cells = select(s_ident, alpha=alpha)
        errorbars(ax[0], cells, "flip", "attractor", label=f"attractor α={alpha:.2f}", color=f"C{i}")
        errorbars(ax[0], cells, "flip", "lookup", label=f"lookup α={alpha:.2f}", color=f"C{i}",
                  linestyle=":")
    ax[0].set(xlabel="share of units flipped in the cue", ylabel="target recalled",
              title="identification")
    errorbars(ax[1], s_proto, "exemplars", "attractor", label="attractor")
    errorbars(ax[1], s_proto, "exemplars", "lookup", label="lookup", linestyle=":")
    ax[1].set(xlabel="stored exemplars per prototype", ylabel="answer ≥ 0.95 of prototype",
              title="prototype extraction", xscale="log")
    for a in ax:
        a.legend(fontsize=6)
    caption(fig, f"Attractor vs lookup, N={cfg.n_units}", cfg.n_seeds)
    run_folder.save_figure("baseline.png", fig, dpi=80)
    return ["baseline.png"]
