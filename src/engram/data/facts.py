"""Days of conversations: invented people, places and events whose facts are told among small talk.

Each day brings new facts (a subject, an attribute, a value) told in varied sentences inside short
dialogues; from the second day on some earlier facts change (a correction: the probe then expects
the new value). Question templates are split three ways: ``train`` forms may be used in training
(the sleep's dreams), ``validation`` forms tune, and ``test`` forms are held out for the
morning-after closed-book probe. Everything is a pure function of the seed.

On disk a day is a JSON Lines file, one conversation per line (see :data:`FORMAT` and
:func:`write_logs` / :func:`read_logs`); any folder of such files is a set of logs.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engram.io import atomic_write_text
from engram.params import Interval, Options, check

FORMAT = "engram.conversations/1"
SPLITS = ("train", "validation", "test")
SPEAKERS = ("Ada", "Ben", "Cleo", "Dan")


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: what it says, the subjects it applies to, its values and its phrasings."""

    name: str
    kind: str  # "person", "place" or "event"
    values: tuple[str, ...]
    tell: tuple[str, ...]  # statements with {s} (subject) and {v} (value)
    questions: dict[str, tuple[str, ...]]  # split -> question forms with {s}
    correct: str = "Actually, {s} changed: {v} now, not {old}."


_TOWNS = ("Korvale", "Pelmar", "Dunrith", "Ostwick", "Varnel", "Melgate", "Tirrow", "Brask")
ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "home", "person", _TOWNS,
        ("{s} lives in {v}.", "{s} has a house in {v}.", "These days {s} is at home in {v}.",
         "{s} settled down in {v}."),
        {"train": ("Where does {s} live?", "In which town is the home of {s}?",
                   "Tell me where {s} lives.", "Where is the house of {s}?",
                   "Where has {s} made a home?", "Name the town where {s} lives."),
         "validation": ("Which town does {s} call home?",),
         "test": ("Where is {s} living these days?", "What town is {s} from?")},
        "Actually, {s} moved away. {s} lives in {v} now, not {old}.",
    ),
    Attribute(
        "job", "person",
        ("baker", "weaver", "sailor", "miller", "potter", "tailor", "mason", "farmer"),
        ("{s} works as a {v}.", "{s} earns a living as a {v}.", "By trade {s} is a {v}.",
         "{s} has been a {v} for years."),
        {"train": ("What does {s} do for work?", "What is the trade of {s}?",
                   "Tell me what {s} does for a living.", "What work does {s} do?",
                   "As what does {s} work?", "Name the trade of {s}."),
         "validation": ("How does {s} earn a living?",),
         "test": ("What job does {s} have?", "What is {s} by trade?")},
        "Actually, {s} changed trade. {s} is a {v} now, not a {old}.",
    ),
    Attribute(
        "pet", "person",
        ("owl", "goat", "hound", "cat", "raven", "horse", "hare", "toad"),
        ("{s} keeps a {v}.", "{s} has a pet {v}.", "At home {s} looks after a {v}.",
         "{s} is never seen without a {v}."),
        {"train": ("What pet does {s} keep?", "What animal lives with {s}?",
                   "Tell me what pet {s} keeps.", "Which creature lives with {s}?",
                   "Which animal is kept by {s}?", "Name the pet that {s} looks after."),
         "validation": ("Which animal does {s} look after?",),
         "test": ("What is the pet of {s}?", "What animal does {s} have?")},
        "Actually, the {old} is gone. {s} keeps a {v} now.",
    ),
    Attribute(
        "known_for", "place",
        ("lanterns", "cheese", "bells", "wool", "ships", "glass", "honey", "salt"),
        ("{s} is known for its {v}.", "People go to {s} for the {v}.",
         "The {v} of {s} are famous.", "{s} makes the best {v}."),
        {"train": ("What is {s} known for?", "Why do people go to {s}?",
                   "Tell me what {s} is known for.", "What is famous in {s}?",
                   "For what is {s} known?", "Name the thing {s} is known for."),
         "validation": ("What is {s} famous for?",),
         "test": ("What does {s} make best?", "What are people buying in {s}?")},
        "Actually, {s} is known for its {v} now, not its {old}.",
    ),
    Attribute(
        "month", "event",
        ("March", "April", "June", "July", "August", "October", "November", "December"),
        ("{s} is held in {v}.", "{s} takes place every {v}.", "Each year in {v} comes {s}.",
         "We celebrate {s} in {v}."),
        {"train": ("When is {s} held?", "In which month is {s}?",
                   "Tell me when {s} is held.", "Which month is {s} in?",
                   "Which month holds {s}?", "Name the month of {s}."),
         "validation": ("What month brings {s}?",),
         "test": ("When does {s} take place?", "In what month do we celebrate {s}?")},
        "Actually, {s} moved. It is held in {v} now, not {old}.",
    ),
)
ATTRIBUTE = {a.name: a for a in ATTRIBUTES}
_SMALL_TALK = (
    "Lovely weather today.", "Did you sleep well?", "I made some tea.", "The market was busy.",
    "My feet hurt from walking.", "Have you eaten yet?", "It might rain later.",
    "The bread is still warm.", "I heard a song on the way.", "What a long week.",
    "Shall we sit by the window?", "The river is high again.", "I lost my hat.",
    "That is good to hear.", "Tell me more.", "Oh, really?", "I did not know that.",
)
_ONSETS = ("B", "D", "F", "G", "H", "K", "L", "M", "N", "P", "R", "S", "T", "V", "W", "Z")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("n", "r", "l", "s", "th", "m", "k", "")


