"""Episode text and fields in SQLite (with an FTS5 index), and the in-memory BM25 index recall scans.

Text, speaker (``who``) and ``session`` live in ``episode_text`` beside the episode row, written
in the same transaction (``insert`` / ``delete`` are called inside the backend's own); an FTS5
index over the text is kept by triggers, so it can never disagree with the rows, and
``compact`` rebuilds it so deleted text leaves no trace in its segments. Recall does not query
FTS5 on the hot path (an OR query over 10,000 rows takes milliseconds there): ``BM25Index``
holds the same text's postings in memory and scores a cue against every row with a few numpy
operations per query term; ``MemoryStore.search_text`` is the FTS5 query itself.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from engram.store.backend import EpisodeFields

MAX_TEXT_CHARS = 32_768
_CHUNK = 500

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS episode_text (
        rid INTEGER PRIMARY KEY,
        space TEXT NOT NULL,
        id TEXT NOT NULL,
        who TEXT,
        session,
        text TEXT NOT NULL,
        UNIQUE (space, id))""",
    """CREATE VIRTUAL TABLE IF NOT EXISTS episode_fts USING fts5(
        text, content='episode_text', content_rowid='rid', tokenize='porter unicode61')""",
    """CREATE TRIGGER IF NOT EXISTS episode_text_added AFTER INSERT ON episode_text BEGIN
        INSERT INTO episode_fts (rowid, text) VALUES (new.rid, new.text); END""",
    """CREATE TRIGGER IF NOT EXISTS episode_text_removed AFTER DELETE ON episode_text BEGIN
        INSERT INTO episode_fts (episode_fts, rowid, text) VALUES ('delete', old.rid, old.text); END""",
)


def create(db: sqlite3.Connection) -> None:
    """Create the text table, its FTS5 index and the triggers that keep them equal."""
    for statement in SCHEMA:
        db.execute(statement)


def insert(db: sqlite3.Connection, space: str, episodes: Iterable[Any]) -> None:
    """Store the text fields of the episodes that have any (inside the caller's transaction)."""
    rows = [(space, e.id, e.who, e.session, e.text) for e in episodes
            if e.text or e.who is not None or e.session is not None]
    if rows:
        db.executemany("INSERT INTO episode_text (space, id, who, session, text) "
                       "VALUES (?, ?, ?, ?, ?)", rows)


def delete(db: sqlite3.Connection, space: str, ids: Sequence[str]) -> None:
    """Remove the episodes' text (the trigger removes it from FTS5 too)."""
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        db.execute(f"DELETE FROM episode_text WHERE space = ? AND id IN ({','.join('?' * len(chunk))})",
                   (space, *chunk))


def rebuild(db: sqlite3.Connection) -> None:
    """Rewrite the FTS5 index from the live text, so deleted text is gone from its segments."""
    db.execute("INSERT INTO episode_fts (episode_fts) VALUES ('rebuild')")


def check(db: sqlite3.Connection, space: str) -> list[str]:
    """Problems of the text index: text rows without an episode, or an FTS5 index that
    disagrees with the text it indexes (empty list: consistent)."""
    problems = [f"{eid}: text row without an episode" for (eid,) in db.execute(
        "SELECT t.id FROM episode_text t LEFT JOIN episodes e ON e.space = t.space AND e.id = t.id "
        "WHERE t.space = ? AND e.id IS NULL", (space,))]
    try:
        db.execute("INSERT INTO episode_fts (episode_fts, rank) VALUES ('integrity-check', 1)")
    except sqlite3.DatabaseError as error:
        problems.append(f"full-text index: {error}")
    return problems


def episode_fields(db: sqlite3.Connection, space: str, ids: Sequence[str]) -> dict[str, EpisodeFields]:
    """Timestamp, tags, text, who and session of the live episodes among ``ids``."""
    found: dict[str, EpisodeFields] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        for eid, timestamp, tags, text, who, session in db.execute(
            "SELECT e.id, e.timestamp, e.tags, t.text, t.who, t.session FROM episodes e "
            "LEFT JOIN episode_text t ON t.space = e.space AND t.id = e.id "
            f"WHERE e.space = ? AND e.id IN ({','.join('?' * len(chunk))})", (space, *chunk)
        ):
            found[eid] = EpisodeFields(timestamp, tuple(json.loads(tags)), text or "", who, session)
    return found


