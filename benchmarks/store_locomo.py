"""LoCoMo: does the memory engine find the evidence of real conversations and refuse what it lacks?

Each conversation of ``--data`` (LoCoMo files, any number, any ids) is stored in its own space
of a fresh store; every question is embedded once and recalled. Reported on categories 1–4
(answerable) and in total: evidence recall@k (share of a question's evidence turns in the top
k) and hit@k (at least one in the top k), for the engine, for each of its stages switched off
in turn, and for plain numpy cosine, BM25 (``bm25s``) and their reciprocal rank fusion, all on
the same embeddings in the same run. Refusal: answerable questions accepted (of all; of those
with an evidence turn in the engine's top 10), category-5 questions refused, other
conversations' questions refused, AUROC answerable vs category 5, and the ECE and reliability
diagram of the confidence read as P(top result is an evidence turn). The gate's label: an
answerable question is 1 when the top result is one of its evidence turns, else 0; a
category-5 question, or another conversation's question, is 0.

Two gates, labelled apart: the engine's shipped default gate, and a cross-fitted gate (leave
one conversation out: fitted with ``fit_gate`` on the other conversations' questions, set on
the held-out conversation's space with ``set_gate``, evaluated there). ``--fit-default PATH``
writes the gate fitted on every given conversation (to ship as the default).

Latency: recall P50/P95 excluding the query embedding, beside a numpy cosine top-10 scan of
the same rows, at conversation size and on a space of ``--latency-episodes`` rows made by
repeating the turns (one thread).

    PYTHONPATH=src .venv/bin/python benchmarks/store_locomo.py --data ../shared/data/locomo \
        --model ../shared/data/models/all-MiniLM-L6-v2 --json locomo.json [--run-dir runs]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from engram.data import data_root
from engram.data.locomo import CATEGORIES, Conversation, Turn, load_locomo
from engram.io import atomic_write_text, to_json
from engram.runs import RunFolder, markdown_table, progress, seed_everything
from engram.stats import bootstrap_ci
from engram.store import (
    Embedder,
    MemoryStore,
    RecallConfig,
    SentenceTransformerEmbedder,
    expected_calibration_error,
    fit_gate,
)
from engram.store.gate import FEATURES, gate_file_name

KS = (1, 5, 10)
RRF_K = 60  # the usual reciprocal-rank-fusion constant (Cormack et al., 2009)
ANSWERABLE = (1, 2, 3, 4)
# Boolean settings of RecallConfig that are options, not stages of the pipeline.
NOT_STAGES = ("embed_speaker", "strengthen_on_recall")
SLEPT = "engine after sleep()"  # the full engine after one consolidation of each space
TEXT_EMBEDDED = "speaker: text"
TEXT_BM25 = "speaker (session date): text"
GATE_LABELS = (
    "answerable question (categories 1-4): 1 if the top result is one of its evidence turns, else 0; "
    "category-5 questions and other conversations' questions: 0. Holds (the memory holds an answer): "
    "answerable questions 1, category-5 and other conversations' questions 0. Foreign: other "
    "conversations' questions 1, the conversation's own 0"
)


def turn_text(turn: Turn) -> str:
    """What is embedded and stored for a turn: the speaker's name and the utterance."""
    return f"{turn.speaker}: {turn.text}"


def bm25_text(turn: Turn) -> str:
    """What BM25 indexes: the stored record as text (speaker, session date, utterance)."""
    return f"{turn.speaker} ({turn.session_date}): {turn.text}"


# ---------------------------------------------------------------------------------- embeddings


