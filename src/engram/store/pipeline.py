"""The recall pipeline: dense + lexical scores → graph completion → candidates → Hopfield
completion (→ pattern separation) → gate features.

Stages, each switchable in ``RecallConfig`` (the benchmark ablates each):
  dense       masked inner product of the cue with every unit-norm embedding (one BLAS GEMM),
              or, above configurable sizes, an HNSW graph / fp16 scan / random sketch; a fused
              score in a large space is computed over a shortlist of rows (``engram.store.narrow``);
  lexical     BM25 of the cue's words against every episode's text (``engram.store.lexical``),
              divided by the score a perfect match would get, so it lies in [0, 1];
              fused additively with the dense score, plus a bonus for episodes whose speaker
              the cue names (the space knows its speakers from the stored ``who`` values);
  graph       completion over the episode graph: each episode also receives a share of the
              best score among its neighbours (the turns before and after it in its session,
              and the episodes sleep linked to it), so a cue that finds one turn of an
              exchange brings the turns it belongs with;
  completion  modern Hopfield retrieval over the top C candidates (``engram.ca3``) with the
              known dimensions of the cue clamped; the completed cue replaces the cue in the
              candidates' dense scores (for a partial vector cue it fills in the rest);
  separation  optional dentate-gyrus step: a sparse k-WTA code and a sparse attractor over
              the candidates; its CA1-style gate may overrule the winner when it accepts;
  features    what the CA1 gate (``engram.store.gate``) compares: how well the winner matches
              the cue (dense and lexical), its margin over the rest, and whether the cue's
              explicit parts (a named speaker, its words) agree with what is stored.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from scipy import sparse

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
        threshold: the gate's confidence threshold (answers below it are refused); None: the
            threshold the gate was fitted with (0.5 for the prior).
        strength_weight: how much decayed strength lowers a candidate's rank (score · s^w).
        ann_above: search an HNSW graph (``engram.store.ann``, faiss) when a space holds at
            least this many live episodes and faiss is installed (None: always exact); its
            shortlist is rescored exactly. Cues whose score is the dense cosine alone (a vector
            cue, or a text cue whose words no episode holds, in a space without sessions or
            links) take their candidates from it; a fused score takes its dense shortlist from it
            (see ``shortlist_above``). ann_m: the graph's links per node;
            ann_ef: candidates the graph search keeps (more: higher recall, slower);
            ann_shortlist: rows it returns for exact rescoring.
        half_above: from this many live episodes (and with faiss installed), the exact scan reads
            an fp16 copy of the embeddings first and rescores its shortlist in float32, widening
            the shortlist until no row outside it can beat the candidates (same answers as the
            float32 scan; None: always float32).
        shortlist_above: from this many live episodes, a fused score (a text cue) is computed over a
            shortlist of each cue's rows (``engram.store.narrow``), each scored exactly: its
            ``shortlist_dense`` best rows by the dense cosine (the HNSW graph's from ``ann_above``
            on, an exact scan below), the ``shortlist_lexical`` best by BM25 (the cue's and its
            speaker-blind form's), and the graph neighbours of the best of each; None: every row,
            always (LoCoMo, forced to the shortlist: the same recall and refusal figures).
        sketch_dim: when > 0, search in two stages: a random projection to this many
            dimensions shortlists ``sketch_shortlist`` rows, which are rescored exactly
            (approximate; 0, the default, scans every row exactly).
        min_calibration: episodes needed before the gate calibrates itself (vector spaces only;
            a text space uses a gate fitted on labelled questions, see ``engram.store.gate``).
        dense, lexical, graph, completion, gate: switch each stage (``completion=False`` is the
            same as ``completion_steps=0``; ``gate=False`` accepts every answer).
        lexical_weight: weight of the [0, 1] BM25 score beside the dense cosine.
        speaker_weight: bonus for episodes whose speaker the cue names.
        graph_weight: share of the best neighbour's score an episode receives.
        graph_links: the kinds of sleep's links the graph stage follows (LoCoMo: "similar"
            links between look-alike turns lowered recall@10, entity links raised it).
        blind_speakers: judge who told the best matches (the speaker-agreement features) from
            the cue with the speakers it names left out (``MemoryStore.blind_text``; LoCoMo: the
            name pulls the match towards its own speaker's turns and hides an adversarial
            question's mismatch).
        embed_speaker: embed "who: text" instead of the text when the store embeds an episode.
        strengthen_on_recall: an accepted recall strengthens its winner (off: recall is
            read-only and rankings never drift with query history).
    """

    candidates: int = 32
    beta: float = 64.0
    completion_steps: int = 2
    separation: bool = False
    dg_units: int = 1024
    dg_sparsity: float = 0.05
    dg_threshold: float = 0.7
    threshold: float | None = None
    strength_weight: float = 0.25
    ann_above: int | None = 10_000
    ann_m: int = 32
    ann_ef: int = 96
    ann_shortlist: int = 64
    half_above: int | None = 4096
    shortlist_above: int | None = 4096
    shortlist_dense: int = 64
    shortlist_lexical: int = 64
    sketch_dim: int = 0
    sketch_shortlist: int = 512
    min_calibration: int = 64
    dense: bool = True
    lexical: bool = True
    graph: bool = True
    completion: bool = True
    gate: bool = True
    lexical_weight: float = 1.6
    speaker_weight: float = 0.8
    graph_weight: float = 0.4
    graph_links: tuple[str, ...] = ("temporal", "entity")
    blind_speakers: bool = True
    embed_speaker: bool = True
    strengthen_on_recall: bool = False

    def __post_init__(self) -> None:
        integer, real = arguments.integer, arguments.real
        integer(self.candidates, "candidates", low=1)
        real(self.beta, "beta", low=0.0, low_open=True)
        integer(self.completion_steps, "completion_steps", low=0)
        arguments.flag(self.separation, "separation")
        integer(self.dg_units, "dg_units", low=16)
        real(self.dg_sparsity, "dg_sparsity", low=0.0, high=0.5, low_open=True, high_open=True)
        real(self.dg_threshold, "dg_threshold", low=0.0, high=1.0)
        if self.threshold is not None:
            real(self.threshold, "threshold", low=0.0, high=1.0)
        real(self.strength_weight, "strength_weight", low=0.0)
        for name in ("ann_above", "half_above", "shortlist_above"):
            if getattr(self, name) is not None:
                integer(getattr(self, name), name, low=1)
        integer(self.ann_m, "ann_m", low=4, high=256)
        integer(self.ann_shortlist, "ann_shortlist", low=self.candidates)
        integer(self.ann_ef, "ann_ef", low=self.ann_shortlist)
        integer(self.shortlist_dense, "shortlist_dense", low=self.candidates)
        integer(self.shortlist_lexical, "shortlist_lexical", low=1)
        integer(self.sketch_dim, "sketch_dim", low=0)
        integer(self.sketch_shortlist, "sketch_shortlist", low=self.candidates)
        integer(self.min_calibration, "min_calibration", low=1)
        for name in ("dense", "lexical", "graph", "completion", "gate", "blind_speakers", "embed_speaker",
                     "strengthen_on_recall"):
            arguments.flag(getattr(self, name), name)
        for name in ("lexical_weight", "speaker_weight", "graph_weight"):
            real(getattr(self, name), name, low=0.0)
        if not isinstance(self.graph_links, tuple) or not all(isinstance(k, str) for k in self.graph_links):
            raise TypeError(f"graph_links: expected a tuple of link kinds, got {self.graph_links!r}")


