"""Recall answers are what they were: a fixed set of recalls over synthetic chat (and a few LoCoMo
conversations) keeps its ids, order, status, scores and confidence, as recorded on the code before
the hot path was rewritten for speed (``recall_parity.json``; ``python <this file> --record``
rewrites it, only ever on purpose)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from engram.store import HashingEmbedder, MemoryStore, RecallConfig
from engram.store.lexical import BM25Index, tokens

GOLDEN = Path(__file__).with_name("recall_parity.json")
PEOPLE = ("Ada", "Ben", "Cleo", "Dev")
PLACES = ("Lisbon", "Oslo", "Kyoto", "Lima", "Accra", "Quito")
THINGS = ("guitar", "garden", "puppy", "novel", "bike", "painting", "recipe", "camera", "boat", "course")
VERBS = ("bought", "started", "finished", "loved", "lost", "found", "shared", "planned")


def recorded(**changes: bool) -> RecallConfig:
    """The settings the golden answers were recorded with: the defaults of the time (a speaker
    bonus of 0.3, speaker agreement judged from the cue itself) with ``changes``."""
    return RecallConfig(speaker_weight=0.3, blind_speakers=False, **changes)


def synthetic_chat(n: int = 480) -> list[tuple[str, str, int, str]]:
    """(id, speaker, session, text): two-speaker sessions of 12 turns, every text distinct,
    first- and second-person turns, names and places for the entity links."""
    rng = np.random.default_rng(7)
    turns = []
    for i in range(n):
        session = i // 12
        who = PEOPLE[(session % 2) * 2 + i % 2]
        thing, verb, place = (THINGS[rng.integers(len(THINGS))], VERBS[rng.integers(len(VERBS))],
                              PLACES[rng.integers(len(PLACES))])
        form = rng.integers(3)
        text = (f"I {verb} my {thing} in {place} on day {i}" if form == 0 else
                f"Wow, you {verb} a {thing} near {place}? That was day {i}" if form == 1 else
                f"We talked about the {thing} and {place} for {i} minutes")
        turns.append((f"c{i}", who, session, text))
    return turns


def locomo_chat(folder: Path, conversations: int = 2) -> list[tuple[str, str, str, str]]:
    """(id, speaker, session, text) of the first turns of a few LoCoMo conversations."""
    turns = []
    for path in sorted(folder.glob("*.json"))[:conversations]:
        conv = json.loads(path.read_text())
        for key, value in conv.items():
            if re.fullmatch(r"session_\d+", key):
                turns += [(f"{path.stem}:{t['dia_id']}", t["speaker"], f"{path.stem}/{key}", t["text"])
                          for t in value if t.get("text")]
    return turns


def questions(rng: np.random.Generator, count: int) -> list[str]:
    asks = ("What did {p} say about the {t}?", "Where did {p} buy the {t}?",
            "When was the {t} in {l}?", "Did {p} ever visit {l}?", "Who lost a {t} in {l}?")
    out = []
    for _ in range(count):
        ask = asks[rng.integers(len(asks))]
        person, thing = PEOPLE[rng.integers(4)], THINGS[rng.integers(len(THINGS))]
        out.append(ask.format(p=person, t=thing, l=PLACES[rng.integers(len(PLACES))]))
    return out


def build(path: Path, turns: list, dim: int, sleep: bool) -> None:
    with MemoryStore(path, embedder=HashingEmbedder(dim), durable=False) as store:
        store.add_batch(texts=[t[3] for t in turns], who=[t[1] for t in turns],
                        sessions=[t[2] for t in turns], ids=[t[0] for t in turns],
                        timestamps=[1000.0 + 60.0 * i for i in range(len(turns))])
        store.delete([t[0] for t in turns[5::37]])
        if sleep:
            store.sleep()


def answer(result) -> dict:
    return {"status": result.status, "decided_by": result.decided_by, "confidence": result.confidence,
            "ids": [r.episode.id for r in result.episodes],
            "scores": [r.score for r in result.episodes],
            "masked_cosine": [r.masked_cosine for r in result.episodes],
            "attention": [r.attention for r in result.episodes],
            "features": result.trace.get("features", {})}


def recalls(path: Path, dim: int, extra_questions: list[str]) -> dict[str, list[dict]]:
    """Every variant's answers to the fixed cues (vector + text, text only, filters, partial cues)."""
    rng = np.random.default_rng(11)
    embedder = HashingEmbedder(dim)
    asked = questions(rng, 24) + extra_questions
    vectors = embedder.embed(asked)
    out: dict[str, list[dict]] = {}
    variants = {"default": recorded(), "no graph": recorded(graph=False),
                "no lexical": recorded(lexical=False), "no completion": recorded(completion=False),
                "no dense": recorded(dense=False), "separation": recorded(separation=True)}
    for name, config in variants.items():
        with MemoryStore(path, embedder=embedder, config=config) as store:
            got = [store.recall(v, k=10, text=t) for v, t in zip(vectors, asked, strict=True)]
            got += store.recall_batch(vectors[:6], k=10, texts=asked[:6])
            got += [store.recall(asked[0], k=5), store.recall(asked[1], k=10, where={"who": ["Ada", "Ben"]}),
                    store.recall(vectors[2], k=10, text=asked[2], since=1000.0 + 60 * 100),
                    store.recall(vectors[3], k=10)]
            known = np.random.default_rng(3).random((4, dim)) < 0.5
            got += store.recall_batch(vectors[4:8], k=10, known=known, texts=asked[4:8])
            out[name] = [answer(r) for r in got]
    return out