@dataclass(frozen=True)
class Fact:
    """A subject's attribute and its value; ``previous`` is the value a correction replaced."""

    subject: str
    attribute: str
    value: str
    day: int  # the day the fact was first told
    turn: int = 0  # the turn of its conversation that tells it
    correction: bool = False
    previous: str = ""


@dataclass(frozen=True)
class Conversation:
    """One logged conversation: its turns, the facts they tell and explicit flags."""

    id: str
    day: int
    turns: tuple[tuple[str, str], ...]  # (speaker, text)
    facts: tuple[Fact, ...] = ()
    reward: float = 0.0
    salience: float = 0.0

    def text(self) -> str:
        """The conversation as plain text, one ``Speaker: words`` line per turn."""
        return "".join(f"{speaker}: {words}\n" for speaker, words in self.turns)

    def to_json(self) -> str:
        data = {"format": FORMAT, **asdict(self)}
        data["turns"] = [list(t) for t in self.turns]
        return json.dumps(data, ensure_ascii=False)


@dataclass(frozen=True)
class Question:
    """A closed-book probe item: the question, the candidate answers and the right one."""

    fact: Fact
    text: str
    candidates: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class Stream:
    """Days of conversations and the facts as they stand after each day."""

    days: tuple[tuple[Conversation, ...], ...]
    seed: int
    facts_per_day: int
    corrections_per_day: int
    state: tuple[dict[tuple[str, str], Fact], ...] = field(repr=False, default=())

    def facts_after(self, day: int) -> dict[tuple[str, str], Fact]:
        """Every fact as it stands after ``day`` (1-based), keyed by (subject, attribute)."""
        check("day", day, Interval(int, 1, len(self.days)))
        return self.state[day - 1]

    def probe(self, after: int, split: str = "test", day: int | None = None) -> list[Question]:
        """Questions on the facts standing after day ``after`` (only those first told on ``day``
        when given), in the ``split``'s question forms (one form per fact, chosen by seed)."""
        return probe_questions(self.facts_after(after).values(), split, self.seed, day)


def question_prompt(question: str) -> str:
    """The text a probe puts before the answer: ``Q: …`` then ``A:``."""
    return f"Q: {question}\nA:"


def answer_text(value: str) -> str:
    """The text of an answer after :func:`question_prompt`."""
    return f" {value}\n"


def probe_questions(
    facts, split: str = "test", seed: int = 0, day: int | None = None
) -> list[Question]:
    """One question per fact in a form of ``split``; candidates are every value of its attribute
    (facts of attributes this module does not know get the generic form and their own value)."""
    check("split", split, Options(SPLITS))
    out = []
    for fact in facts:
        if day is not None and fact.day != day:
            continue
        attribute = ATTRIBUTE.get(fact.attribute)
        if attribute is None:
            forms, candidates = (f"What is the {fact.attribute} of {{s}}?",), (fact.value,)
        else:
            forms, candidates = attribute.questions[split], attribute.values
        rng = random.Random(f"{seed}/{split}/{fact.subject}/{fact.attribute}")
        form = rng.choice(forms)
        out.append(Question(fact, form.format(s=fact.subject), candidates,
                            candidates.index(fact.value)))
    return out


def _names(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    names = []
    while len(names) < n:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                       for _ in range(2)).capitalize()
        if name not in taken and 4 <= len(name) <= 9:
            taken.add(name)
            names.append(name)
    return names


def _subject(rng: random.Random, kind: str, taken: set[str]) -> str:
    base = _names(rng, 1, taken)[0]
    if kind == "place":
        return base
    if kind == "event":
        return f"the {base} Fair"
    return base