@dataclass
class Stages:
    """Per-cue outputs of the pipeline for a batch of B cues and C candidates (search order)."""

    rows: np.ndarray  # (B, C) index rows of the candidates, best fused score first; -1 pads
    search_scores: np.ndarray  # (B, C) fused scores before Hopfield completion
    masked_cos: np.ndarray  # (B, C) cosine of cue and candidate over the known dimensions
    attention: np.ndarray  # (B, C) final Hopfield attention
    states: np.ndarray  # (B, d) completed cues, unit norm
    winner: np.ndarray  # (B,) position in the candidate list of the chosen episode
    decided_by: list[str]  # "search", "completion" or "separation" for each cue
    separation_confidence: np.ndarray  # (B,) sparse attractor gate confidence, NaN if unused
    scores: np.ndarray  # (B, C) final rank scores (after completion)
    lexical: np.ndarray  # (B, C) BM25 share of each candidate
    named: np.ndarray  # (B, C) the candidate's speaker is one the cue names
    # Judged without the speaker bonus, over every row: how far the best episode by a named
    # speaker trails the best episode by anyone (≤ 0), and the named speakers' share of the
    # five best. Category-5 LoCoMo questions give one speaker what the other said: the
    # memory's own best match then belongs to the other speaker.
    speaker_gap: np.ndarray  # (B,)
    speaker_share: np.ndarray  # (B,)
    # Who did it, as the best matches tell it: a speaker tells their own news in the first
    # person ("I signed with…") and the other answers in the second ("congrats on your…").
    # Each of the twenty best rows (without the bonus) supports the named speaker (+1) or the
    # other (−1) by its speaker and person; rank-weighted mean, 0 when nobody is named.
    speaker_perspective: np.ndarray  # (B,)
    # The best first-person row of a named speaker against the best first-person row of anyone
    # else (clipped to [−1, 1]; 0 when nobody is named).
    speaker_told_gap: np.ndarray  # (B,)


