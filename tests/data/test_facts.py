"""The days-of-conversations generator: deterministic, held-out question forms, corrections,
and the JSONL log format with its errors."""

from __future__ import annotations

import json

import pytest

from engram.data.facts import (
    ATTRIBUTES,
    FORMAT,
    generate_days,
    read_logs,
    standing_facts,
    write_logs,
)


def test_the_same_seed_gives_the_same_days_and_another_seed_others():
    a, b, c = generate_days(3, 4, 1, seed=5), generate_days(3, 4, 1, seed=5), generate_days(3, 4, 1, seed=6)
    assert a.days == b.days
    assert a.days != c.days


def test_any_number_of_days_and_facts_with_one_correction_a_day_from_day_two():
    stream = generate_days(days=4, facts_per_day=3, corrections_per_day=1, seed=0)
    assert len(stream.days) == 4
    for day, conversations in enumerate(stream.days, start=1):
        facts = [f for c in conversations for f in c.facts]
        assert sum(not f.correction for f in facts) == 3
        assert sum(f.correction for f in facts) == (0 if day == 1 else 1)
        for c in conversations:
            for f in c.facts:
                assert f.value in c.turns[f.turn][1]
    assert len(stream.facts_after(4)) == 12


def test_test_question_forms_are_held_out_from_training_forms_and_from_the_logs():
    for attribute in ATTRIBUTES:
        forms = attribute.questions
        assert not set(forms["test"]) & (set(forms["train"]) | set(forms["validation"]))
    stream = generate_days(2, 6, 1, seed=1)
    text = "".join(c.text() for day in stream.days for c in day)
    for question in stream.probe(2, "test"):
        assert question.text not in text
        assert question.candidates[question.answer] == stream.facts_after(2)[
            (question.fact.subject, question.fact.attribute)].value


def test_a_correction_changes_what_the_probe_expects_from_that_day_on():
    stream = generate_days(3, 4, 1, seed=2)
    corrected = next(f for c in stream.days[1] for f in c.facts if f.correction)
    key = (corrected.subject, corrected.attribute)
    assert stream.facts_after(1)[key].value == corrected.previous
    assert stream.facts_after(2)[key].value == corrected.value != corrected.previous
    asked = next(q for q in stream.probe(2) if (q.fact.subject, q.fact.attribute) == key)
    assert asked.candidates[asked.answer] == corrected.value
    assert asked.fact.day == 1  # the fact still belongs to the day it was first told


def test_logs_round_trip_and_give_the_standing_facts(tmp_path):
    stream = generate_days(3, 2, 1, seed=3)
    paths = write_logs(stream, tmp_path)
    assert [p.name for p in paths] == ["day-01.jsonl", "day-02.jsonl", "day-03.jsonl"]
    first = json.loads(paths[0].read_text().splitlines()[0])
    assert first["format"] == FORMAT and first["turns"]
    back = read_logs(tmp_path)
    assert tuple(back) == tuple(c for day in stream.days for c in day)
    assert standing_facts(back) == stream.facts_after(3)


def test_log_folders_that_cannot_be_read_are_named_errors(tmp_path):
    with pytest.raises(ValueError, match=r"logs: expected .* got an empty folder"):
        read_logs(tmp_path)
    with pytest.raises(ValueError, match="logs: expected a folder"):
        read_logs(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"logs: expected only \.jsonl files .* got \['notes.txt'\]"):
        read_logs(tmp_path)
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "a.jsonl").write_text(json.dumps({"format": "chat/2", "messages": []}) + "\n")
    with pytest.raises(ValueError, match=r"a\.jsonl:1: expected a JSON object with format"):
        read_logs(tmp_path)
    (tmp_path / "a.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match=r"a\.jsonl:1: expected a JSON line .* invalid JSON"):
        read_logs(tmp_path)
    fact = {"subject": "Ann", "attribute": "home", "value": "Brask", "day": 1, "turn": 0}
    line = {"format": FORMAT, "id": "x", "day": 1, "turns": [["Ada", "Hello."]], "facts": [fact]}
    (tmp_path / "a.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(ValueError, match="expected its value 'Brask' in turn 0"):
        read_logs(tmp_path)


def test_the_skill_text_asks_in_train_forms_only_about_subjects_the_stream_never_has():
    from engram.data.facts import skill_text

    names = _invented_names(skill_text(300, seed=7, subjects=16))
    assert len(names) > 100
    excluded = sorted(names)[::2]  # the probe's subjects, say: those it would have invented
    subjects = [f"the {n} Fair" if i % 3 == 0 else n for i, n in enumerate(excluded)]
    text = skill_text(300, seed=7, exclude=subjects, subjects=16)
    assert text == skill_text(300, seed=7, exclude=subjects, subjects=16)
    assert not set(excluded) & _invented_names(text)
    held_out = [f for a in ATTRIBUTES for split in ("validation", "test") for f in a.questions[split]]
    asked = [line[3:] for line in text.splitlines() if line.startswith("Q: ")]
    assert asked and len(text.split("\n\n")) == 301  # 300 documents and the end
    for question in asked:
        assert not any(_matches(form, question) for form in held_out), question
        assert any(_matches(form, question) for a in ATTRIBUTES for form in a.questions["train"])
    reading = text.split("\n\n")[0].splitlines()  # the first document tells, then asks
    assert reading[-1].startswith("A: ") and reading[-1][3:] in "".join(reading[:-2])


def _invented_names(text: str) -> set[str]:
    """Capitalised words of ``text`` that no fixed phrase of the generator contains."""
    import re

    from engram.data.facts import _SMALL_TALK, SPEAKERS

    fixed = " ".join([*_SMALL_TALK, *SPEAKERS, "Q A Fair"] + [
        " ".join([*a.values, *a.tell, a.correct, *(f for forms in a.questions.values() for f in forms)])
        for a in ATTRIBUTES])
    known = set(re.findall(r"[A-Za-z]+", fixed))
    return {w for w in re.findall(r"\b[A-Z][a-z]+\b", text) if w not in known}


def _matches(form: str, question: str) -> bool:
    head, tail = form.split("{s}")
    return question.startswith(head) and question.endswith(tail) and len(question) > len(form) - 3


def test_the_skill_text_checks_its_arguments():
    from engram.data.facts import skill_text

    with pytest.raises(ValueError, match="documents"):
        skill_text(-1)
    with pytest.raises(ValueError, match="subjects"):
        skill_text(3, subjects=0)