def _conversation(rng: random.Random, cid: str, day: int, told: list[Fact],
                  sentences: list[str]) -> Conversation:
    """A dialogue of two speakers: small talk, each fact's sentence in its own turn, small talk."""
    a, b = rng.sample(SPEAKERS, 2)
    lines = [rng.choice(_SMALL_TALK) for _ in range(rng.randint(1, 2))]
    facts = []
    for fact, sentence in zip(told, sentences, strict=True):
        facts.append(Fact(**{**asdict(fact), "turn": len(lines)}))
        lines.append(sentence)
        lines.append(rng.choice(_SMALL_TALK))
    turns = tuple(((a, b)[i % 2], line) for i, line in enumerate(lines))
    salience = 1.0 if any(f.correction for f in facts) else round(rng.random(), 3)
    return Conversation(cid, day, turns, tuple(facts), reward=float(any(f.correction for f in facts)),
                        salience=salience)


def generate_days(
    days: int = 10, facts_per_day: int = 8, corrections_per_day: int = 1, seed: int = 0
) -> Stream:
    """A deterministic stream of ``days`` days, each telling ``facts_per_day`` new facts (one per
    conversation) and, from day 2 on, correcting ``corrections_per_day`` earlier ones."""
    check("days", days, Interval(int, 1, None))
    check("facts_per_day", facts_per_day, Interval(int, 1, None))
    check("corrections_per_day", corrections_per_day, Interval(int, 0, None))
    check("seed", seed, Interval(int, 0, None))
    rng = random.Random(f"engram.facts/{seed}")
    taken: set[str] = set()
    standing: dict[tuple[str, str], Fact] = {}
    out, states = [], []
    for day in range(1, days + 1):
        conversations = []
        for i in range(facts_per_day):
            attribute = ATTRIBUTES[rng.randrange(len(ATTRIBUTES))]
            subject = _subject(rng, attribute.kind, taken)
            fact = Fact(subject, attribute.name, rng.choice(attribute.values), day)
            sentence = rng.choice(attribute.tell).format(s=subject, v=fact.value)
            sentence = sentence[0].upper() + sentence[1:]
            conversation = _conversation(rng, f"d{day}-c{i}", day, [fact], [sentence])
            conversations.append(conversation)
            standing[(subject, attribute.name)] = conversation.facts[0]
        earlier = sorted(k for k, f in standing.items() if f.day < day)
        for j in range(min(corrections_per_day, len(earlier)) if day > 1 else 0):
            key = earlier.pop(rng.randrange(len(earlier)))
            old = standing[key]
            attribute = ATTRIBUTE[old.attribute]
            value = rng.choice([v for v in attribute.values if v != old.value])
            sentence = attribute.correct.format(s=old.subject, v=value, old=old.value)
            sentence = sentence[0].upper() + sentence[1:]
            new = Fact(old.subject, old.attribute, value, old.day, correction=True,
                       previous=old.value)
            conversation = _conversation(rng, f"d{day}-x{j}", day, [new], [sentence])
            conversations.append(conversation)
            standing[key] = conversation.facts[0]
        out.append(tuple(conversations))
        states.append(dict(standing))
    return Stream(tuple(out), seed, facts_per_day, corrections_per_day, tuple(states))


SKILL_KINDS = ("read", "recall", "correct")


def _base_name(subject: str) -> str:
    """The invented name inside a subject ("the Varnel Fair" → "Varnel")."""
    return subject.removeprefix("the ").removesuffix(" Fair")


