"""The recall pipeline: candidate search → pattern completion (→ pattern separation) → features.

Stages, each a function you can run alone:
  search      exact masked inner product of the cue with every unit-norm embedding (one BLAS
              GEMM), or a faiss IVF index above a configurable size; keeps the top C;
  complete    modern Hopfield retrieval over the C candidates (``engram.ca3.ModernHopfield``)
              with the known dimensions of the cue clamped between steps, so the unknown ones
              are filled in from the candidates the cue agrees with;
  separate    optional dentate-gyrus step: a fixed random expansion to a sparse k-WTA code,
              then ``engram.ca3.AttractorMemory(code="sparse")`` over the candidates' codes;
              its CA1-style gate may overrule the continuous winner when it accepts;
  features    what the CA1 gate (``engram.store.gate``) scores: the masked cosine of the
              winner, its margin over the runner-up, and the winner's attention weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engram.ca3 import AttractorMemory, ModernHopfield
from engram.codes import kwta
from engram.store import arguments


@dataclass(frozen=True)
class RecallConfig:
    """Settings of the recall pipeline.

    Args:
        candidates: C, how many nearest episodes the search passes to completion.
        beta: inverse temperature of the modern Hopfield step (on unit-norm patterns).
        completion_steps: Hopfield updates; 0 turns completion off (plain nearest neighbour).
        separation: run the dentate-gyrus pattern separation and sparse attractor stage.
        dg_units: size of the sparse expansion; dg_sparsity: its coding level; dg_threshold:
            the sparse attractor's own CA1 gate threshold (it overrules only when it accepts).
        threshold: the gate's confidence threshold (answers below it are refused).
        strength_weight: how much decayed strength lowers a candidate's rank (score · s^w).
        faiss_above: use a faiss IVF index when a space holds at least this many episodes
            and faiss is installed (None: always exact); faiss_nprobe: IVF lists per query.
        sketch_dim: when > 0, search in two stages: a random projection to this many
            dimensions shortlists ``sketch_shortlist`` rows, which are rescored exactly
            (approximate; 0, the default, scans every row exactly).
        min_calibration: episodes needed before the gate calibrates itself.
    """

    candidates: int = 32
    beta: float = 64.0
    completion_steps: int = 2
    separation: bool = False
    dg_units: int = 1024
    dg_sparsity: float = 0.05
    dg_threshold: float = 0.7
    threshold: float = 0.5
    strength_weight: float = 0.25
    faiss_above: int | None = 200_000
    faiss_nprobe: int = 32
    sketch_dim: int = 0
    sketch_shortlist: int = 512
    min_calibration: int = 64

    def __post_init__(self) -> None:
        integer, real = arguments.integer, arguments.real
        integer(self.candidates, "candidates", low=1)
        real(self.beta, "beta", low=0.0, low_open=True)
        integer(self.completion_steps, "completion_steps", low=0)
        arguments.flag(self.separation, "separation")
        integer(self.dg_units, "dg_units", low=16)
        real(self.dg_sparsity, "dg_sparsity", low=0.0, high=0.5, low_open=True, high_open=True)
        real(self.dg_threshold, "dg_threshold", low=0.0, high=1.0)
        real(self.threshold, "threshold", low=0.0, high=1.0)
        real(self.strength_weight, "strength_weight", low=0.0)
        if self.faiss_above is not None:
            integer(self.faiss_above, "faiss_above", low=1)
        integer(self.faiss_nprobe, "faiss_nprobe", low=1)
        integer(self.sketch_dim, "sketch_dim", low=0)
        integer(self.sketch_shortlist, "sketch_shortlist", low=self.candidates)
        integer(self.min_calibration, "min_calibration", low=1)


@dataclass
class Stages:
    """Per-cue outputs of the pipeline for a batch of B cues and C candidates."""

    rows: np.ndarray  # (B, C) index rows of the candidates, search order; -1 pads
    search_scores: np.ndarray  # (B, C) masked inner products from the search
    masked_cos: np.ndarray  # (B, C) cosine of cue and candidate over the known dimensions
    attention: np.ndarray  # (B, C) final Hopfield attention (search order)
    states: np.ndarray  # (B, d) completed cues, unit norm
    winner: np.ndarray  # (B,) position in the candidate list of the chosen episode
    decided_by: list[str]  # "search", "completion" or "separation" for each cue
    separation_confidence: np.ndarray  # (B,) sparse attractor gate confidence, NaN if unused

    def features(self) -> np.ndarray:
        """(B, 3) gate features: winner's masked cosine, margin over the best other, attention."""
        b = np.arange(len(self.winner))
        s1 = self.masked_cos[b, self.winner]
        others = self.masked_cos.copy()
        others[b, self.winner] = -np.inf
        others[self.rows < 0] = -np.inf
        s2 = others.max(1)
        margin = np.where(np.isfinite(s2), s1 - s2, 1.0)
        return np.stack([s1, margin, self.attention[b, self.winner]], axis=1).astype(np.float64)