@dataclass(frozen=True)
class CueParts:
    """What recall knows of each cue besides its vector: lexical term ids and named speakers."""

    terms: list[list[int]]  # per cue: BM25 term ids (empty: no text)
    speakers: list[list[int]]  # per cue: speaker codes the cue names
    coverage: np.ndarray  # (B,) share of the cue's words that occur anywhere in the space
    unknown_names: np.ndarray  # (B,) names in the cue that the space has never seen (count)
    # The cue with the speakers it names left out ("what did someone research?"; None: it names
    # nobody), and its lexical terms: the speaker-agreement features judge who told the best
    # matches from this blind cue, since the name itself pulls the match towards its speaker.
    blind_texts: list[str | None]
    blind_terms: list[list[int]]

    @classmethod
    def none(cls, b: int) -> CueParts:
        return cls([[] for _ in range(b)], [[] for _ in range(b)], np.ones(b), np.zeros(b),
                   [None] * b, [[] for _ in range(b)])


FEATURES = ("masked_cosine", "margin", "attention", "lexical", "coverage", "unknown_names",
            "speaker_named", "speaker_share", "speaker_gap", "speaker_perspective", "speaker_told_gap",
            "strangers_only")


def features(stages: Stages, parts: CueParts) -> np.ndarray:
    """(B, len(FEATURES)) gate features of each cue's answer (see the module docstring)."""
    b = np.arange(len(stages.winner))
    w = stages.winner
    valid = stages.rows >= 0
    others = np.where(valid, stages.scores, -np.inf)
    others[b, w] = -np.inf
    best_other = others.max(1)
    finite = np.isfinite(best_other)
    margin = np.where(finite, stages.scores[b, w] - np.where(finite, best_other, 0.0), 1.0)
    named_any = [len(s) > 0 for s in parts.speakers]
    out = np.empty((len(w), len(FEATURES)))
    for column, value in enumerate((
        stages.masked_cos[b, w], margin, stages.attention[b, w], stages.lexical[b, w],
        parts.coverage, parts.unknown_names, named_any, stages.speaker_share, stages.speaker_gap,
        stages.speaker_perspective, stages.speaker_told_gap,
        # The cue names someone, and nobody this space knows: about another memory, most likely.
        (parts.unknown_names > 0) & ~np.asarray(named_any, dtype=bool),
    )):
        out[:, column] = value
    return out