def vector_recalls(path: Path) -> dict[str, list[dict]]:
    """A vector-only space (no text, no sessions): it calibrates its own gate on held-out cues
    (the excluded-row path), then answers full and partial cues (Hopfield completion)."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((12, 48))
    vectors = (centres[rng.integers(12, size=300)] + 0.6 * rng.standard_normal((300, 48))).astype(np.float32)
    cues = vectors[::7] + 0.3 * rng.standard_normal(vectors[::7].shape).astype(np.float32)
    known = rng.random(cues.shape) < 0.6
    out: dict[str, list[dict]] = {}
    for name, config in {"default": recorded(), "no completion": recorded(completion=False)}.items():
        with MemoryStore(path / name, dim=48, config=config, durable=False) as store:
            store.add_batch(vectors, ids=[f"v{i}" for i in range(len(vectors))])
            store.delete([f"v{i}" for i in range(0, 300, 29)])
            got = store.recall_batch(cues, k=8) + store.recall_batch(cues, k=8, known=known)
            out[name] = [answer(r) for r in got]
    return out


def cases(data: Path | None) -> dict[str, tuple[list, int, list[str]]]:
    found = {"synthetic": (synthetic_chat(), 128, [])}
    if data is not None and (data / "locomo").is_dir():
        turns = locomo_chat(data / "locomo")
        found["locomo"] = (turns, 384, [t[3] for t in turns[3::211]])
    return found


def check_same(got: list[dict], want: list[dict], label: str, confidence_tol: float = 1e-6) -> None:
    assert len(got) == len(want), label
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        where = f"{label} recall {i}"
        assert (g["status"], g["decided_by"], g["ids"]) == (w["status"], w["decided_by"], w["ids"]), where
        assert g["confidence"] == pytest.approx(w["confidence"], abs=confidence_tol), where
        for key in ("scores", "masked_cosine", "attention"):
            assert np.allclose(g[key], w[key], atol=1e-5, rtol=0), f"{where}: {key}"
        # Features added since the recording (strangers_only) have no recorded value to compare.
        assert g["features"].keys() - w["features"].keys() <= {"strangers_only"}, where
        assert w["features"].keys() <= g["features"].keys(), where
        for name, value in w["features"].items():
            assert g["features"][name] == pytest.approx(value, abs=1e-5), f"{where}: feature {name}"


def test_vector_recall_answers_are_unchanged(tmp_path):
    golden = json.loads(GOLDEN.read_text())["vectors"]
    got = vector_recalls(tmp_path)
    assert got.keys() == golden.keys()
    for variant, answers in got.items():
        # a vector space fits its own gate (an iterative solver, run to its optimum: refits from
        # inputs that differ by float32 rounding agree to ~1e-6); confidence to 1e-4, the rest exactly
        check_same(answers, golden[variant], f"vectors/{variant}", confidence_tol=1e-4)


@pytest.mark.parametrize("case", ["synthetic", "locomo"])
def test_recall_answers_are_unchanged(tmp_path, case, request):
    golden = json.loads(GOLDEN.read_text())
    data = request.getfixturevalue("data_dir") if case == "locomo" else None
    turns, dim, extra = cases(data)[case]
    build(tmp_path / "s", turns, dim, sleep=case == "synthetic")
    got = recalls(tmp_path / "s", dim, extra)
    assert got.keys() == golden[case].keys()
    for variant, answers in got.items():
        check_same(answers, golden[case][variant], f"{case}/{variant}")


def test_bm25_scores_match_the_formula_term_by_term():
    """The BM25 scan equals Okapi BM25 written out per row and term, after deletions too."""
    texts = [t[3] for t in synthetic_chat(200)] + ["", "guitar guitar guitar Lisbon"]
    index = BM25Index()
    index.append(texts[:150])
    index.append(texts[150:])
    index.remove([3, 40, 41])
    cue = index.query_terms("Did Ada buy a guitar in Lisbon after day 12?")
    got, ceiling = index.scores(cue, len(texts))
    rows = [i for i in range(len(texts)) if index.alive[i]]
    bags = {i: tokens(texts[i]) for i in rows}
    avg = np.mean([len(bags[i]) for i in rows])
    vocabulary = {term: word for word, term in index.vocabulary.items()}
    want, want_ceiling = np.zeros(len(texts)), 0.0
    for term in cue:
        holding = [i for i in rows if vocabulary[term] in bags[i]]
        if not holding:
            continue
        idf = np.log1p((len(rows) - len(holding) + 0.5) / (len(holding) + 0.5))
        want_ceiling += idf * 2.2
        for i in holding:
            tf = bags[i].count(vocabulary[term])
            want[i] += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(bags[i]) / avg))
    assert ceiling == pytest.approx(want_ceiling, rel=1e-6)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got[[3, 40, 41]].tolist() == [0.0, 0.0, 0.0] and got.max() > 0


def record(data: Path) -> None:
    """Rewrite the golden answers from the code as it is now."""
    import tempfile

    out = {}
    for case, (turns, dim, extra) in cases(data).items():
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp) / "s", turns, dim, sleep=case == "synthetic")
            out[case] = recalls(Path(tmp) / "s", dim, extra)
    with tempfile.TemporaryDirectory() as tmp:
        out["vectors"] = vector_recalls(Path(tmp))
    GOLDEN.write_text(json.dumps(_rounded(out), separators=(",", ":")) + "\n")


def _rounded(value):
    """Floats to 9 decimals (far below the tolerances), so the file stays small."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__" and "--record" in sys.argv:
    from engram.data import data_root

    record(data_root())


def test_a_full_cache_of_recalled_episodes_drops_no_answer(tmp_path, monkeypatch):
    """When reading the uncached episodes overflows the cache, the cached ones stay in the answer."""
    monkeypatch.setattr("engram.store.memory._CACHE_MAX", 6)
    texts = [t[3] for t in synthetic_chat(8)]
    with MemoryStore(tmp_path, embedder=HashingEmbedder(64), durable=False,
                     config=RecallConfig(threshold=0.0)) as store:
        store.add_batch(texts=texts[:4], ids=[f"a{i}" for i in range(4)])  # cached as written
        store.add_batch(texts=texts[4:], ids=[f"b{i}" for i in range(4)])  # would overflow: not cached
        result = store.recall(texts[0], k=8)
    assert sorted(r.episode.id for r in result.episodes) == sorted([f"a{i}" for i in range(4)] +
                                                                   [f"b{i}" for i in range(4)])
    assert all(r.episode.text == texts[int(r.episode.id[1]) + 4 * (r.episode.id[0] == "b")]
               for r in result.episodes)