def skill_text(
    documents: int, seed: int = 0, exclude: Iterable[str] = (), subjects: int = 64
) -> str:
    """Teaching text for pretraining: how told facts are asked about, on invented subjects none of
    which is in ``exclude`` (give it the probe's subjects), in TRAIN question forms only.

    Three kinds of document, in turn: ``read`` (a dialogue tells a fact about a fresh subject,
    then ``Q: … A: value`` asks it: reading in context), ``recall`` (a pool of ``subjects`` with
    fixed facts, each told in some documents and asked alone, the telling absent, in others:
    closed-book recall of what was told elsewhere) and ``correct`` (a fact told, corrected, and
    the new value asked). Validation and test forms never appear. Documents end with a blank line.
    """
    check("documents", documents, Interval(int, 0, None))
    check("seed", seed, Interval(int, 0, None))
    check("subjects", subjects, Interval(int, 1, None))
    rng = random.Random(f"engram.facts.skill/{seed}")
    taken = {_base_name(s) for s in exclude}

    def new_fact() -> tuple[Attribute, Fact]:
        attribute = ATTRIBUTES[rng.randrange(len(ATTRIBUTES))]
        subject = _subject(rng, attribute.kind, taken)
        return attribute, Fact(subject, attribute.name, rng.choice(attribute.values), 0)

    def told(attribute: Attribute, fact: Fact) -> str:
        sentence = rng.choice(attribute.tell).format(s=fact.subject, v=fact.value)
        return sentence[0].upper() + sentence[1:]

    def asked(attribute: Attribute, fact: Fact) -> str:
        form = rng.choice(attribute.questions["train"])
        return question_prompt(form.format(s=fact.subject)) + answer_text(fact.value)

    def dialogue(lines: list[str]) -> str:
        a, b = rng.sample(SPEAKERS, 2)
        talk = [rng.choice(_SMALL_TALK), *lines, rng.choice(_SMALL_TALK)]
        return "".join(f"{(a, b)[i % 2]}: {line}\n" for i, line in enumerate(talk))

    pool = [new_fact() for _ in range(subjects)]
    out = []
    for i in range(documents):
        kind = SKILL_KINDS[i % len(SKILL_KINDS)]
        if kind == "read":
            attribute, fact = new_fact()
            out.append(dialogue([told(attribute, fact)]) + asked(attribute, fact))
        elif kind == "recall" and rng.random() < 0.5:
            out.append(dialogue([told(*rng.choice(pool))]))
        elif kind == "recall":
            out.append("".join(asked(*rng.choice(pool)) for _ in range(rng.randint(1, 3))))
        else:
            attribute, fact = new_fact()
            value = rng.choice([v for v in attribute.values if v != fact.value])
            sentence = attribute.correct.format(s=fact.subject, v=value, old=fact.value)
            new = Fact(fact.subject, fact.attribute, value, 0, correction=True, previous=fact.value)
            out.append(dialogue([told(attribute, fact), sentence[0].upper() + sentence[1:]])
                       + asked(attribute, new))
    return "".join(doc + "\n" for doc in out)


def write_logs(stream: Stream, folder: str | os.PathLike[str], days: int | None = None) -> list[Path]:
    """Write each day as ``day-NN.jsonl`` (one conversation per line, atomically); returns paths."""
    folder = Path(folder)
    paths = []
    for day, conversations in enumerate(stream.days[:days], start=1):
        text = "".join(c.to_json() + "\n" for c in conversations)
        paths.append(atomic_write_text(folder / f"day-{day:02d}.jsonl", text))
    return paths


def _conversation_from(data: object, where: str) -> Conversation:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"logs: {where}: expected a JSON object with format {FORMAT!r}, got {got!r}")
    try:
        turns = tuple((str(s), str(t)) for s, t in data["turns"])
        facts = tuple(Fact(**f) for f in data.get("facts", ()))
        conversation = Conversation(str(data["id"]), int(data["day"]), turns, facts,
                                    float(data.get("reward", 0.0)),
                                    float(data.get("salience", 0.0)))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"logs: {where}: not a conversation of format {FORMAT} ({error})") from error
    if not turns:
        raise ValueError(f"logs: {where}: expected at least one turn, got none")
    for fact in facts:
        if not 0 <= fact.turn < len(turns) or fact.value not in turns[fact.turn][1]:
            raise ValueError(f"logs: {where}: fact {fact.subject}/{fact.attribute}: expected its "
                             f"value {fact.value!r} in turn {fact.turn}")
    return conversation


def read_logs(folder: str | os.PathLike[str]) -> list[Conversation]:
    """Every conversation of the ``*.jsonl`` files of ``folder`` (files in name order).

    An absent or empty folder, a file of another format or a line that is not a conversation
    raises ValueError naming the argument, what was expected and what came.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"logs: expected a folder of {FORMAT} .jsonl files, got {str(folder)!r}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"logs: expected .jsonl conversation logs in {folder}, got an empty folder")
    other = [p.name for p in files if p.suffix != ".jsonl"]
    if other:
        raise ValueError(f"logs: expected only .jsonl files of format {FORMAT} in {folder}, "
                         f"got {other[:3]}")
    conversations = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"logs: {path.name}:{number}: expected a JSON line of format "
                                 f"{FORMAT}, got invalid JSON ({error.msg})") from error
            conversations.append(_conversation_from(data, f"{path.name}:{number}"))
    if not conversations:
        raise ValueError(f"logs: expected conversations in {folder}, got only empty files")
    return conversations


def standing_facts(conversations: list[Conversation]) -> dict[tuple[str, str], Fact]:
    """The facts told in ``conversations`` (in order: a later telling replaces an earlier one)."""
    out: dict[tuple[str, str], Fact] = {}
    for conversation in sorted(conversations, key=lambda c: c.day):
        for fact in conversation.facts:
            out[(fact.subject, fact.attribute)] = fact
    return out