def masked_cues(cues: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Cues with unknown dimensions zeroed and scaled to unit norm over the known ones."""
    masked = np.where(known, cues, 0.0).astype(np.float32, copy=False)
    norms = np.sqrt(np.add.reduce(masked * masked, axis=1, keepdims=True))  # np.linalg.norm's formula
    return masked / np.maximum(norms, 1e-12)


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
        return result.nearest, result.overlap_score, result.accepted


@dataclass(frozen=True)
class Graph:
    """The episode graph as arrays: session neighbours and sleep's links of each row."""

    prev: np.ndarray  # (n,) the row before in the same session, -1: none
    next: np.ndarray  # (n,) the row after, -1: none
    links: sparse.csr_matrix | None  # (n, n) link weights (None: no links)
    degree: np.ndarray | None  # (n,) what a row's linked score is divided by: max(1, its link weights)


@dataclass(frozen=True)
class SpeakerGroups:
    """Rows grouped by (speaker, first person), so the per-speaker maxima of a score over every
    row take one gather and one ``reduceat`` instead of a masked pass per speaker."""

    order: np.ndarray  # (n,) rows sorted by group
    starts: np.ndarray  # (G,) where each (non-empty) group starts in ``order``
    first_row: np.ndarray  # (G,) one row of each group (``order[starts]``)
    first: np.ndarray  # (G,) the group's rows are first-person texts


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
    lexical: np.ndarray | None = None,
    named: np.ndarray | None = None,
    graph: Graph | None = None,
    speakers: SpeakerGroups | None = None,
    person: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    blind: np.ndarray | None = None,
    blind_lexical: np.ndarray | None = None,
) -> Stages:
    """Run the stages for cues (B, d) with known masks (B, d) over the n rows of ``unit``.

    ``candidates`` (rows, scores) replaces the exact dense scan (the faiss / sketch paths);
    ``dead`` (n,) or (B, n) hides rows (deleted, forgotten, filtered out); ``exclude_rows`` (B,)
    hides one row per cue; ``lexical`` (B, n) is the BM25 share, ``named`` (B, n) marks rows
    whose speaker the cue names (``speakers`` groups the rows by speaker for the agreement
    features); ``graph`` holds the session neighbours and links; ``person`` (n,) is +1 for a
    first-person text, −1 for a second-person one, 0 otherwise; ``queries``: the cues' unit
    masked form (``masked_cues``) when the caller already has it. ``blind`` (B, d) unit cues with
    the named speakers left out and ``blind_lexical`` their BM25 share: the speaker-agreement
    features are judged from these when given (rows of cues that name nobody are not read).
    """
    queries = masked_cues(cues, known) if queries is None else queries
    b, n = len(cues), unit.shape[0]
    use_lexical = config.lexical and lexical is not None
    use_graph = config.graph and graph is not None
    if (candidates is not None and config.dense and not use_lexical and named is None and not use_graph
            and exclude_rows is None):
        # The score is the dense cosine alone: the shortlist's exact scores are the candidates.
        rows, search_scores = _top_of(*candidates, config.candidates, dead)
        return _candidate_stages(unit, queries, known, config, hopfield, separator, rows, search_scores,
                                 np.where(rows >= 0, search_scores, 0.0), None, None, b)
    if candidates is not None:
        # Rows the approximate search did not return count as far (the worst returned score).
        floor = np.where(np.isfinite(candidates[1]), candidates[1], np.inf).min(1, keepdims=True)
        dense = np.broadcast_to(np.where(np.isfinite(floor), floor, -1.0), (b, n)).astype(np.float32)
        rows_c = np.maximum(candidates[0], 0)
        np.put_along_axis(dense, rows_c, np.where(candidates[0] >= 0, candidates[1], dense[0, 0]), 1)
    else:
        dense = (unit @ queries.T).T  # one pass over the rows: the memory-bound cost of recall
    blocked = dead
    if exclude_rows is not None:
        blocked = np.zeros((b, n), dtype=bool) if dead is None else np.broadcast_to(dead, (b, n)).copy()
        hide = exclude_rows >= 0
        blocked[np.flatnonzero(hide), exclude_rows[hide]] = True
    plain = _fused(dense, lexical if use_lexical else None, config, blocked)
    score = plain if named is None else plain + named * np.float32(config.speaker_weight)
    if named is not None and blind is not None:
        # Who told the best matches, judged without the name pulling them towards its speaker.
        # A second pass over the rows (one matrix-vector product each beats a two-column product
        # in OpenBLAS: 8.6 ms against 17.1 ms for 10,000 × 384 on the loaded development machine).
        judged = _fused((unit @ blind.T).T, blind_lexical if use_lexical else None, config, blocked)
    else:
        judged = plain
    if use_graph and named is not None:
        # The same completion for the score with and without the speaker bonus, in one pass.
        rounds = [score, plain] if judged is plain else [score, judged]
        both = _with_neighbours(np.concatenate(rounds), graph, config.graph_weight)
        score, judged = both[:b], both[b:]
    elif use_graph:
        score = _with_neighbours(score, graph, config.graph_weight)
    if named is not None:
        if speakers is None:
            raise ValueError("speakers: the rows' speaker groups are needed with named=")
        agreement = _speaker_agreement(judged, named, person, speakers)
    else:
        agreement = np.zeros(b), np.ones(b), np.zeros(b), np.zeros(b)
    rows, search_scores = _top(score, config.candidates)
    safe = np.maximum(rows, 0)
    at = np.arange(b)[:, None]
    stages = _candidate_stages(unit, queries, known, config, hopfield, separator, rows, search_scores,
                               dense[at, safe], lexical, named, b)
    stages.speaker_gap, stages.speaker_share, stages.speaker_perspective, stages.speaker_told_gap = agreement
    return stages


