"""LoCoMo conversations (Maharana et al., ACL 2024): turns, session dates and annotated questions.

Reads files in the published format: one conversation per file (``speaker_a``, ``session_N``,
``session_N_date_time``, ``qa`` at the top level) or a list of ``{"sample_id", "conversation",
"qa"}`` records (``locomo10.json``). A few evidence ids in the release are malformed
(``D8:6; D9:17``, ``D:11:26``, ``D``) or name a turn the conversation does not have; they are
repaired where the intended turn is unambiguous and skipped otherwise, and every such case is
recorded in ``Conversation.evidence_issues``.

Example:
    >>> conversations = load_locomo(data_root() / "locomo")          # doctest: +SKIP
    >>> conversations[0].turns[0].speaker, conversations[0].questions[0].evidence  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
_DATE_FORMAT = "%I:%M %p on %d %B, %Y"
_SESSION = re.compile(r"session_(\d+)")
_WELL_FORMED = re.compile(r"D(\d+):(\d+)")
# A turn id with stray separators: "D:11:26", "D 3:4", "d3 : 04".
_LENIENT = re.compile(r"[Dd]\s*:?\s*(\d+)\s*:\s*(\d+)")


@dataclass(frozen=True)
class Turn:
    """One utterance: who said it, its id (``D<session>:<n>``), text and when.

    ``timestamp`` is the session's start (UTC seconds) plus one second per earlier turn of the
    session, so turns keep their order in time; ``caption`` is the shared image's BLIP caption.
    """

    dia_id: str
    speaker: str
    text: str
    session: int
    position: int
    session_date: str
    timestamp: float
    caption: str | None = None


@dataclass(frozen=True)
class Question:
    """One annotated question; ``evidence`` holds the ids of the turns that answer it (repaired)."""

    question: str
    category: int
    evidence: tuple[str, ...]
    answer: str | None = None
    adversarial_answer: str | None = None

    @property
    def answerable(self) -> bool:
        """Categories 1–4 are answerable from the conversation; 5 (adversarial) is not."""
        return self.category != 5


@dataclass(frozen=True)
class EvidenceIssue:
    """An evidence id that was not a turn of the conversation as written, and what was done."""

    question: int
    raw: str
    action: str  # "repaired" or "skipped"
    result: tuple[str, ...]


@dataclass(frozen=True)
class Conversation:
    """A LoCoMo conversation: its name, two speakers, turns in order, questions, evidence fixes."""

    name: str
    speakers: tuple[str, str]
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]
    evidence_issues: tuple[EvidenceIssue, ...]


def parse_session_date(text: str) -> float:
    """``"1:56 pm on 8 May, 2023"`` → UTC seconds since the epoch (the release has no time zone)."""
    if not isinstance(text, str):
        raise TypeError(f"session date: expected a string, got {type(text).__name__}")
    try:
        moment = _dt.datetime.strptime(text.strip(), _DATE_FORMAT)
    except ValueError as error:
        raise ValueError(f"session date: expected like '1:56 pm on 8 May, 2023', got {text!r}") from error
    return moment.replace(tzinfo=_dt.timezone.utc).timestamp()


def repair_evidence(raw: str, turn_ids: set[str]) -> tuple[str, ...]:
    """The turn ids an evidence string means: split at ``;``/``,``, normalised; unknown ones dropped."""
    found: list[str] = []
    for part in re.split(r"[;,]", raw):
        match = _LENIENT.fullmatch(part.strip())
        if match:
            dia_id = f"D{int(match[1])}:{int(match[2])}"
            if dia_id in turn_ids and dia_id not in found:
                found.append(dia_id)
    return tuple(found)


def _turns(conversation: dict[str, Any], name: str) -> list[Turn]:
    sessions = sorted(int(m[1]) for key in conversation if (m := _SESSION.fullmatch(key)))
    turns: list[Turn] = []
    for number in sessions:
        date_key = f"session_{number}_date_time"
        if date_key not in conversation:
            raise ValueError(f"{name}: session_{number} has no {date_key}")
        date = conversation[date_key]
        start = parse_session_date(date)
        for position, raw in enumerate(conversation[f"session_{number}"]):
            for key in ("speaker", "dia_id", "text"):
                if not isinstance(raw.get(key), str):
                    raise ValueError(f"{name}: a turn of session_{number} has no string {key!r}: {raw!r}")
            caption = raw.get("blip_caption")
            turns.append(Turn(
                dia_id=raw["dia_id"], speaker=raw["speaker"], text=raw["text"], session=number,
                position=position, session_date=date, timestamp=start + position,
                caption=caption if isinstance(caption, str) and caption else None,
            ))
    if not turns:
        raise ValueError(f"{name}: expected at least one session_N with turns, found none")
    return turns


def _questions(qa: list[dict[str, Any]], turn_ids: set[str], name: str
               ) -> tuple[list[Question], list[EvidenceIssue]]:
    questions: list[Question] = []
    issues: list[EvidenceIssue] = []
    for index, raw in enumerate(qa):
        category = raw.get("category")
        if category not in CATEGORIES or not isinstance(raw.get("question"), str):
            raise ValueError(f"{name}: question {index} needs a 'question' string and a category 1-5, "
                             f"got {raw!r}")
        evidence: list[str] = []
        for item in raw.get("evidence", []):
            if isinstance(item, str) and _WELL_FORMED.fullmatch(item) and item in turn_ids:
                fixed: tuple[str, ...] = (item,)
            else:
                fixed = repair_evidence(item, turn_ids) if isinstance(item, str) else ()
                issues.append(EvidenceIssue(index, str(item), "repaired" if fixed else "skipped", fixed))
            evidence.extend(e for e in fixed if e not in evidence)
        answer = raw.get("answer")
        adversarial = raw.get("adversarial_answer")
        questions.append(Question(
            question=raw["question"], category=int(category), evidence=tuple(evidence),
            answer=None if answer is None else str(answer),
            adversarial_answer=None if adversarial is None else str(adversarial),
        ))
    return questions, issues


def parse_conversation(record: dict[str, Any], name: str) -> Conversation:
    """One conversation from a parsed record (flat, or with a nested ``conversation`` object)."""
    if not isinstance(record, dict):
        raise TypeError(f"{name}: expected a JSON object, got {type(record).__name__}")
    conversation = record.get("conversation", record)
    if not isinstance(record.get("qa"), list):
        raise ValueError(f"{name}: expected a 'qa' list of questions")
    speakers = (conversation.get("speaker_a"), conversation.get("speaker_b"))
    if not all(isinstance(s, str) for s in speakers):
        raise ValueError(f"{name}: expected 'speaker_a' and 'speaker_b' strings, got {speakers!r}")
    turns = _turns(conversation, name)
    questions, issues = _questions(record["qa"], {t.dia_id for t in turns}, name)
    return Conversation(name, (speakers[0], speakers[1]), tuple(turns), tuple(questions), tuple(issues))


def load_locomo(path: str | os.PathLike[str]) -> list[Conversation]:
    """Every conversation in a LoCoMo JSON file or in the ``*.json`` files of a folder, by name."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise FileNotFoundError(f"path: no *.json LoCoMo files in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"path: {path} does not exist")
    conversations: list[Conversation] = []
    for file in files:
        data = json.loads(file.read_text(encoding="utf-8"))
        if isinstance(data, list):
            for i, record in enumerate(data):
                name = record.get("sample_id", f"{file.stem}-{i}") if isinstance(record, dict) else ""
                conversations.append(parse_conversation(record, str(name) or f"{file.stem}-{i}"))
        else:
            conversations.append(parse_conversation(data, file.stem))
    names = [c.name for c in conversations]
    if len(set(names)) != len(names):
        raise ValueError(f"path: conversation names must be unique, got {names}")
    return conversations


__all__ = ["CATEGORIES", "Conversation", "EvidenceIssue", "Question", "Turn", "load_locomo",
           "parse_conversation", "parse_session_date", "repair_evidence"]