def search(db: sqlite3.Connection, space: str, query: str, limit: int) -> list[tuple[str, float]]:
    """FTS5 full-text query (FTS5 syntax) in one space: (id, bm25 score, higher better), best first."""
    rows = db.execute(
        "SELECT t.id, -bm25(episode_fts) FROM episode_fts JOIN episode_text t ON t.rid = episode_fts.rowid "
        "WHERE episode_fts MATCH ? AND t.space = ? ORDER BY bm25(episode_fts) LIMIT ?",
        (query, space, limit),
    ).fetchall()
    return [(eid, float(score)) for eid, score in rows]


# ---------------------------------------------------------------------- tokens

_TOKEN = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset((
    "a", "about", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "being", "but", "by", "can", "could", "did", "do", "does", "doing", "done",
    "for", "from", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how",
    "i", "if", "in", "into", "is", "it", "its", "just", "me", "might", "my", "of", "on", "or",
    "our", "out", "over", "she", "should", "so", "some", "such", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "to", "too", "up", "us", "very",
    "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will",
    "with", "would", "you", "your", "yours", "s", "t", "ll", "ve", "re", "m", "d",
))


def stem(word: str) -> str:
    """A light suffix stripper (plural, -ing, -ed, -ly) so 'paints', 'painting', 'painted' meet."""
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("ly", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + keep
    return word


def tokens(text: str) -> list[str]:
    """Lower-cased, stemmed content words of ``text`` (stopwords dropped)."""
    return [stem(w) for w in _TOKEN.findall(text.lower().replace("'", "")) if w not in STOPWORDS]


class BM25Index:
    """Okapi BM25 over the rows of a recall index, kept in memory and appended to incrementally."""

    def __init__(self, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self.vocabulary: dict[str, int] = {}
        self._rows: list[list[int]] = []  # per term: rows holding it
        self._tf: list[list[int]] = []  # per term: its count in those rows
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.lengths = np.zeros(0, dtype=np.float32)
        self.alive = np.zeros(0, dtype=bool)

    @property
    def size(self) -> int:
        return len(self.lengths)

    def append(self, texts: Sequence[str]) -> None:
        """Add rows (in order) with these texts; an empty text is a row with no terms."""
        start = self.size
        lengths = np.zeros(len(texts), dtype=np.float32)
        for i, text in enumerate(texts):
            counts: dict[int, int] = {}
            for token in tokens(text):
                term = self.vocabulary.setdefault(token, len(self.vocabulary))
                counts[term] = counts.get(term, 0) + 1
            for term, count in counts.items():
                if term == len(self._rows):
                    self._rows.append([])
                    self._tf.append([])
                self._rows[term].append(start + i)
                self._tf[term].append(count)
                self._cache.pop(term, None)
            lengths[i] = sum(counts.values())
        self.lengths = np.concatenate([self.lengths, lengths])
        self.alive = np.concatenate([self.alive, lengths > 0])

    def remove(self, rows: Iterable[int]) -> None:
        for row in rows:
            if row < self.size:
                self.alive[row] = False
        self._cache.clear()

    def _postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        if term not in self._cache:
            rows = np.asarray(self._rows[term], dtype=np.int64)
            keep = self.alive[rows]
            self._cache[term] = (rows[keep], np.asarray(self._tf[term], dtype=np.float32)[keep])
        return self._cache[term]

    def query_terms(self, text: str) -> list[int]:
        """Known term ids of a cue (unknown words cannot match anything)."""
        return sorted({self.vocabulary[t] for t in tokens(text) if t in self.vocabulary})

    def scores(self, terms: Sequence[int], n: int) -> tuple[np.ndarray, float]:
        """(BM25 score of each of the first ``n`` rows, the score a row matching every term
        with maximal weight would get) for the query's term ids."""
        out = np.zeros(n, dtype=np.float32)
        live = max(int(self.alive.sum()), 1)
        avg = float(self.lengths[self.alive].mean()) if self.alive.any() else 1.0
        ceiling = 0.0
        for term in terms:
            rows, tf = self._postings(term)
            if len(rows) == 0:
                continue
            idf = float(np.log1p((live - len(rows) + 0.5) / (len(rows) + 0.5)))
            norm = self.k1 * (1.0 - self.b + self.b * self.lengths[rows] / avg)
            inside = rows < n  # postings are unique per term, so plain fancy-index addition is exact
            out[rows[inside]] += (idf * tf * (self.k1 + 1.0) / (tf + norm))[inside]
            ceiling += idf * (self.k1 + 1.0)
        return out, ceiling


__all__ = ["MAX_TEXT_CHARS", "STOPWORDS", "BM25Index", "check", "create", "delete", "episode_fields",
           "insert", "rebuild", "search", "stem", "tokens"]