class Embeddings:
    """Turn and question embeddings of the store's embedder, cached per conversation by content hash."""

    def __init__(self, embedder: Embedder, cache_dir: Path):
        self.embedder = embedder
        self.cache_dir = cache_dir
        self.seconds = 0.0
        self.cached = 0

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        start = time.perf_counter()
        out = self.embedder.embed(list(texts))
        self.seconds += time.perf_counter() - start
        return np.asarray(out, dtype=np.float32)

    def of(self, conversation: Conversation, source: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(turns (n, d), questions (q, d)), unit norm."""
        tag = f"{self.embedder.name}|{conversation.name}|{TEXT_EMBEDDED}".encode()
        key = hashlib.sha256(source + tag).hexdigest()
        path = self.cache_dir / f"{conversation.name}-{key[:16]}.npz"
        if path.is_file():
            with np.load(path) as data:
                self.cached += 1
                return data["turns"], data["questions"]
        turns = self._encode([turn_text(t) for t in conversation.turns])
        questions = self._encode([q.question for q in conversation.questions])
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
            np.savez(handle, turns=turns, questions=questions)
        Path(handle.name).replace(path)
        return turns, questions


class BlindCues:
    """Each question's speaker-blind form (``MemoryStore.blind_text``) embedded ahead of recall,
    so the timed recall excludes every query embedding; one embedder call per batch of texts."""

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self.vectors: dict[str, np.ndarray] = {}

    def prepare(self, store: MemoryStore, texts: Sequence[str]) -> None:
        missing = sorted({b for b in (store.blind_text(t) for t in texts) if b not in self.vectors})
        if missing:
            for text, vector in zip(missing, np.asarray(self.embedder.embed(missing)), strict=True):
                self.vectors[text] = vector.astype(np.float32)

    def of(self, store: MemoryStore, text: str, vector: np.ndarray) -> np.ndarray:
        """The blind cue of a prepared text (the cue itself when it names nobody)."""
        blind = store.blind_text(text)
        return vector if blind == text else self.vectors[blind]


# ---------------------------------------------------------------------------------- systems


@dataclass
class Answer:
    """One system's answer to one question: ranked turn ids, and for the engine its verdict."""

    ranked: list[str]
    confidence: float = float("nan")
    accepted: bool = True
    features: tuple[float, ...] = ()
    refusal_score: float = float("nan")  # what the gate's threshold is compared with

    @property
    def top(self) -> str | None:
        return self.ranked[0] if self.ranked else None


@dataclass
class Space:
    """One stored conversation and what every system needs to answer questions about it."""

    conversation: Conversation
    turn_vectors: np.ndarray
    bm25: Any


def build_bm25(conversation: Conversation) -> Any:
    import bm25s

    retriever = bm25s.BM25()
    tokens = bm25s.tokenize([bm25_text(t) for t in conversation.turns], stopwords="en", show_progress=False)
    retriever.index(tokens, show_progress=False)
    return retriever


def cosine_ranking(space: Space, vector: np.ndarray) -> np.ndarray:
    return np.argsort(-(space.turn_vectors @ vector), kind="stable")


def bm25_ranking(space: Space, question: str) -> np.ndarray:
    import bm25s

    n = len(space.conversation.turns)
    tokens = bm25s.tokenize([question], stopwords="en", show_progress=False)
    if not tokens.vocab:  # only stop words: BM25 has no opinion, the turns stay in order
        return np.arange(n)
    docs, _ = space.bm25.retrieve(tokens, k=n, show_progress=False)
    return np.asarray(docs[0])


def fused_ranking(*rankings: np.ndarray) -> np.ndarray:
    """Reciprocal rank fusion: score(turn) = Σ 1 / (RRF_K + rank)."""
    score = np.zeros(len(rankings[0]))
    for ranking in rankings:
        score[ranking] += 1.0 / (RRF_K + np.arange(1, len(ranking) + 1))
    return np.argsort(-score, kind="stable")


def baseline_answers(space: Space, questions: Sequence[tuple[str, np.ndarray]]) -> dict[str, list[Answer]]:
    ids = [t.dia_id for t in space.conversation.turns]
    out: dict[str, list[Answer]] = {"cosine": [], "bm25": [], "fusion": []}
    for text, vector in questions:
        cos, bm = cosine_ranking(space, vector), bm25_ranking(space, text)
        for name, ranking in (("cosine", cos), ("bm25", bm), ("fusion", fused_ranking(cos, bm))):
            out[name].append(Answer([ids[i] for i in ranking[: max(KS)]]))
    return out


def stage_switches() -> dict[str, dict[str, bool]]:
    """Each boolean stage of ``RecallConfig`` flipped from its default, one at a time."""
    variants = {}
    for f in dataclasses.fields(RecallConfig):
        if f.type in ("bool", bool) and isinstance(f.default, bool) and f.name not in NOT_STAGES:
            variants[f"engine {'-' if f.default else '+'}{f.name}"] = {f.name: not f.default}
    return variants


def store_turns(store: MemoryStore, turns: Sequence[Turn], vectors: np.ndarray, ids: Sequence[str]) -> float:
    """Seconds to store the turns as text episodes (embeddings given, so no model time)."""
    start = time.perf_counter()
    store.add_batch(
        vectors,
        payloads=[{"dia_id": t.dia_id, "session_date": t.session_date, "caption": t.caption} for t in turns],
        texts=[t.text for t in turns],
        who=[t.speaker for t in turns],
        sessions=[t.session for t in turns],
        timestamps=[t.timestamp for t in turns],
        ids=list(ids),
    )
    return time.perf_counter() - start


class Engine:
    """The engine on one conversation: a space of a fresh store holding its turns."""

    def __init__(
        self,
        root: Path,
        space: Space,
        embedder: Embedder,
        config: RecallConfig,
        seed: int,
        blinds: BlindCues,
        sleep: bool = False,
    ):
        self.space = space
        self.blinds = blinds
        name = hashlib.sha1(space.conversation.name.encode()).hexdigest()[:12]
        self.store = MemoryStore(
            root, space=f"c{name}", embedder=embedder, config=config, durable=False, seed=seed
        )
        turns = space.conversation.turns
        self.ingest_s = store_turns(self.store, turns, space.turn_vectors, [t.dia_id for t in turns])
        start = time.perf_counter()
        if sleep:
            self.store.sleep()
        self.sleep_s = time.perf_counter() - start

    def answer(self, text: str, vector: np.ndarray) -> tuple[Answer, float]:
        """The engine's answer and the seconds the recall took (the query embedding is given)."""
        blind = self.blinds.of(self.store, text, vector)
        start = time.perf_counter()
        result = self.store.recall(vector, k=max(KS), text=text, blind=blind)
        elapsed = time.perf_counter() - start
        features = tuple(float(v) for v in self.store.gate_features([result])[0])
        ranked = [r.episode.id for r in result.episodes]
        holds = result.trace.get("holds")
        score = float(result.confidence if holds is None else holds)
        return Answer(ranked, float(result.confidence), bool(result.accepted), features, score), elapsed

    def close(self) -> None:
        self.store.close()


# ---------------------------------------------------------------------------------- metrics


def recall_at(ranked: Sequence[str], evidence: Sequence[str], k: int) -> float:
    return len(set(ranked[:k]) & set(evidence)) / len(evidence)


def hit_at(ranked: Sequence[str], evidence: Sequence[str], k: int) -> float:
    return float(bool(set(ranked[:k]) & set(evidence)))


def retrieval_figures(rows: Sequence[tuple[int, Sequence[str], Answer]]) -> dict[str, Any]:
    """recall@k / hit@k over (category, evidence, answer) rows, in total and by category."""

    def summary(subset: Sequence[tuple[int, Sequence[str], Answer]]) -> dict[str, Any]:
        out: dict[str, Any] = {"questions": len(subset)}
        for k in KS:
            out[f"recall_at_{k}"] = (
                float(np.mean([recall_at(a.ranked, e, k) for _, e, a in subset])) if subset else None
            )
            out[f"hit_at_{k}"] = (
                float(np.mean([hit_at(a.ranked, e, k) for _, e, a in subset])) if subset else None
            )
        return out

    total = summary(rows)
    total["by_category"] = {
        str(c): {"name": CATEGORIES[c], **summary([r for r in rows if r[0] == c])} for c in ANSWERABLE
    }
    return total


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    from sklearn.metrics import roc_auc_score

    if not len(positive) or not len(negative):
        return None
    scores = np.concatenate([positive, negative])
    return float(roc_auc_score(np.r_[np.ones(len(positive)), np.zeros(len(negative))], scores))


@dataclass
class Verdicts:
    """The engine's confidence, refusal score and acceptance on the three kinds of question,
    with gate labels (the refusal score is the confidence for a one-part gate, P(the memory
    holds an answer) for a two-part one)."""

    answerable_score: np.ndarray
    adversarial_score: np.ndarray
    novel_score: np.ndarray
    answerable_conf: np.ndarray
    answerable_accepted: np.ndarray
    answerable_correct: np.ndarray  # top result is an evidence turn
    answerable_retrieved: np.ndarray  # an evidence turn is in the top 10
    adversarial_conf: np.ndarray
    adversarial_accepted: np.ndarray
    novel_conf: np.ndarray
    novel_accepted: np.ndarray

    def figures(self) -> dict[str, Any]:
        def share(x: np.ndarray) -> float | None:
            return float(np.mean(x)) if len(x) else None

        retrieved = self.answerable_retrieved.astype(bool)
        confidence = np.concatenate([self.answerable_conf, self.adversarial_conf])
        labels = np.concatenate([self.answerable_correct, np.zeros(len(self.adversarial_conf))])
        return {
            "answerable_accepted": share(self.answerable_accepted),
            "answerable_retrieved_accepted": share(self.answerable_accepted[retrieved]),
            "adversarial_refused": share(~self.adversarial_accepted.astype(bool)),
            "novel_refused": share(~self.novel_accepted.astype(bool)),
            "auroc_adversarial": auroc(self.answerable_score, self.adversarial_score),
            "auroc_novel": auroc(self.answerable_score, self.novel_score),
            "auroc_adversarial_confidence": auroc(self.answerable_conf, self.adversarial_conf),
            "ece": float(expected_calibration_error(confidence, labels)) if len(confidence) else None,
            "ece_with_novel": float(
                expected_calibration_error(
                    np.concatenate([confidence, self.novel_conf]),
                    np.concatenate([labels, np.zeros(len(self.novel_conf))]),
                )
            )
            if len(confidence)
            else None,
            "questions": {
                "answerable": len(self.answerable_conf),
                "adversarial": len(self.adversarial_conf),
                "novel": len(self.novel_conf),
            },
        }

    def operating_points(self) -> list[dict[str, float]]:
        """Acceptance and refusal at thresholds 0.05 … 0.95, to choose the default threshold."""
        retrieved = self.answerable_retrieved.astype(bool)
        points = []
        for t in np.round(np.arange(0.05, 1.0, 0.05), 2):
            row = {
                "threshold": float(t),
                "answerable_accepted": float(np.mean(self.answerable_score >= t)),
                "answerable_retrieved_accepted": float(np.mean(self.answerable_score[retrieved] >= t))
                if retrieved.any()
                else None,
                "adversarial_refused": float(np.mean(self.adversarial_score < t))
                if len(self.adversarial_score)
                else None,
                "novel_refused": float(np.mean(self.novel_score < t)) if len(self.novel_score) else None,
            }
            points.append(row)
        return points

    def reliability(self, bins: int = 10) -> list[dict[str, Any]]:
        confidence = np.concatenate([self.answerable_conf, self.adversarial_conf])
        labels = np.concatenate([self.answerable_correct, np.zeros(len(self.adversarial_conf))])
        edges = np.linspace(0, 1, bins + 1)
        which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
        return [
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": int((which == b).sum()),
                "confidence": float(confidence[which == b].mean()) if (which == b).any() else None,
                "accuracy": float(labels[which == b].mean()) if (which == b).any() else None,
            }
            for b in range(bins)
        ]