def _fused(dense: np.ndarray, lexical: np.ndarray | None, config: RecallConfig,
           blocked: np.ndarray | None) -> np.ndarray:
    """(B, n) dense cosine plus the weighted BM25 share (each as switched), blocked rows −inf."""
    if lexical is not None:
        plain = lexical * np.float32(config.lexical_weight)
        if config.dense:
            plain += dense
    else:
        plain = dense if config.dense else np.zeros_like(dense)
    return plain if blocked is None else np.where(blocked, -np.inf, plain)


def _candidate_stages(unit: np.ndarray, queries: np.ndarray, known: np.ndarray, config: RecallConfig,
                      hopfield: ModernHopfield, separator: Separator | None, rows: np.ndarray,
                      search_scores: np.ndarray, dense_c: np.ndarray, lexical: np.ndarray | None,
                      named: np.ndarray | None, b: int) -> Stages:
    """The stages after the search, over the C candidates of each cue (``dense_c``: their dense
    scores); the speaker-agreement fields are left at their no-speaker values."""
    valid = rows >= 0
    safe = np.where(valid, rows, 0)
    at = np.arange(b)[:, None]
    patterns = unit[safe] * valid[..., None]  # (B, C, d)
    full = bool(known.all())
    dots = np.einsum("bcd,bd->bc", patterns, queries)
    # With every dimension known, masking the patterns changes nothing (x · 1 = x).
    masked_pat = patterns if full else patterns * known.astype(np.float32)[:, None, :]
    pat_norms = np.sqrt(np.add.reduce(masked_pat * masked_pat, axis=2))  # np.linalg.norm's formula
    masked_dots = dots if full else np.einsum("bcd,bd->bc", masked_pat, queries)
    masked_cos = np.where(valid, masked_dots / np.maximum(pat_norms, 1e-12), -np.inf)
    lex_c = lexical[at, safe] * valid if lexical is not None else np.zeros(rows.shape)
    named_c = named[at, safe] & valid if named is not None else np.zeros(rows.shape, dtype=bool)

    steps = config.completion_steps if config.completion else 0
    states, attention = _complete(hopfield, patterns, queries, known, valid, steps, dots, full)
    scores = search_scores.copy()
    if steps and config.dense:
        # The completed cue replaces the cue in the candidates' dense part of the score.
        completed = dots if full else np.einsum("bcd,bd->bc", patterns, states)
        scores = np.where(valid, scores + completed - dense_c, -np.inf)
    winner = scores.argmax(1)
    states = states if steps else patterns[np.arange(b), winner]
    states = states / np.maximum(np.linalg.norm(states, axis=1, keepdims=True), 1e-12)
    decided = ["completion" if w != 0 else "search" for w in winner.tolist()]
    sep_conf = np.full(b, np.nan)
    if separator is not None:
        for i in range(b):
            count = int(valid[i].sum())
            if count < 2:
                continue
            nearest, confidence, accepted = separator.choose(patterns[i, :count], states[i],
                                                             config.dg_threshold)
            sep_conf[i] = confidence
            if accepted and nearest != winner[i]:
                winner[i] = nearest
                decided[i] = "separation"
    return Stages(rows, search_scores, masked_cos, attention, states, winner, decided, sep_conf,
                  scores, lex_c, named_c, np.zeros(b), np.ones(b), np.zeros(b), np.zeros(b))