def masked_cues(cues: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Cues with unknown dimensions zeroed and scaled to unit norm over the known ones."""
    masked = np.where(known, cues, 0.0).astype(np.float32)
    norms = np.linalg.norm(masked, axis=1, keepdims=True)
    return masked / np.maximum(norms, 1e-12)


def search(
    unit: np.ndarray,
    queries: np.ndarray,
    c: int,
    dead: np.ndarray | None = None,
    exclude_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-C by inner product: (rows (B, C), scores (B, C)), best first, -1 pads.

    ``dead`` (n,) masks rows for every cue (deleted, forgotten); ``exclude_rows`` (B,) hides
    one row per cue (held-out sources during calibration; -1 hides none).
    """
    n = unit.shape[0]
    scores = queries @ unit.T
    if dead is not None:
        scores[:, dead] = -np.inf
    if exclude_rows is not None:
        hide = exclude_rows >= 0
        scores[np.flatnonzero(hide), exclude_rows[hide]] = -np.inf
    c_eff = min(c, n)
    if c_eff < n:
        top = np.argpartition(-scores, c_eff - 1, axis=1)[:, :c_eff]
    else:
        top = np.broadcast_to(np.arange(n), (len(queries), n)).copy()
    top_scores = np.take_along_axis(scores, top, 1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    rows = np.take_along_axis(top, order, 1)
    top_scores = np.take_along_axis(top_scores, order, 1)
    rows = np.where(np.isfinite(top_scores), rows, -1)
    return _pad(rows, top_scores, c)


def _pad(rows: np.ndarray, scores: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    if rows.shape[1] < c:
        extra = c - rows.shape[1]
        rows = np.pad(rows, ((0, 0), (0, extra)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, extra)), constant_values=-np.inf)
    return rows, scores


class Separator:
    """Dentate-gyrus-style separation: a fixed random expansion d → m, then k-WTA."""

    def __init__(self, dim: int, units: int, sparsity: float, seed: int):
        rng = np.random.default_rng(seed)
        self.projection = rng.standard_normal((units, dim)).astype(np.float32) / np.sqrt(dim)
        self.units = units
        self.sparsity = sparsity
        self.k = max(1, round(sparsity * units))

    def code(self, x: np.ndarray) -> np.ndarray:
        return kwta(np.atleast_2d(x) @ self.projection.T, self.k).astype(np.float32)

    def choose(self, candidates: np.ndarray, state: np.ndarray, threshold: float) -> tuple[int, float, bool]:
        """(nearest candidate, sparse gate confidence, accepted) for one completed cue."""
        memory = AttractorMemory(self.units, code="sparse", sparsity=self.sparsity, k=self.k,
                                 threshold=threshold)
        memory.store(self.code(candidates))
        result = memory.complete(self.code(state)[0])
        return result.nearest, result.confidence, result.accepted


def run(
    unit: np.ndarray,
    cues: np.ndarray,
    known: np.ndarray,
    config: RecallConfig,
    hopfield: ModernHopfield,
    separator: Separator | None = None,
    candidates: tuple[np.ndarray, np.ndarray] | None = None,
    dead: np.ndarray | None = None,
    exclude_rows: np.ndarray | None = None,
) -> Stages:
    """Run search → completion (→ separation) for cues (B, d) with known masks (B, d).

    ``candidates`` (rows, scores) skips the exact search (the faiss path supplies them).
    """
    queries = masked_cues(cues, known)
    rows, scores = candidates if candidates is not None else search(
        unit, queries, config.candidates, dead, exclude_rows
    )
    valid = rows >= 0
    patterns = unit[np.where(valid, rows, 0)] * valid[..., None]  # (B, C, d)
    knownf = known.astype(np.float32)
    masked_pat = patterns * knownf[:, None, :]
    pat_norms = np.linalg.norm(masked_pat, axis=2)
    masked_cos = np.einsum("bcd,bd->bc", masked_pat, queries) / np.maximum(pat_norms, 1e-12)
    masked_cos = np.where(valid, masked_cos, -np.inf)

    pat_t = torch.from_numpy(np.ascontiguousarray(patterns))
    cue_t = torch.from_numpy(queries)[:, None, :]
    known_t = torch.from_numpy(known)[:, None, :]
    logits_mask = torch.from_numpy(np.where(valid, 0.0, -np.inf).astype(np.float32))
    state = cue_t
    with torch.no_grad():
        for _ in range(config.completion_steps):
            # Padded candidates are zero vectors; push them out of the softmax explicitly.
            state = hopfield(state, pat_t, steps=1) if valid.all() else _masked_step(
                hopfield, state, pat_t, logits_mask
            )
            scale = state.masked_fill(~known_t, 0.0).norm(dim=-1, keepdim=True).clamp_min(1e-12)
            state = torch.where(known_t, cue_t * scale, state)
        logits = hopfield.beta * (state @ pat_t.transpose(-1, -2))[:, 0, :] + logits_mask
        attention = torch.softmax(logits, dim=-1).numpy()
    winner = attention.argmax(1) if config.completion_steps else np.zeros(len(cues), dtype=np.int64)
    # Without completion the lookup's answer is the completion: the nearest episode itself.
    states = state[:, 0, :].numpy() if config.completion_steps else patterns[np.arange(len(cues)), winner]
    states = states / np.maximum(np.linalg.norm(states, axis=1, keepdims=True), 1e-12)

    decided = ["completion" if w != 0 else "search" for w in winner]
    sep_conf = np.full(len(cues), np.nan)
    if separator is not None:
        for i in range(len(cues)):
            count = int(valid[i].sum())
            if count < 2:
                continue
            nearest, confidence, accepted = separator.choose(
                patterns[i, :count], states[i], config.dg_threshold
            )
            sep_conf[i] = confidence
            if accepted and nearest != winner[i]:
                winner[i] = nearest
                decided[i] = "separation"
    return Stages(rows, scores, masked_cos, attention, states, winner, decided, sep_conf)


def _masked_step(
    hopfield: ModernHopfield, state: torch.Tensor, patterns: torch.Tensor, logits_mask: torch.Tensor
) -> torch.Tensor:
    """One Hopfield update ξ ← Xᵀ softmax(β X ξ) that ignores padded (absent) candidates."""
    logits = hopfield.beta * (state @ patterns.transpose(-1, -2)) + logits_mask[:, None, :]
    return torch.softmax(logits, dim=-1) @ patterns