def latency_figures(engine_s: Sequence[float], cosine_s: Sequence[float]) -> dict[str, float]:
    e, c = np.asarray(engine_s) * 1e3, np.asarray(cosine_s) * 1e3
    return {
        "engine_p50_ms": float(np.percentile(e, 50)),
        "engine_p95_ms": float(np.percentile(e, 95)),
        "cosine_p50_ms": float(np.percentile(c, 50)),
        "cosine_p95_ms": float(np.percentile(c, 95)),
        "ratio_p50": float(np.percentile(e, 50) / np.percentile(c, 50)),
        "recalls": len(e),
    }


def timed_cosine(matrix: np.ndarray, vector: np.ndarray, k: int) -> float:
    """Seconds for a plain numpy cosine top-k over unit rows (the baseline scan)."""
    start = time.perf_counter()
    scores = matrix @ vector
    top = np.argpartition(-scores, min(k, len(scores) - 1))[:k]
    top[np.argsort(-scores[top])]
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Config:
    data: str
    model: str
    seed: int = 0
    max_questions: int | None = None
    latency_episodes: int = 10_000
    latency_queries: int = 500
    bootstrap: int = 2000
    text_embedded: str = TEXT_EMBEDDED
    text_bm25: str = TEXT_BM25
    rrf_k: int = RRF_K
    recall: tuple[tuple[str, Any], ...] = ()  # RecallConfig settings every engine takes (--recall)


