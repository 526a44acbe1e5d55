"""MemoryStore on text: fields, hybrid recall, graph completion, filters, the gate and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from engram.store import GateModel, HashingEmbedder, MemoryStore, RecallConfig, fit_gate
from engram.store.pipeline import FEATURES

TURNS = [
    ("Ada", 1, "I adopted a puppy called Rex last week"),
    ("Bob", 1, "Congratulations! What breed is it?"),
    ("Ada", 1, "A golden retriever, he loves the park"),
    ("Bob", 2, "I started painting watercolour landscapes"),
    ("Ada", 2, "That sounds relaxing, do you sell them?"),
    ("Bob", 2, "Not yet, but a gallery asked about an exhibition"),
    ("Ada", 3, "My sister is moving to Lisbon for her new job"),
    ("Bob", 3, "Lisbon is lovely, the trams are famous"),
]


def text_store(path: Path, config: RecallConfig | None = None, **options) -> MemoryStore:
    store = MemoryStore(path, space="chat", embedder=HashingEmbedder(256), durable=False,
                        config=config or RecallConfig(), **options)
    if len(store) == 0:
        store.add_batch(texts=[t for _, _, t in TURNS], who=[w for w, _, _ in TURNS],
                        sessions=[s for _, s, _ in TURNS], timestamps=[100.0 * s for _, s, _ in TURNS],
                        ids=[f"t{i}" for i in range(len(TURNS))], tags=[["pets"]] * 3 + [["art"]] * 5)
    return store


class BadEmbedder:
    """An embedder that breaks its promise: the wrong dimension or NaN."""

    def __init__(self, dim: int, returns: int, nan: bool = False):
        self.name, self.dim, self.returns, self.nan = "bad", dim, returns, nan

    def embed(self, texts, batch_size=64, progress=False):
        out = np.ones((len(texts), self.returns), dtype=np.float32)
        if self.nan:
            out[0, 0] = np.nan
        return out


def test_text_and_fields_come_back_after_reopening(tmp_path):
    text_store(tmp_path / "s").close()
    with MemoryStore(tmp_path / "s", space="chat", embedder=HashingEmbedder(256)) as s:
        episode = s.get("t6")
        fields = (episode.text, episode.who, episode.session, episode.timestamp)
        assert fields == (TURNS[6][2], "Ada", 3, 300.0)
        top = s.recall("Where is Ada's sister moving for her job?", k=3).episodes[0].episode
        assert top.id == "t6" and top.text == TURNS[6][2] and top.who == "Ada"
        assert {e.id for e, _ in s.search_text("lisbon")} == {"t6", "t7"}
        assert s.export(tmp_path / "out.jsonl") == len(TURNS)
        records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
        assert {(r["text"], r["who"], r["session"]) for r in records} == set(
            (t, w, n) for w, n, t in TURNS)
        assert s.stats()["embedder"]["dim"] == 256


def test_a_space_refuses_another_embedder(tmp_path):
    text_store(tmp_path / "s").close()
    with pytest.raises(ValueError, match="dim"):
        MemoryStore(tmp_path / "s", space="chat", embedder=HashingEmbedder(128))
    other = HashingEmbedder(256)
    other.name = "another-model"
    with pytest.raises(ValueError, match="embedder: space 'chat' was made with hashing"):
        MemoryStore(tmp_path / "s", space="chat", embedder=other)
    # The offline embedder is recorded, so reopening without one still takes text.
    with MemoryStore(tmp_path / "s", space="chat") as s:
        assert s.recall("puppy Rex", k=1).episodes[0].episode.id == "t0"


def test_deleted_text_leaves_no_trace_in_fts_or_on_disk(tmp_path):
    with text_store(tmp_path / "s") as s:
        s.add(text="the vault code is zebracactus", who="Ada", session=4, id="secret")
        assert [e.id for e, _ in s.search_text("zebracactus")] == ["secret"]
        assert s.recall("vault code", k=1).episodes[0].episode.id == "secret"
        s.delete("secret")
        assert s.search_text("zebracactus") == []
        assert all(e.episode.id != "secret" for e in s.recall("vault code zebracactus", k=8).episodes)
        s.compact()
        assert s.search_text("zebracactus") == [] and len(s) == len(TURNS)
        assert {e.id for e, _ in s.search_text("lisbon")} == {"t6", "t7"}  # the rest still indexed
    for file in (tmp_path / "s").rglob("*"):
        if file.is_file():
            assert b"zebracactus" not in file.read_bytes(), file


def test_filters_apply_inside_the_search(tmp_path):
    with text_store(tmp_path / "s") as s:
        only_bob = s.recall("puppy Rex park", k=8, where={"who": "Bob"})
        assert only_bob.episodes and {e.episode.who for e in only_bob.episodes} == {"Bob"}
        assert len(only_bob.episodes) == 4  # every Bob turn, nothing else, even with k=8
        session = s.recall("Lisbon trams", k=8, where={"session": [2, 3]})
        assert {e.episode.session for e in session.episodes} == {2, 3}
        assert {e.episode.id for e in s.recall("anything", k=8, where={"tags": "pets"}).episodes} == {
            "t0", "t1", "t2"}
        late = s.recall("painting", k=8, since=200.0, until=250.0)
        assert {e.episode.id for e in late.episodes} == {"t3", "t4", "t5"}
        nobody = s.recall("painting", where={"who": "Carol"})
        assert nobody.status == "insufficient_evidence" and nobody.episodes == []
        with pytest.raises(ValueError, match="where: unknown field 'speaker'"):
            s.recall("painting", where={"speaker": "Bob"})
        with pytest.raises(TypeError, match="where: session expects int or str"):
            s.recall("painting", where={"session": 2.5})
        with pytest.raises(TypeError, match="where: expected a dict"):
            s.recall("painting", where=["who", "Bob"])


def test_a_refusal_carries_its_ranked_candidates(tmp_path):
    with text_store(tmp_path / "s", RecallConfig(threshold=1.0)) as s:
        result = s.recall("What breed is Ada's puppy?", k=3)
        assert result.status == "insufficient_evidence" and not result.accepted
        assert result.decided_by == "gate"
        assert len(result.episodes) == 3 and result.episodes[0].episode.text
        assert set(result.trace["features"]) == set(FEATURES)


def test_recall_is_read_only_by_default(tmp_path):
    with text_store(tmp_path / "s", RecallConfig(threshold=0.0)) as s:
        before = {e.id: (e.stability, e.recalls) for e in s.iter_episodes()}
        first = [[e.episode.id for e in r.episodes] for r in s.recall_batch(["puppy", "Lisbon"] * 5, k=4)]
        assert s.recall("puppy").accepted
        again = [[e.episode.id for e in r.episodes] for r in s.recall_batch(["puppy", "Lisbon"] * 5, k=4)]
        s.close()
    with MemoryStore(tmp_path / "s", space="chat") as s:
        assert {e.id: (e.stability, e.recalls) for e in s.iter_episodes()} == before
    assert first == again
    with text_store(tmp_path / "s", RecallConfig(threshold=0.0, strengthen_on_recall=True)) as s:
        s.recall("puppy Rex")
        s.close()
    with MemoryStore(tmp_path / "s", space="chat") as s:
        assert s.get("t0").recalls == 1  # the option still strengthens what recall found


def test_graph_completion_brings_the_turn_that_belongs_with_the_match(tmp_path):
    # "What breed" matches t1 (Bob's question); the answer, t2, shares no word with the cue.
    cue = "What breed is it?"
    with text_store(tmp_path / "a", RecallConfig(threshold=0.0, speaker_weight=0.0)) as s:
        with_graph = [e.episode.id for e in s.recall(cue, k=3).episodes]
    with text_store(tmp_path / "b", RecallConfig(threshold=0.0, speaker_weight=0.0, graph=False)) as s:
        without = [e.episode.id for e in s.recall(cue, k=3).episodes]
    assert with_graph[0] == without[0] == "t1"
    assert with_graph.index("t2") < (without.index("t2") if "t2" in without else 99)


def test_bad_text_input_is_a_clear_error_and_stores_nothing(tmp_path):
    with text_store(tmp_path / "s") as s:
        with pytest.raises(ValueError, match="texts: entry 1 is empty"):
            s.add_batch(texts=["fine", "  "])
        with pytest.raises(ValueError, match="texts: entry 0 has 40000 characters"):
            s.add(text="x" * 40_000)
        with pytest.raises(TypeError, match="texts: entry 0 is int"):
            s.add_batch(texts=[3])
        with pytest.raises(TypeError, match="who: expected str"):
            s.add(text="hello", who=7)
        with pytest.raises(ValueError, match="who: expected 1-128 characters"):
            s.add(text="hello", who="")
        with pytest.raises(ValueError, match="sessions: expected 3 entries"):
            s.add_batch(texts=["a", "b", "c"], sessions=[1, 2])
        assert len(s) == len(TURNS)
    for embedder, match in ((BadEmbedder(256, 128), r"returned shape \(1, 128\)"),
                            (BadEmbedder(256, 256, nan=True), "returned NaN")):
        with MemoryStore(tmp_path / "bad", space="b", embedder=embedder, durable=False) as s:
            with pytest.raises(ValueError, match=f"embedder: bad {match}"):
                s.add(text="hello there")
            assert len(s) == 0 and s.search_text("hello") == []
    with text_store(tmp_path / "s") as s, pytest.raises(ValueError, match="text: a text cue is its own text"):
        s.recall("puppy", text="something else")
    with MemoryStore(tmp_path / "vectors", dim=8, durable=False) as s:
        s.add(np.ones(8))
        with pytest.raises(ValueError, match="cues: text needs an embedder"):
            s.recall("a text cue")


def test_sleep_prototypes_without_text_never_take_result_slots(tmp_path):
    with text_store(tmp_path / "s", RecallConfig(threshold=0.0)) as s:
        rng = np.random.default_rng(0)
        base = HashingEmbedder(256).embed(["puppy park walk"])[0]
        s.add_batch(np.stack([base + 0.01 * rng.standard_normal(256) for _ in range(6)]).astype(np.float32),
                    texts=[f"walked the puppy in the park, day {i}" for i in range(6)], who="Ada",
                    sessions=[5] * 6)
        report = s.sleep(cluster_threshold=0.9, min_cluster=3)
        assert report.prototypes_created >= 1 and s.stats()["semantic"] >= 1
        kinds = {e.episode.kind for e in s.recall("puppy park walk", k=10).episodes}
        assert kinds == {"episode"}


def test_a_gate_fitted_on_one_split_is_calibrated_on_another_and_persists(tmp_path):
    rng = np.random.default_rng(3)
    n = 4000
    x = rng.standard_normal((n, len(FEATURES)))
    p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.5 * x[:, 8] - 0.5)))
    y = rng.random(n) < p
    gate = fit_gate(x[: n // 2], y[: n // 2], threshold=0.3)
    held = gate.confidence(x[n // 2 :])
    bins = np.digitize(held, [0.2, 0.4, 0.6, 0.8])
    for b in np.unique(bins):
        inside = bins == b
        mean = held[inside].mean()
        # within 3.5 standard errors of the bin's count (the split is random), plus 0.02
        tolerance = 3.5 * np.sqrt(mean * (1 - mean) / inside.sum()) + 0.02
        assert abs(mean - y[n // 2 :][inside].mean()) < tolerance
    with text_store(tmp_path / "s") as s:
        assert not s.gate.calibrated
        s.set_gate(gate)
        features = s.gate_features(s.recall_batch(["puppy", "Lisbon"], k=2))
        assert features.shape == (2, len(FEATURES))
    with MemoryStore(tmp_path / "s", space="chat") as s:
        assert s.gate == gate and s.recall("puppy").trace["threshold"] == 0.3
        assert json.loads(json.dumps(s.gate.to_state())) == gate.to_state()
    with pytest.raises(ValueError, match="features: expected shape"):
        fit_gate(x[:, :3], y)
    with pytest.raises(ValueError, match="labels: calibration needs both"):
        fit_gate(x[:10], np.ones(10))
    with pytest.raises(TypeError, match="model: expected a GateModel"):
        MemoryStore(tmp_path / "s", space="chat").set_gate({"coef": [1.0]})
    foreign = {"coef": [1.0, 2.0], "intercept": 0.0, "features": ["x", "y"]}
    assert GateModel.from_state(foreign) == GateModel.prior()


def test_text_the_embedder_cannot_place_is_refused_by_name(tmp_path):
    with text_store(tmp_path / "s") as s:
        before = len(s)
        with pytest.raises(ValueError, match=r"text: .* zero vector"):
            s.add(text="!!! ???")
        with pytest.raises(ValueError, match=r"text: .*entry 1 .* zero vector"):
            s.add_batch(texts=["a fine turn", "日本語"])
        with pytest.raises(ValueError, match=r"cues: .* zero vector"):
            s.recall("!!!")
        assert len(s) == before


def test_sleep_keeps_the_gate_a_text_space_was_given(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, len(FEATURES)))
    gate = fit_gate(x, x[:, 0] > 0, threshold=0.3)
    with text_store(tmp_path / "s", RecallConfig(min_calibration=8)) as s:
        s.add_batch(texts=[f"turn {i} about topic {i % 7}" for i in range(40)], who="Ada")
        s.set_gate(gate)
        s.sleep()
        assert s.gate == gate
    with MemoryStore(tmp_path / "s", space="chat", config=RecallConfig(min_calibration=8)) as s:
        s.sleep()
        assert s.gate == gate


def test_locomo_turns_with_a_sentence_transformer(tmp_path, data_dir):
    from engram.store import SentenceTransformerEmbedder

    model = data_dir / "models" / "all-MiniLM-L6-v2"
    if not model.is_dir():
        pytest.skip(f"{model} is absent")
    conversation = json.loads((data_dir / "locomo" / "conv-26.json").read_text())
    turns = conversation["session_1"][:12]
    embedder = SentenceTransformerEmbedder(model, device="cpu")
    with MemoryStore(tmp_path / "s", space="conv", embedder=embedder, durable=False) as s:
        s.add_batch(texts=[t["text"] for t in turns], who=[t["speaker"] for t in turns],
                    sessions=[1] * len(turns), ids=[t["dia_id"] for t in turns])
        assert s.stats()["episodes"] == len(turns)
        question = next(q for q in conversation["qa"] if q["evidence"] == ["D1:3"])
        top = [e.episode.id for e in s.recall(question["question"], k=3).episodes]
        assert "D1:3" in top
    with pytest.raises(ValueError, match="embedder: space 'conv' was made with sentence-transformers"):
        MemoryStore(tmp_path / "s", space="conv", embedder=HashingEmbedder(embedder.dim))


INGEST_TEXT = textwrap.dedent(
    """
    import sys
    from engram.store import HashingEmbedder, MemoryStore
    store = MemoryStore(sys.argv[1], space="chat", embedder=HashingEmbedder(64))
    for b in range(100000):
        store.add_batch(texts=[f"batch{b}word turn {j}" for j in range(10)], who="Ada",
                        sessions=[b] * 10, ids=[f"{b}-{j}" for j in range(10)])
        if b % 3 == 2:
            store.delete([f"{b - 1}-{j}" for j in range(10)])
        print(b, flush=True)
    """
)


def test_text_index_agrees_with_the_rows_after_kill_9(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-c", INGEST_TEXT, str(tmp_path / "s")],
                               stdout=subprocess.PIPE, text=True, env=env)
    done = []
    for line in process.stdout:
        done.append(int(line))
        if len(done) >= 30:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    with MemoryStore(tmp_path / "s", space="chat") as s:
        assert s.check() == []
        for b in done:
            deleted = b % 3 == 1 and b + 1 in done
            found = {e.id for e, _ in s.search_text(f"batch{b}word", k=20)}
            assert found == (set() if deleted else {f"{b}-{j}" for j in range(10)}), b
        ids = {e.id for e in s.iter_episodes()}
        assert all(s.get(i).text.startswith("batch") for i in ids)
        s.compact()
        assert s.check() == []


def test_sleep_links_episodes_naming_the_same_thing_and_recall_follows_them(tmp_path):
    with text_store(tmp_path / "s", RecallConfig(threshold=0.0, speaker_weight=0.0)) as s:
        s.add_batch(texts=["I booked flights for June, we fly to Zanzibar", "Enjoy the beaches of Zanzibar"],
                    who=["Ada", "Bob"], sessions=[7, 9], ids=["trip", "beach"])
        s.add_batch(texts=[f"filler turn number {i} about nothing much" for i in range(6)], who="Bob",
                    sessions=[8] * 6)
        cue = "When are the flights booked for June?"
        before = {e.episode.id: e.score for e in s.recall(cue, k=16).episodes}
        s.sleep()
        assert any(k.kind == "entity" and {k.src, k.dst} == {"trip", "beach"} for k in s.links("trip"))
        after = {e.episode.id: e.score for e in s.recall(cue, k=16).episodes}
    with text_store(tmp_path / "s", RecallConfig(threshold=0.0, speaker_weight=0.0, graph=False)) as s:
        unlinked = {e.episode.id: e.score for e in s.recall(cue, k=16).episodes}
    assert max(after, key=after.get) == "trip"
    # The other mention, sessions apart, gains a share of the match's score.
    assert after["beach"] > before["beach"] + 0.05
    assert unlinked["beach"] < before["beach"]


def test_a_gate_shipped_for_the_embedder_is_used_until_the_space_has_its_own(tmp_path, monkeypatch):
    import engram.store.gate as gate_module

    shipped = GateModel(tuple(float(i) for i in range(len(FEATURES))), -3.0, True, 100, FEATURES, 0.25)
    folder = tmp_path / "gates"
    folder.mkdir()
    name = HashingEmbedder(256).name
    (folder / gate_module.gate_file_name(name)).write_text(json.dumps(shipped.to_state()))
    monkeypatch.setattr(gate_module, "GATES", folder)
    with text_store(tmp_path / "s") as s:
        assert s.gate == shipped and s.recall("puppy").trace["threshold"] == 0.25
        own = fit_gate(np.random.default_rng(0).standard_normal((50, len(FEATURES))), np.arange(50) % 2 == 0)
        s.set_gate(own)
    with MemoryStore(tmp_path / "s", space="chat") as s:
        assert s.gate == own  # the space's own gate wins over the shipped one
    with MemoryStore(tmp_path / "v", dim=8) as s:
        assert not s.gate.calibrated  # a vector space without an embedder keeps the prior


def test_the_blind_cue_leaves_out_the_speakers_a_question_names(tmp_path):
    with text_store(tmp_path / "s") as s:
        blind = s.blind_text("What did Ada's sister and ADA do?")
        assert blind == "What did someone's sister and someone do?"
        assert s.blind_text("Where is Adam going?") == "Where is Adam going?"  # a longer name is not Ada
        assert s.blind_text("Bob's paintings") == "someone's paintings"


class TwoWorlds:
    """An embedder in which a speaker's name outweighs everything else: "who: text" and a
    question naming that speaker meet on the name, whatever the question asks."""

    name, dim = "two-worlds", 4

    def embed(self, texts, batch_size=64, progress=False):
        out = np.zeros((len(texts), 4), dtype=np.float32)
        for i, text in enumerate(texts):
            lowered = text.lower()
            out[i, 0] = 3.0 * ("ada" in lowered)
            out[i, 1] = 3.0 * ("bob" in lowered)
            out[i, 2] = "puppy" in lowered
            out[i, 3] = "paint" in lowered or not out[i, :3].any()
        return out


def test_who_told_it_is_judged_from_the_blind_cue(tmp_path):
    # Bob tells his own painting news; asked "what did Ada paint?", the name pulls the full cue
    # to Ada's turns, while the blind cue ("what did someone paint?") finds Bob's first-person turn.
    config = RecallConfig(lexical=False, graph=False)
    with MemoryStore(tmp_path / "s", space="c", embedder=TwoWorlds(), durable=False, config=config) as s:
        s.add_batch(texts=["I adopted a puppy", "I started to paint landscapes"], who=["Ada", "Bob"],
                    ids=["a", "b"])
        blind = s.recall("What did Ada paint?").trace["features"]
    off = RecallConfig(lexical=False, graph=False, blind_speakers=False)
    with MemoryStore(tmp_path / "s", space="c", embedder=TwoWorlds(), durable=False, config=off) as s:
        named = s.recall("What did Ada paint?").trace["features"]
        given = s.recall(s.embedder.embed(["What did Ada paint?"])[0], text="What did Ada paint?",
                         blind=s.embedder.embed(["What did someone paint?"])[0]).trace["features"]
    # With the name in the cue, Ada's own first-person turn leads and seems to agree with her.
    assert named["speaker_perspective"] > 0 and named["speaker_told_gap"] > 0
    # Blind, the best match is Bob telling his own news: it speaks against Ada having done it.
    assert blind["speaker_perspective"] < 0 and blind["speaker_told_gap"] < 0
    assert given == named  # blind_speakers=False ignores a given blind cue
    with MemoryStore(tmp_path / "s", space="c", embedder=TwoWorlds(), durable=False, config=config) as s:
        cue = s.embedder.embed(["What did Ada paint?"])[0]
        assert s.recall(cue, text="What did Ada paint?",
                        blind=s.embedder.embed(["What did someone paint?"])[0]).trace["features"] == blind
        with pytest.raises(ValueError, match="blind: expected shape"):
            s.recall(cue, text="What did Ada paint?", blind=np.ones(3))
        with pytest.raises(ValueError, match="text: a text cue is its own text"):
            s.recall("What did Ada paint?", blind=cue)
        with pytest.raises(ValueError, match="blinds: expected 1 rows"):
            s.recall_batch(cue[None], texts=["What did Ada paint?"], blinds=np.stack([cue, cue]))


def test_a_gate_in_parts_refuses_on_whether_memory_holds_an_answer(tmp_path):
    rng = np.random.default_rng(5)
    n = 4000
    x = rng.standard_normal((n, len(FEATURES)))
    col = FEATURES.index
    x[:, col("speaker_named")] = rng.random(n) < 0.8
    foreign = rng.random(n) < 1 / (1 + np.exp(-(-1.0 - 3.0 * x[:, col("masked_cosine")])))
    named = x[:, col("speaker_named")] > 0
    # Among its own cues that name a speaker, the perspective decides whether memory holds it.
    agrees = ~named | (rng.random(n) < 1 / (1 + np.exp(-3.0 * x[:, col("speaker_perspective")])))
    holds = ~foreign & agrees
    found = holds & (rng.random(n) < 1 / (1 + np.exp(-2.0 * x[:, col("lexical")])))
    half = n // 2
    gate = fit_gate(x[:half], found[:half], threshold=0.4, holds=holds[:half], foreign=foreign[:half])
    p_holds, confidence = gate.holds(x[half:]), gate.confidence(x[half:])
    # Calibrated on held-out rows, and the product still reads as P(top is right).
    for p, truth in ((p_holds, holds[half:]), (confidence, found[half:])):
        bins = np.digitize(p, [0.25, 0.5, 0.75])
        for b in np.unique(bins):
            inside = bins == b
            mean = p[inside].mean()  # within 3.5 standard errors of the bin's count, plus 0.02
            assert abs(mean - truth[inside].mean()) < 3.5 * np.sqrt(mean * (1 - mean) / inside.sum()) + 0.02
    # Each part reads only its own features; naming a speaker is evidence for neither.
    assert gate.familiar_coef[col("speaker_perspective")] == 0 and gate.agree_coef[col("masked_cosine")] == 0
    assert gate.familiar_coef[col("speaker_named")] == 0 == gate.agree_coef[col("speaker_named")]
    unnamed = x[half:][~named[half:]]
    assert np.allclose(gate.holds(unnamed), 1 / (1 + np.exp(-(unnamed @ gate.familiar_coef
                                                              + gate.familiar_intercept))))
    assert (gate.refusal_scores(x) == gate.holds(x)).all()
    one_part = fit_gate(x, found)
    assert one_part.holds(x) is None and (one_part.refusal_scores(x) == one_part.confidence(x)).all()
    assert GateModel.from_state(json.loads(json.dumps(gate.to_state()))) == gate
    with pytest.raises(ValueError, match=r"labels: row .* holds no answer"):
        fit_gate(x[:10], np.arange(10) % 2, holds=np.zeros(10))
    with pytest.raises(ValueError, match=r"holds: row .* foreign cue"):
        fit_gate(x[:10], np.zeros(10), holds=np.ones(10), foreign=np.arange(10) % 2)
    with pytest.raises(ValueError, match="holds: expected 10 values of 0 or 1"):
        fit_gate(x[:10], np.arange(10) % 2, holds=np.full(10, 2))
    with pytest.raises(ValueError, match="foreign: calibration needs both kinds"):
        fit_gate(x[:10], np.arange(10) % 2, foreign=np.zeros(10))
    # In a store: refused when the memory holds no answer, even with a confident top match.
    with text_store(tmp_path / "s") as s:
        features = s.gate_features([s.recall("puppy Rex")])
        width = len(FEATURES)
        sure_found = GateModel((0.0,) * width, 8.0, True, 10, FEATURES, 0.5, (0.0,) * width, -8.0)
        s.set_gate(sure_found)
        answer = s.recall("puppy Rex")
        assert answer.status == "insufficient_evidence" and answer.episodes
        assert answer.trace["holds"] == pytest.approx(float(sure_found.holds(features)[0]))
        assert answer.confidence == pytest.approx(float(sure_found.confidence(features)[0]))
        s.set_gate(GateModel((0.0,) * width, -8.0, True, 10, FEATURES, 0.5, (0.0,) * width, 8.0))
        assert s.recall("puppy Rex").status == "recalled"  # holds, though the top is unlikely right


def test_a_name_the_space_never_saw_is_a_stranger_even_when_its_stem_is_a_word(tmp_path):
    with text_store(tmp_path / "s") as s:
        s.add(text="We met three times at the park", who="Ada", session=4)
        # "Tim" stems like "times", a word of the space; unstemmed it is a name nobody mentioned.
        stranger = s.recall("What did Tim bring to the park?").trace["features"]
        known = s.recall("What did Rex bring to the park?").trace["features"]  # Rex is Ada's puppy
        ada = s.recall("What did Ada bring to the park?").trace["features"]
    assert stranger["unknown_names"] == 1 and stranger["strangers_only"] == 1
    assert known["unknown_names"] == 0 and known["strangers_only"] == 0
    assert ada["speaker_named"] == 1 and ada["strangers_only"] == 0
