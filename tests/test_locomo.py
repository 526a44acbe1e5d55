"""The LoCoMo loader: turns, sessions, dates, captions, questions and evidence repair."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from engram.data import load_locomo
from engram.data.locomo import parse_conversation, parse_session_date, repair_evidence


def _record(evidence: list[str], **extra) -> dict:
    return {
        "speaker_a": "Ada",
        "speaker_b": "Bo",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ada", "dia_id": "D1:1", "text": "I adopted a cat."},
            {"speaker": "Bo", "dia_id": "D1:2", "text": "Look!", "blip_caption": "a photo of a cat"},
        ],
        "session_2_date_time": "9:05 am on 1 June, 2023",
        "session_2": [{"speaker": "Bo", "dia_id": "D2:1", "text": "The cat is named Tom."}],
        "qa": [
            {"question": "What did Ada adopt?", "answer": "a cat", "evidence": evidence, "category": 4},
            {"question": "What did Bo adopt?", "adversarial_answer": "a cat", "evidence": ["D1:1"],
             "category": 5},
        ],
        **extra,
    }


def test_turns_keep_speaker_session_order_and_caption():
    conversation = parse_conversation(_record(["D1:1"]), "toy")
    assert conversation.speakers == ("Ada", "Bo")
    assert [t.dia_id for t in conversation.turns] == ["D1:1", "D1:2", "D2:1"]
    assert [t.session for t in conversation.turns] == [1, 1, 2]
    assert conversation.turns[1].caption == "a photo of a cat"
    assert conversation.turns[0].caption is None
    start = dt.datetime(2023, 5, 8, 13, 56, tzinfo=dt.timezone.utc).timestamp()
    assert conversation.turns[0].timestamp == start
    assert conversation.turns[1].timestamp == start + 1
    assert conversation.turns[2].session_date == "9:05 am on 1 June, 2023"


def test_questions_carry_category_answers_and_answerability():
    answerable, adversarial = parse_conversation(_record(["D1:1"]), "toy").questions
    assert (answerable.category, answerable.answer, answerable.evidence) == (4, "a cat", ("D1:1",))
    assert answerable.answerable and not adversarial.answerable
    assert adversarial.adversarial_answer == "a cat" and adversarial.answer is None


@pytest.mark.parametrize(
    ("raw", "expected", "action"),
    [
        ("D1:2; D2:1", ("D1:2", "D2:1"), "repaired"),
        ("D:1:2", ("D1:2",), "repaired"),
        ("D1:02", ("D1:2",), "repaired"),
        ("D", (), "skipped"),
        ("D9:9", (), "skipped"),  # well formed, but the conversation has no such turn
    ],
)
def test_malformed_evidence_is_repaired_or_skipped_and_recorded(raw, expected, action):
    conversation = parse_conversation(_record(["D1:1", raw]), "toy")
    assert conversation.questions[0].evidence == ("D1:1", *expected)
    (issue,) = conversation.evidence_issues
    assert (issue.question, issue.raw, issue.action, issue.result) == (0, raw, action, expected)


def test_repair_drops_duplicates_and_unknown_turns():
    assert repair_evidence("D1:1, D1:1; D7:3", {"D1:1"}) == ("D1:1",)


def test_session_date_parses_and_rejects_other_formats():
    assert parse_session_date("12:48 am on 1 February, 2023") == dt.datetime(
        2023, 2, 1, 0, 48, tzinfo=dt.timezone.utc).timestamp()
    with pytest.raises(ValueError, match="session date"):
        parse_session_date("2023-02-01")


def test_bad_records_raise_naming_what_is_missing():
    with pytest.raises(ValueError, match="qa"):
        parse_conversation({k: v for k, v in _record([]).items() if k != "qa"}, "toy")
    with pytest.raises(ValueError, match="session_2_date_time"):
        parse_conversation({k: v for k, v in _record([]).items() if k != "session_2_date_time"}, "toy")
    bad = _record([])
    bad["qa"][0]["category"] = 9
    with pytest.raises(ValueError, match="category"):
        parse_conversation(bad, "toy")
    with pytest.raises(TypeError, match="JSON object"):
        parse_conversation([], "toy")


def test_folder_and_list_formats_load_the_same_conversation(tmp_path: Path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "toy.json").write_text(json.dumps(_record(["D1:1"])))
    record = _record(["D1:1"])
    nested = {"sample_id": "toy", "qa": record.pop("qa"), "conversation": record}
    (tmp_path / "list.json").write_text(json.dumps([nested]))
    (flat,) = load_locomo(tmp_path / "flat")
    (listed,) = load_locomo(tmp_path / "list.json")
    assert flat == listed
    with pytest.raises(FileNotFoundError, match="path"):
        load_locomo(tmp_path / "absent")


def test_shared_locomo_release_loads_with_its_evidence_issues(data_dir: Path):
    folder = data_dir / "locomo"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    conversations = {c.name: c for c in load_locomo(folder)}
    assert len(conversations["conv-26"].turns) == 419
    assert len(conversations["conv-26"].questions) == 199
    turn_ids = {n: {t.dia_id for t in c.turns} for n, c in conversations.items()}
    for name, c in conversations.items():
        assert all(e in turn_ids[name] for q in c.questions for e in q.evidence)
    issues = {(n, i.raw): i for n, c in conversations.items() for i in c.evidence_issues}
    assert issues[("conv-26", "D8:6; D9:17")].result == ("D8:6", "D9:17")
    assert issues[("conv-43", "D:11:26")].result == ("D11:26",)
    assert issues[("conv-42", "D")].action == "skipped"