@dataclass
class Question:
    """A question as the run uses it: where it comes from, its evidence and its embedding."""

    source: int
    category: int
    evidence: tuple[str, ...]
    text: str
    vector: np.ndarray


def select_questions(
    conversation: Conversation, vectors: np.ndarray, source: int, limit: int | None, rng: np.random.Generator
) -> list[Question]:
    """Category-5 questions and answerable ones with evidence; a seeded subset when ``limit`` is set."""
    chosen = [i for i, q in enumerate(conversation.questions) if q.category == 5 or q.evidence]
    if limit is not None and limit < len(chosen):
        chosen = sorted(rng.choice(chosen, size=limit, replace=False).tolist())
    qs = conversation.questions
    return [Question(source, qs[i].category, qs[i].evidence, qs[i].question, vectors[i]) for i in chosen]


def labelled(
    questions: Sequence[Question], answers: Sequence[Answer]
) -> list[tuple[int, Sequence[str], Answer]]:
    return [
        (q.category, q.evidence, a)
        for q, a in zip(questions, answers, strict=True)
        if q.category in ANSWERABLE
    ]


def gate_label(question: Question, answer: Answer) -> int:
    """1 when an answerable question's top result is one of its evidence turns; else 0."""
    return int(question.category in ANSWERABLE and answer.top in question.evidence)


def fit_in_parts(
    x: np.ndarray, y: np.ndarray, holds: np.ndarray, foreign: np.ndarray, threshold: float
) -> Any:
    """``fit_gate`` in parts, each part only where its labels have both kinds (a folder without
    category-5 questions among those naming a speaker has no agreement part, one conversation
    alone no foreign questions)."""
    named = x[:, FEATURES.index("speaker_named")] > 0
    asked = holds[named & (foreign == 0)]
    agree = len(asked) > 0 and asked.min() != asked.max()
    return fit_gate(x, y, threshold=threshold, holds=holds if agree else None,
                    foreign=foreign if foreign.min() != foreign.max() else None)


def holds_label(question: Question) -> int:
    """1 when the memory holds an answer: an answerable question asked of its own conversation."""
    return int(question.category in ANSWERABLE)


def verdicts(own: Sequence[tuple[Question, Answer]], novel: Sequence[Answer]) -> Verdicts:
    ans = [(q, a) for q, a in own if q.category in ANSWERABLE]
    adv = [a for q, a in own if q.category == 5]
    return Verdicts(
        answerable_score=np.array([a.refusal_score for _, a in ans]),
        adversarial_score=np.array([a.refusal_score for a in adv]),
        novel_score=np.array([a.refusal_score for a in novel]),
        answerable_conf=np.array([a.confidence for _, a in ans]),
        answerable_accepted=np.array([a.accepted for _, a in ans], dtype=bool),
        answerable_correct=np.array([gate_label(q, a) for q, a in ans], dtype=float),
        answerable_retrieved=np.array([hit_at(a.ranked, q.evidence, 10) for q, a in ans], dtype=bool),
        adversarial_conf=np.array([a.confidence for a in adv]),
        adversarial_accepted=np.array([a.accepted for a in adv], dtype=bool),
        novel_conf=np.array([a.confidence for a in novel]),
        novel_accepted=np.array([a.accepted for a in novel], dtype=bool),
    )


