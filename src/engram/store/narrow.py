"""Fused recall over a shortlist: in a large space, each text cue's fused score (dense + lexical +
speaker + graph) is computed over the rows that can reach its top instead of over every row.

Those rows are the cue's dense shortlist (HNSW or an exact scan, ``RecallIndex.dense_shortlist``),
the best rows of its BM25 scores and of its speaker-blind form's, and the session neighbours and
sleep's links of the best of each list. A row outside them has a dense score below the
shortlist's and a lexical score below the lexical top's, so it reaches the top C only through the
speaker bonus or a neighbour outside the heads: the shortlist is sized so that this is rare
(LoCoMo forced onto it gives the full scan's figures). The speaker-blind cue is scored over the
same rows, so it costs no second pass over the matrix. Each cue is its own sub-problem, so
``recall_batch`` answers as ``recall`` does.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from engram.ca3 import ModernHopfield
from engram.store import pipeline
from engram.store.pipeline import Graph, Stages


def applies(config: pipeline.RecallConfig, live: int, fused: bool) -> bool:
    """Whether recall narrows: a fused score in a space of at least ``shortlist_above`` episodes."""
    return fused and config.shortlist_above is not None and live >= config.shortlist_above


def rows_of_cue(dense_rows: np.ndarray, lexical: np.ndarray | None, blind_lexical: np.ndarray | None,
                graph: Graph | None, lexical_top: int, graph_top: int, n: int) -> np.ndarray:
    """Sorted rows (of ``n``) one cue's fused score is computed over: its dense shortlist
    (best first, -1 pads), the ``lexical_top`` best rows with a positive BM25 score (of the cue,
    and of its blind form), and the graph neighbours of the ``graph_top`` best of each list (a
    neighbour's bonus is a share of a strong match's score: a weak row lends little)."""
    chosen = np.zeros(n + 1, dtype=bool)  # the last entry absorbs -1 (a pad, or no neighbour)
    chosen[dense_rows] = True
    heads = [dense_rows[:graph_top]]
    for scores in (lexical, blind_lexical):
        if scores is not None:
            best = _best_positive(scores, lexical_top)
            chosen[best] = True
            heads.append(best[:graph_top])
    if graph is not None:
        rows = np.concatenate(heads)
        rows = rows[rows >= 0]
        chosen[graph.prev[rows]] = True
        chosen[graph.next[rows]] = True
        if graph.links is not None:
            chosen[graph.links[rows].indices] = True
    return np.flatnonzero(chosen[:n])


def _best_positive(scores: np.ndarray, top: int) -> np.ndarray:
    """Rows of the ``top`` highest positive scores, best first (fewer where fewer are positive)."""
    positive = np.flatnonzero(scores > 0)
    if len(positive) > top:
        positive = positive[np.argpartition(-scores[positive], top - 1)[:top]]
    return positive[np.argsort(-scores[positive], kind="stable")]


def subgraph(graph: Graph, rows: np.ndarray, n: int) -> Graph:
    """The graph among ``rows`` (sorted), renumbered 0..len(rows)-1; a neighbour outside them is
    no neighbour (-1). Link degrees keep their values over every row, so a linked score is
    divided as in the full graph."""
    local = np.full(n + 1, -1, dtype=np.int64)  # the "no neighbour" index -1 reads the last entry
    local[rows] = np.arange(len(rows))
    links = graph.links[rows][:, rows] if graph.links is not None else None
    degree = graph.degree[rows] if graph.degree is not None else None
    return Graph(local[graph.prev[rows]], local[graph.next[rows]], links, degree)


def stack(parts: list[Stages]) -> Stages:
    """One batch's stages from its cues' (each a batch of one)."""
    joined = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Stages)
              if f.name != "decided_by"}
    return Stages(**joined, decided_by=[d for p in parts for d in p.decided_by])


def run(unit: np.ndarray, who: np.ndarray, person: np.ndarray, cues: np.ndarray, known: np.ndarray,
        queries: np.ndarray, dense_rows: np.ndarray, config: pipeline.RecallConfig,
        hopfield: ModernHopfield, separator: pipeline.Separator | None,
        dead: np.ndarray | None, lexical: np.ndarray | None,
        named: np.ndarray | None, graph: Graph | None, blind: np.ndarray | None,
        blind_lexical: np.ndarray | None) -> Stages:
    """``pipeline.run`` cue by cue over each cue's rows (``rows_of_cue`` of its dense shortlist
    ``dense_rows`` (B, S)), with the answers' rows given as rows of ``unit`` again; the other
    arguments are ``pipeline.run``'s over every row (no ``exclude_rows``: calibration scans every row)."""
    n = unit.shape[0]
    answers = []
    for i in range(len(cues)):
        rows = rows_of_cue(dense_rows[i], None if lexical is None else lexical[i],
                           None if blind_lexical is None else blind_lexical[i], graph,
                           config.shortlist_lexical, config.candidates, n)
        if len(rows) == 0:  # every row is hidden: the full problem answers that
            rows = np.arange(n)
        one = slice(i, i + 1)
        # A cue that names nobody gets no speaker bonus and no agreement to judge: as if unnamed.
        names = named is not None and bool(named[i].any())
        stages = pipeline.run(
            unit[rows], cues[one], known[one], config, hopfield, separator,
            dead=None if dead is None else dead[rows],
            lexical=None if lexical is None else lexical[i, rows][None],
            named=named[i, rows][None] if names else None,
            graph=None if graph is None else subgraph(graph, rows, n),
            speakers=pipeline.speaker_groups(who[rows], person[rows] > 0) if names else None,
            person=person[rows], queries=queries[one],
            blind=blind[one] if names and blind is not None else None,
            blind_lexical=None if blind_lexical is None else blind_lexical[i, rows][None])
        stages.rows = np.where(stages.rows >= 0, rows[np.maximum(stages.rows, 0)], -1)
        answers.append(stages)
    return answers[0] if len(answers) == 1 else stack(answers)