# The perspective feature reads the best _LEADERS rows, weighted exp(-rank / 4); the sums of the
# weights over the first t ranks are what it divides by.
_LEADERS = 20
_RANK_WEIGHTS = np.exp(-np.arange(_LEADERS) / 4.0)
_RANK_WEIGHT_SUMS = [float(_RANK_WEIGHTS[:t].sum()) for t in range(_LEADERS + 1)]


def _speaker_agreement(plain: np.ndarray, named: np.ndarray, person: np.ndarray | None,
                       groups: SpeakerGroups
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(gap of the best named-speaker row to the best row, named share of the five best,
    perspective support of the ``_LEADERS`` best, first-person gap); cues that name nobody get
    (0, 1, 0, 0)."""
    b = len(plain)
    # Per (speaker, person) group: its best score, and whether the cue names its speaker.
    best_of = np.maximum.reduceat(np.take(plain, groups.order, axis=1), groups.starts, axis=1)  # (B, G)
    group_named = np.take(named, groups.first_row, axis=1)
    asked = group_named.any(1)
    # The best row of a named speaker, of a named speaker in the first person, and of anyone
    # else in the first person (-inf where there is none).
    kinds = np.stack([group_named, group_named & groups.first, ~group_named & groups.first])
    by_named, own, others = np.where(kinds, best_of, -np.inf).max(2)
    best = best_of.max(1)
    gap = np.where(asked & np.isfinite(best), np.minimum(np.maximum(by_named - best, -1.0), 0.0), 0.0)
    t = min(_LEADERS, plain.shape[1])
    at = np.arange(b)[:, None]
    leaders = np.argpartition(-plain, t - 1, axis=1)[:, :t]
    leading = plain[at, leaders]
    order = np.argsort(-leading, axis=1, kind="stable")
    leaders, leading = leaders[at, order], leading[at, order]
    by_named_speaker = named[at, leaders]
    share = np.where(asked, by_named_speaker[:, :5].sum(1) / min(5, t), 1.0)
    if person is None:
        return gap, share, np.zeros(b), np.zeros(b)
    said = person[leaders] * np.where(by_named_speaker, 1.0, -1.0) * np.isfinite(leading)
    perspective = (said * _RANK_WEIGHTS[:t]).sum(1) / _RANK_WEIGHT_SUMS[t]
    with np.errstate(invalid="ignore"):
        difference = own - others  # both absent (−inf − −inf = NaN): read as no evidence either way
    told = np.minimum(np.maximum(np.where(np.isnan(difference), 0.0, difference), -1.0), 1.0)
    return gap, share, np.where(asked, perspective, 0.0), np.where(asked, told, 0.0)


def speaker_groups(who: np.ndarray, first: np.ndarray) -> SpeakerGroups:
    """Group rows by (speaker code, first-person text) for ``_speaker_agreement``."""
    key = (np.asarray(who, np.int64) + 1) * 2 + np.asarray(first, bool)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]]) if len(key) else np.zeros(0, int)
    return SpeakerGroups(order, starts, order[starts], (sorted_key[starts] % 2).astype(bool))


def _top(score: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-C rows by score, best first (-1 pads where fewer than C rows are finite)."""
    n = score.shape[1]
    c_eff = min(c, n)
    top = np.argpartition(-score, c_eff - 1, axis=1)[:, :c_eff] if c_eff < n else np.broadcast_to(
        np.arange(n), score.shape).copy()
    at = np.arange(len(score))[:, None]
    top_scores = score[at, top]
    order = np.argsort(-top_scores, axis=1, kind="stable")
    rows = top[at, order]
    top_scores = top_scores[at, order]
    return _pad(np.where(np.isfinite(top_scores), rows, -1), top_scores, c)


def _top_of(rows: np.ndarray, scores: np.ndarray, c: int, dead: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray]:
    """The C best of a shortlist (rows (B, S) with their exact scores, -1 pads), best first and
    ties by row, rows ``dead`` (n,) or (B, n) hides left out; -1 pads."""
    valid = rows >= 0
    if dead is not None:
        safe = np.maximum(rows, 0)
        valid &= ~(dead[safe] if dead.ndim == 1 else np.take_along_axis(dead, safe, 1))
    scores = np.where(valid, scores, -np.inf)
    rows = np.where(valid, rows, np.iinfo(np.int64).max)
    at = np.arange(len(rows))[:, None]
    order = np.lexsort((rows, -scores), axis=1)[:, :c]
    rows, scores = rows[at, order], scores[at, order]
    return _pad(np.where(np.isfinite(scores), rows, -1), scores, c)


def _with_neighbours(score: np.ndarray, graph: Graph, weight: float) -> np.ndarray:
    """(B, n) score plus ``weight`` times the best positive score among each row's graph
    neighbours (blocked rows stay blocked)."""
    b, n = score.shape
    # A trailing zero column: the "no neighbour" index -1 reads it; blocked rows (-inf) give 0.
    padded = np.zeros((b, n + 1), score.dtype)
    positive = np.maximum(score, 0.0, out=padded[:, :n])
    best = np.maximum(np.take(padded, graph.prev, axis=1), np.take(padded, graph.next, axis=1))
    if graph.links is not None:
        # Link weights are ≤ 1; a row linked to a strong match gets up to that match's score.
        np.maximum(best, (graph.links @ positive.T).T / graph.degree, out=best)
    best *= weight
    best += score
    return best


_BETAS: weakref.WeakKeyDictionary[ModernHopfield, float] = weakref.WeakKeyDictionary()


def _beta(hopfield: ModernHopfield) -> float:
    """The Hopfield step's β as a float, read from torch once per (fixed-β) module."""
    if hopfield.log_beta.requires_grad:
        return hopfield.beta.item()
    if hopfield not in _BETAS:
        _BETAS[hopfield] = hopfield.beta.item()
    return _BETAS[hopfield]


def _complete(hopfield: ModernHopfield, patterns: np.ndarray, queries: np.ndarray, known: np.ndarray,
              valid: np.ndarray, steps: int, dots: np.ndarray, full: bool) -> tuple[np.ndarray, np.ndarray]:
    """Hopfield completion over the candidates with the known dimensions clamped:
    (completed cues (B, d), attention over the candidates (B, C)); ``dots`` are the
    candidates' inner products with the cues, ``full``: every dimension of every cue is known.
    The update is ``hopfield``'s (ξ ← Xᵀ softmax(β X ξ), engram.ca3.ModernHopfield) in numpy:
    a few small products per recall, where torch's per-call cost would outweigh the work."""
    beta = _beta(hopfield)
    if steps == 0 or full:
        # With every dimension known the clamp restores the cue after each update, so the
        # completed cue is the cue itself: only the attention needs computing.
        return queries.copy(), _softmax(beta * dots, valid)
    state = queries
    for _ in range(steps):
        weights = _softmax(beta * np.einsum("bcd,bd->bc", patterns, state), valid)
        state = np.einsum("bc,bcd->bd", weights, patterns)
        # The known dimensions are clamped to the cue, scaled to the state's norm over them.
        scale = np.sqrt(np.add.reduce(np.where(known, state, 0.0) ** 2, axis=1, keepdims=True))
        state = np.where(known, queries * np.maximum(scale, 1e-12), state).astype(np.float32, copy=False)
    attention = _softmax(beta * np.einsum("bcd,bd->bc", patterns, state), valid)
    return state / np.maximum(np.linalg.norm(state, axis=1, keepdims=True), 1e-12), attention


def _softmax(logits: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Softmax over each row's valid entries (the others get weight 0; a row with none, all 0)."""
    shifted = np.where(valid, logits - np.where(valid, logits, -np.inf).max(1, keepdims=True), -np.inf)
    weights = np.exp(shifted)
    return weights / np.maximum(weights.sum(1, keepdims=True), 1e-30)