def paired_difference(
    engine: Sequence[tuple[int, Sequence[str], Answer]],
    baselines: dict[str, list[tuple[int, Sequence[str], Answer]]],
    k: int,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """Engine minus the best baseline (by mean recall@k) per question, with a bootstrap interval."""
    mine = np.array([recall_at(a.ranked, e, k) for _, e, a in engine])
    scores = {
        name: np.array([recall_at(a.ranked, e, k) for _, e, a in rows]) for name, rows in baselines.items()
    }
    best = max(scores, key=lambda name: scores[name].mean())
    interval = bootstrap_ci(mine - scores[best], n_resamples=resamples, seed=seed)
    return {
        "baseline": best,
        "difference": interval.estimate,
        "low": interval.low,
        "high": interval.high,
        "level": interval.level,
    }


def cross_fitted(
    engines: Sequence[Engine],
    own: Sequence[list[tuple[Question, Answer]]],
    novel: Sequence[list[tuple[Question, Answer]]],
) -> tuple[Verdicts | None, list[dict[str, Any]]]:
    """Leave one conversation out: fit on the others' questions, set on the held-out space, recall.

    Held out from each fit: the held-out conversation's questions, in its own space and asked
    to another space as novel ones.
    """
    if len(engines) < 2:
        return None, []
    own_all: list[tuple[Question, Answer]] = []
    novel_all: list[Answer] = []
    folds = []
    for held, engine in enumerate(engines):
        x, y, h, f = [], [], [], []
        for s in range(len(engines)):
            if s != held:
                x += [a.features for _, a in own[s]] + [a.features for q, a in novel[s] if q.source != held]
                y += [gate_label(q, a) for q, a in own[s]] + [0 for q, _ in novel[s] if q.source != held]
                h += [holds_label(q) for q, _ in own[s]] + [0 for q, _ in novel[s] if q.source != held]
                f += [0 for _ in own[s]] + [1 for q, _ in novel[s] if q.source != held]
        threshold = engine.store.gate.threshold
        try:
            model = fit_in_parts(np.array(x), np.array(y), np.array(h), np.array(f), threshold)
        except ValueError as error:  # e.g. no question of the other conversations answered right
            return None, [*folds, {"held_out": engine.space.conversation.name, "error": str(error)}]
        engine.store.set_gate(model)
        folds.append(
            {
                "held_out": engine.space.conversation.name,
                "fitted_on": len(y),
                "positives": sum(y),
                "threshold": threshold,
                "coef": dict(zip(FEATURES, model.coef, strict=True)),
                **{
                    f"{part}_coef": None if coef is None else dict(zip(FEATURES, coef, strict=True))
                    for part, coef in (("familiar", model.familiar_coef), ("agree", model.agree_coef))
                },
                "intercept": model.intercept,
            }
        )
        own_all += [(q, engine.answer(q.text, q.vector)[0]) for q, _ in own[held]]
        novel_all += [engine.answer(q.text, q.vector)[0] for q, _ in novel[held]]
    return verdicts(own_all, novel_all), folds


def latency_at_scale(
    spaces: Sequence[Space],
    questions: Sequence[Question],
    embedder: Embedder,
    episodes: int,
    queries: int,
    root: Path,
    seed: int,
    rng: np.random.Generator,
    blinds: BlindCues,
) -> dict[str, Any]:
    """Recall latency on one space of ``episodes`` rows (the turns repeated), one thread."""
    turns = [t for s in spaces for t in s.conversation.turns]
    vectors = np.concatenate([s.turn_vectors for s in spaces])
    take = np.arange(episodes) % len(turns)
    store = MemoryStore(root, space="latency", embedder=embedder, durable=False, seed=seed)
    matrix = np.ascontiguousarray(vectors[take])
    ingest_s = store_turns(store, [turns[j] for j in take], matrix, [f"r{i}" for i in range(episodes)])
    picked = rng.choice(len(questions), size=min(queries, len(questions)), replace=False)
    blinds.prepare(store, [questions[i].text for i in picked])
    first = questions[picked[0]]
    store.recall(first.vector, k=max(KS), text=first.text, blind=blinds.of(store, first.text, first.vector))
    engine_s, cosine_s, engine_cpu, cosine_cpu = [], [], [], []
    gc.collect()  # the run's earlier garbage is not collected inside the timed recalls
    for i in picked:
        q = questions[i]
        cpu = time.thread_time()
        cosine_s.append(timed_cosine(matrix, q.vector, max(KS)))
        cosine_cpu.append(time.thread_time() - cpu)
        blind = blinds.of(store, q.text, q.vector)
        begin, cpu = time.perf_counter(), time.thread_time()
        store.recall(q.vector, k=max(KS), text=q.text, blind=blind)
        engine_s.append(time.perf_counter() - begin)
        engine_cpu.append(time.thread_time() - cpu)
    store.close()
    # This thread's CPU time as well: a machine shared with other work stretches wall-clock time.
    return {"episodes": episodes, "ingest_s": ingest_s, "threads": 1, **latency_figures(engine_s, cosine_s),
            "cpu": latency_figures(engine_cpu, cosine_cpu)}


def recall_setting(value: str) -> tuple[str, Any]:
    """``NAME=VALUE`` of a numeric or optional ``RecallConfig`` field (an argparse type); VALUE is
    a number, true / false, or none."""
    name, sep, raw = value.partition("=")
    kinds = {f.name: f.type for f in dataclasses.fields(RecallConfig)}
    if not sep or name not in kinds:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME a RecallConfig field, got {value!r}")
    words = {"none": None, "true": True, "false": False}
    try:
        parsed = words[raw] if raw in words else (float(raw) if "float" in kinds[name] else int(raw))
        dataclasses.replace(RecallConfig(), **{name: parsed})
    except (ValueError, TypeError) as error:
        raise argparse.ArgumentTypeError(f"{value!r}: {error}") from error
    return name, parsed


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=data_root() / "locomo",
        help="folder (or file) of LoCoMo conversations (default: the shared data folder's)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=data_root() / "models" / "all-MiniLM-L6-v2",
        help="sentence-transformers model folder",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results JSON (besides the run folder's results.json)",
    )
    parser.add_argument("--run-dir", default=Path("runs"), type=Path, help="root of the run folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-questions",
        type=int,
        default=None,
        help="a seeded subset of questions per conversation (quick checks)",
    )
    parser.add_argument("--latency-episodes", type=int, default=10_000)
    parser.add_argument("--latency-queries", type=int, default=500)
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument(
        "--fit-default",
        type=Path,
        default=None,
        help="write the gate fitted on every given conversation here (JSON)",
    )
    parser.add_argument(
        "--recall",
        type=recall_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a RecallConfig setting for every engine (repeatable), e.g. shortlist_above=1 "
        "(always the shortlist) or shortlist_above=none (every row)",
    )
    parser.add_argument(
        "--gate-threshold", type=float, default=0.5, help="the refusal threshold written with --fit-default"
    )
    args = parser.parse_args(argv)
    for name in ("max_questions", "latency_episodes", "latency_queries", "bootstrap"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive integer, got {value}")
    if not args.data.exists():
        parser.error(f"--data: expected a folder or file of LoCoMo conversations, got {args.data}")
    if not args.model.is_dir():
        parser.error(f"--model: expected a sentence-transformers folder, got {args.model}")
    began = time.perf_counter()
    cfg = Config(
        str(args.data),
        str(args.model),
        args.seed,
        args.max_questions,
        args.latency_episodes,
        args.latency_queries,
        args.bootstrap,
        recall=tuple(args.recall),
    )
    rng = seed_everything(cfg.seed)
    conversations = load_locomo(args.data)
    files = {
        c.name: p
        for p in ([args.data] if args.data.is_file() else sorted(args.data.glob("*.json")))
        for c in load_locomo(p)
    }
    run = RunFolder.create(args.run_dir, "store_locomo", dataclasses.asdict(cfg), cfg.seed)
    embedder = SentenceTransformerEmbedder(args.model, device="cpu")
    embeddings = Embeddings(embedder, args.run_dir / ".cache" / "locomo-embeddings")

    spaces, questions = [], []
    for source, conversation in enumerate(progress(conversations, "embedding")):
        turns, qvecs = embeddings.of(conversation, files[conversation.name].read_bytes())
        spaces.append(Space(conversation, turns, build_bm25(conversation)))
        questions.append(select_questions(conversation, qvecs, source, cfg.max_questions, rng))

    n = len(spaces)
    # Another conversation's answerable questions, asked to this space: conversation s+1's, cyclically.
    novel = [
        [q for q in questions[(s + 1) % n] if q.category in ANSWERABLE] if n > 1 else [] for s in range(n)
    ]
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        import torch

        torch.set_num_threads(1)
        root = Path(tmp)
        systems: dict[str, list[tuple[int, Sequence[str], Answer]]] = {}
        own_answers: list[list[tuple[Question, Answer]]] = []
        novel_answers: list[list[tuple[Question, Answer]]] = []
        engine_s, cosine_s, ingest, engines = [], [], [], []
        accepted: dict[str, list[bool]] = {}
        sleeps: list[float] = []
        variants = {"engine": {}, **stage_switches(), SLEPT: {}}
        blinds = BlindCues(embedder)
        for s, space in enumerate(progress(spaces, "conversations")):
            own = questions[s]
            for name, answers in baseline_answers(space, [(q.text, q.vector) for q in own]).items():
                systems.setdefault(name, []).extend(labelled(own, answers))
            for label, switch in variants.items():
                config = dataclasses.replace(RecallConfig(**dict(cfg.recall)), **switch)
                engine = Engine(
                    root / label.replace(" ", "_"), space, embedder, config, cfg.seed, blinds,
                    sleep=label == SLEPT,
                )
                blinds.prepare(engine.store, [q.text for q in [*own, *novel[s]]])
                answers = []
                for q in own:
                    answer, seconds = engine.answer(q.text, q.vector)
                    answers.append(answer)
                    if label == "engine":
                        engine_s.append(seconds)
                        cosine_s.append(timed_cosine(space.turn_vectors, q.vector, max(KS)))
                systems.setdefault(label, []).extend(labelled(own, answers))
                accepted.setdefault(label, []).extend(
                    a.accepted for q, a in zip(own, answers, strict=True) if q.category in ANSWERABLE
                )
                if label == SLEPT:
                    sleeps.append(engine.sleep_s)
                if label == "engine":
                    ingest.append(
                        {
                            "conversation": space.conversation.name,
                            "turns": len(space.conversation.turns),
                            "ingest_s": engine.ingest_s,
                        }
                    )
                    own_answers.append(list(zip(own, answers, strict=True)))
                    novel_answers.append([(q, engine.answer(q.text, q.vector)[0]) for q in novel[s]])
                    engines.append(engine)
                else:
                    engine.close()
        default = verdicts(
            [x for rows in own_answers for x in rows], [a for rows in novel_answers for _, a in rows]
        )
        crossed, folds = cross_fitted(engines, own_answers, novel_answers)
        all_questions = [q for qs in questions for q in qs if q.category in ANSWERABLE]
        scale = latency_at_scale(
            spaces,
            all_questions,
            embedder,
            cfg.latency_episodes,
            cfg.latency_queries,
            root / "latency",
            cfg.seed,
            rng,
            blinds,
        )
        if args.fit_default is not None:
            gate = default_gate_record(own_answers, novel_answers, conversations, files, args.gate_threshold)
            atomic_write_text(args.fit_default, to_json(gate))
            run.write_json("default_gate.json", gate)
        for engine in engines:
            engine.close()

    figures = {name: retrieval_figures(rows) for name, rows in systems.items()}
    for label, flags in accepted.items():
        figures[label]["answerable_accepted"] = float(np.mean(flags)) if flags else None
    baselines = {name: figures[name] for name in ("cosine", "bm25", "fusion")}
    engine_rows = systems["engine"]
    at_size = latency_figures(engine_s, cosine_s)
    issues = [i for c in conversations for i in c.evidence_issues]
    results: dict[str, Any] = {
        "command": " ".join(["benchmarks/store_locomo.py", *(sys.argv[1:] if argv is None else argv)]),
        "conversations": [c.name for c in conversations],
        "text_embedded": cfg.text_embedded,
        "text_bm25": cfg.text_bm25,
        **{k: v for k, v in figures["engine"].items()},
        **default.figures(),
        "gate": "default: the gate the engine ships for this embedder (the prior where it ships none)",
        "default_gate": shipped_gate(embedder, conversations, files),
        "cross_fitted": {"folds": folds}
        if crossed is None
        else {
            "gate": "leave one conversation out: fitted on the others, evaluated on the held-out one",
            **crossed.figures(),
            "operating_points": crossed.operating_points(),
            "folds": folds,
        },
        "latency_p50_ms": scale["engine_p50_ms"],
        "latency_p95_ms": scale["engine_p95_ms"],
        "baseline_p50_ms": scale["cosine_p50_ms"],
        "baseline_ratio_p50": scale["ratio_p50"],
        "latency": {"at_scale": scale, "per_conversation": at_size},
        "ingest": {
            "embedding_s": embeddings.seconds,
            "embeddings_cached": embeddings.cached,
            "store_s": float(sum(r["ingest_s"] for r in ingest)),
            "sleep_s": float(sum(sleeps)),
            "per_conversation": ingest,
        },
        "baselines": baselines,
        "per_conversation": per_conversation(conversations, questions, systems),
        "ablations": {name: figures[name] for name in variants if name != "engine"},
        "vs_best_baseline": {
            f"recall_at_{k}": paired_difference(
                engine_rows, {b: systems[b] for b in baselines}, k, cfg.bootstrap, cfg.seed
            )
            for k in (10, 1)
        },
        "malformed_evidence": len(issues),
        "evidence_issues": {
            "repaired": sum(i.action == "repaired" for i in issues),
            "skipped": sum(i.action == "skipped" for i in issues),
            "items": [
                {
                    "conversation": c.name,
                    "question": i.question,
                    "raw": i.raw,
                    "action": i.action,
                    "result": list(i.result),
                }
                for c in conversations
                for i in c.evidence_issues
            ],
        },
        "questions_without_evidence": sum(
            1 for c in conversations for q in c.questions if q.category in ANSWERABLE and not q.evidence
        ),
        "reliability": {
            "default": default.reliability(),
            "cross_fitted": None if crossed is None else crossed.reliability(),
        },
    }
    results["wall_s"] = time.perf_counter() - began
    if args.json is not None:
        atomic_write_text(args.json, to_json(results))
    report(run, results, systems)
    print(
        f"recall@10 {results['recall_at_10']:.3f}  recall@1 {results['recall_at_1']:.3f}  "
        f"wall {results['wall_s']:.0f} s  run folder {run.path}"
    )
    return results


def per_conversation(
    conversations: Sequence[Conversation],
    questions: Sequence[Sequence[Question]],
    systems: dict[str, list[tuple[int, Sequence[str], Answer]]],
) -> list[dict[str, Any]]:
    """recall@1 and @10 of the engine and the baselines on each conversation (rows are in order)."""
    rows, start = [], 0
    for conversation, asked in zip(conversations, questions, strict=True):
        end = start + sum(q.category in ANSWERABLE for q in asked)
        row: dict[str, Any] = {"conversation": conversation.name, "questions": end - start}
        for name in ("engine", "cosine", "bm25", "fusion"):
            part = systems[name][start:end]
            for k in (1, 10):
                row[f"{name} r@{k}"] = (
                    float(np.mean([recall_at(a.ranked, e, k) for _, e, a in part])) if part else None
                )
        rows.append(row)
        start = end
    return rows


def shipped_gate(
    embedder: Embedder, conversations: Sequence[Conversation], files: dict[str, Path]
) -> dict[str, Any]:
    """Which shipped gate the default is, and which of these conversations it was fitted on."""
    from importlib import resources

    entry = resources.files("engram.store").joinpath("gates", gate_file_name(embedder.name))
    if not entry.is_file():
        return {"file": None, "in_sample": []}
    shipped = json.loads(entry.read_text())
    hashes = {f.get("sha256") for f in shipped.get("fitted_on", [])}
    in_sample = [c.name for c in conversations if _sha256(files[c.name]) in hashes]
    return {"file": entry.name, "fitted_on": len(hashes), "in_sample": in_sample}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def default_gate_record(
    own: Sequence[list[tuple[Question, Answer]]],
    novel: Sequence[list[tuple[Question, Answer]]],
    conversations: Sequence[Conversation],
    files: dict[str, Path],
    threshold: float,
) -> dict[str, Any]:
    """The gate fitted on every given conversation's questions (``GateModel.to_state`` fields),
    with what it was fitted on, so a rerun can tell in-sample conversations apart."""
    x = [a.features for rows in own for _, a in rows] + [a.features for rows in novel for _, a in rows]
    y = [gate_label(q, a) for rows in own for q, a in rows] + [0 for rows in novel for _ in rows]
    h = [holds_label(q) for rows in own for q, _ in rows] + [0 for rows in novel for _ in rows]
    f = [0 for rows in own for _ in rows] + [1 for rows in novel for _ in rows]
    model = fit_in_parts(np.array(x), np.array(y), np.array(h), np.array(f), threshold)
    return {
        **model.to_state(),
        "labels": GATE_LABELS,
        "fitted_on": [{"conversation": c.name, "sha256": _sha256(files[c.name])} for c in conversations],
        "positives": int(sum(y)),
    }


def report(run: RunFolder, results: dict[str, Any], systems: dict[str, list]) -> None:
    """Run folder: results JSON/CSV, reliability and per-category plots, a Markdown report."""
    run.write_json("results.json", results)
    table = []
    for name in ["engine", *results["ablations"], *results["baselines"]]:
        f = results if name == "engine" else results["ablations"].get(name) or results["baselines"][name]
        row = {"system": name, **{f"{m}@{k}": f[f"{m}_at_{k}"] for m in ("recall", "hit") for k in KS}}
        row.update({f"cat{c} r@10": f["by_category"][str(c)]["recall_at_10"] for c in ANSWERABLE})
        table.append(row)
    run.write_csv("systems.csv", table)
    gates = [("default gate", results)] + (
        [("cross-fitted gate", results["cross_fitted"])] if "ece" in results["cross_fitted"] else []
    )
    refusal = [
        {
            "gate": label,
            **{
                k: g[k]
                for k in (
                    "answerable_accepted",
                    "answerable_retrieved_accepted",
                    "adversarial_refused",
                    "novel_refused",
                    "auroc_adversarial",
                    "auroc_novel",
                    "ece",
                )
            },
        }
        for label, g in gates
    ]
    run.write_csv("refusal.csv", refusal)
    run.write_csv("per_conversation.csv", results["per_conversation"])

    figure, axes = plt.subplots(1, len(gates), figsize=(4.5 * len(gates), 4), squeeze=False)
    for ax, (label, g) in zip(axes[0], gates, strict=True):
        bins = results["reliability"]["default" if label == "default gate" else "cross_fitted"]
        filled = [b for b in bins if b["count"]]
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.bar(
            [b["low"] for b in filled],
            [b["accuracy"] for b in filled],
            width=0.1,
            align="edge",
            alpha=0.6,
            edgecolor="black",
            label="share correct",
        )
        ax.plot(
            [b["confidence"] for b in filled],
            [b["accuracy"] for b in filled],
            "o-",
            color="C3",
            label="mean confidence",
        )
        ax.set(
            title=f"{label}: ECE {g['ece']:.3f}",
            xlabel="confidence",
            ylabel="top result is evidence",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        ax.legend(loc="upper left", fontsize=8)
    run.save_figure("reliability.png", figure)

    figure, ax = plt.subplots(figsize=(8, 4))
    names = ["engine", "cosine", "bm25", "fusion"]
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        f = results if name == "engine" else results["baselines"][name]
        ax.bar(
            np.arange(4) + j * width,
            [f["by_category"][str(c)]["recall_at_10"] or 0 for c in ANSWERABLE],
            width,
            label=name,
        )
    ax.set_xticks(np.arange(4) + 0.4 - width / 2, [CATEGORIES[c] for c in ANSWERABLE])
    ax.set(ylabel="evidence recall@10", ylim=(0, 1), title="LoCoMo, categories 1–4")
    ax.legend()
    run.save_figure("recall_by_category.png", figure)

    d10, d1 = results["vs_best_baseline"]["recall_at_10"], results["vs_best_baseline"]["recall_at_1"]
    lat = results["latency"]
    issues = results["evidence_issues"]
    lines = [
        "# LoCoMo: evidence recall and refusal",
        "",
        f"Command: `{results['command']}`  ",
        f"Conversations: {', '.join(results['conversations'])}; wall time {results['wall_s']:.0f} s.  ",
        f"Embedded: `{results['text_embedded']}`; BM25 indexes `{results['text_bm25']}`.",
        "",
        "## Retrieval (categories 1–4)",
        "",
        markdown_table(table),
        "",
        f"Engine − best baseline, paired bootstrap 95%: recall@10 {d10['difference']:+.3f} "
        f"[{d10['low']:+.3f}, {d10['high']:+.3f}] vs {d10['baseline']}; recall@1 {d1['difference']:+.3f} "
        f"[{d1['low']:+.3f}, {d1['high']:+.3f}] vs {d1['baseline']}.",
        "",
        "Per conversation:",
        "",
        markdown_table(results["per_conversation"]),
        "",
        "## Refusal",
        "",
        "Label: an answerable question is 1 when the top result is one of its evidence turns, else 0; "
        "category 5 and other conversations' questions are 0.",
        "",
        markdown_table(refusal),
        "",
        "## Latency (recall, excluding the query embedding)",
        "",
        markdown_table(
            [
                {"space": f"{lat['at_scale']['episodes']} rows, 1 thread", **lat["at_scale"]},
                {"space": "conversation size", **lat["per_conversation"]},
            ]
        ),
        "",
        f"Ingest (store writes, embeddings given): {results['ingest']['store_s']:.2f} s; "
        f"embedding this run {results['ingest']['embedding_s']:.1f} s "
        f"({results['ingest']['embeddings_cached']} conversations from the cache).",
        "",
        f"Malformed evidence ids: {results['malformed_evidence']} "
        f"({issues['repaired']} repaired, {issues['skipped']} skipped).",
        "",
        "![reliability](reliability.png)",
        "",
        "![recall by category](recall_by_category.png)",
        "",
    ]
    run.write_report("\n".join(lines))


if __name__ == "__main__":
    main()
