"""The in-memory recall index of one space: unit-norm embeddings, ids, decay state and the
fields recall filters and ranks on (speaker, session, time, tags, text as BM25 postings), plus
the episode graph (temporal neighbours within a session, sleep's links).

Built from the backend and kept in step with it: this process's writes are applied directly;
other processes' commits are noticed through the backend's cheap ``changed()`` check and read
incrementally (new rows) or, after deletions and compactions elsewhere, by a full reload.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from engram.store import ann
from engram.store.backend import EpisodeFields, IndexRows, StorageBackend
from engram.store.lexical import STOPWORDS, BM25Index, stem, tokens
from engram.store.pipeline import CueParts, Graph, RecallConfig, SpeakerGroups, speaker_groups

_WORDS = re.compile(r"[A-Za-z]+")
_FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|i'll|my|me|mine|we|our|us)\b")
_SECOND_PERSON = re.compile(r"\b(you|your|you're|you've|yours)\b")


def _person(text: str) -> float:
    """+1 when a text speaks of its speaker (first person), −1 when it only addresses the
    listener (second person), 0 otherwise: who a turn's news belongs to (English only)."""
    lowered = text.lower()
    first, second = bool(_FIRST_PERSON.search(lowered)), bool(_SECOND_PERSON.search(lowered))
    return float(first) - float(second)


class RecallIndex:
    """Rows in insertion order; deleted rows stay as dead rows until the next reload."""

    def __init__(self, dim: int):
        self.dim = dim
        self.unit = np.zeros((0, dim), dtype=np.float32)
        self.ids: list[str] = []
        self.seqs = np.zeros(0, dtype=np.int64)  # each row's insertion seq in the backend
        self.kinds: list[str] = []
        self.row_of: dict[str, int] = {}
        self.stability = np.zeros(0)
        self.last_access = np.zeros(0)
        self.alive = np.zeros(0, dtype=bool)
        self.n_dead = 0
        self.max_seq = -1
        self._capacity_rows = 0
        self._half: ann.HalfScan | None = None
        self._hnsw: ann.Hnsw | None = None
        self._hnsw_file: Path | None = None
        self._hnsw_rows = 0  # rows the graph has seen (alive or not)
        self._hnsw_pending = False  # a persisted graph not yet read
        self._space = ""
        self._projection: np.ndarray | None = None
        self._sketch = np.zeros((0, 0), dtype=np.float32)
        self.timestamps = np.zeros(0)
        self.who = np.zeros(0, dtype=np.int32)  # code in ``speakers``, -1: none
        self.session = np.zeros(0, dtype=np.int32)  # code in ``sessions``, -1: none
        self.speakers: dict[str, int] = {}
        self.sessions: dict[Any, int] = {}
        self.tag_rows: dict[str, list[int]] = {}
        self.texts: list[str] = []
        self.words: set[str] = set()  # every lower-cased word of the texts, unstemmed (names)
        self.prev = np.zeros(0, dtype=np.int64)  # the row before in the same session, -1: none
        self.next = np.zeros(0, dtype=np.int64)
        self._last_in_session: dict[int, int] = {}
        self.lexical = BM25Index()
        self.empty_prototype = np.zeros(0, dtype=bool)
        self.person = np.zeros(0, dtype=np.float32)  # +1 first-person text, −1 second-person, 0
        self._speaker_patterns: dict[int, re.Pattern[str]] = {}
        self._blind_patterns: dict[int, re.Pattern[str]] = {}
        self._speaker_words: set[str] = set()
        self._links: sparse.csr_matrix | None = None
        self._link_kinds: tuple[str, ...] = ()
        self._link_degree: np.ndarray | None = None
        self._groups: SpeakerGroups | None = None

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def live(self) -> int:
        return self.size - self.n_dead

    def view(self) -> np.ndarray:
        """The (n, d) unit-norm matrix (a view, no copy)."""
        return self.unit[: self.size]

    def reload(self, backend: StorageBackend, space: str) -> None:
        """Rebuild from the backend; an HNSW graph in memory or persisted is relabelled to the new
        rows (rows gone are retired) rather than rebuilt, and written back when that retired any,
        so a compaction leaves no deleted vector in it on disk."""
        graph, node_seqs = self._hnsw, None if self._hnsw is None else self._hnsw.seqs_of_nodes(self.seqs)
        self.__init__(self.dim)
        self.load(backend, space, backend.index_rows(space))
        self._space = space
        root = getattr(backend, "path", None)
        self._hnsw_file = None if root is None else Path(root) / "index" / f"{space}.hnsw"
        if graph is not None:
            graph.relabel(node_seqs, self.seqs)
            labels = graph.labels()
            missing = np.setdiff1d(np.arange(self.size), labels[labels != ann.GONE])
            graph.add(missing, self.unit[missing])
            self._hnsw, self._hnsw_rows = graph, self.size
            if graph.retired or len(missing):
                self._save_graph()
        elif self._hnsw_file is not None and ann.HAS_FAISS and (header := ann.Hnsw.header(self._hnsw_file)):
            # Read when first searched; now only when rows it holds were deleted since it was saved,
            # so that it is rewritten without them (a compaction leaves no deleted vector on disk).
            self._hnsw_pending = True
            covered = np.count_nonzero(self.seqs <= header.get("max_seq", -1))
            if covered < header.get("live", 0):
                self._load_graph()

    def load(self, backend: StorageBackend, space: str, rows: IndexRows) -> None:
        """Append rows read from the backend together with their fields."""
        self.append(rows, backend.episode_fields(space, rows.ids) if rows.ids else {})

    def sync(self, backend: StorageBackend, space: str) -> bool:
        """Catch up with commits from other connections; True when there were any."""
        if not backend.changed():
            return False
        new = backend.index_rows(space, after_seq=self.max_seq)
        self.load(backend, space, new)
        self._links = None  # another process may have slept (new links) or deleted
        if backend.count(space) != self.live:
            self.reload(backend, space)
        return True

    def append(self, rows: IndexRows, fields: dict[str, EpisodeFields] | None = None) -> None:
        n_new = len(rows.ids)
        if n_new == 0:
            return
        self._append_fields(rows.ids, rows.kinds or ["episode"] * n_new, fields or {})
        start = self.size
        if start + n_new > self._capacity_rows:
            capacity = max(1024, 2 * (start + n_new))
            grown = np.zeros((capacity, self.dim), dtype=np.float32)
            grown[:start] = self.unit[:start]
            self.unit = grown
            self._capacity_rows = capacity
        norms = np.linalg.norm(rows.embeddings, axis=1, keepdims=True)
        self.unit[start : start + n_new] = rows.embeddings / np.maximum(norms, 1e-12)
        for i, eid in enumerate(rows.ids):
            self.row_of[eid] = start + i
        self.ids.extend(rows.ids)
        self.seqs = np.concatenate([self.seqs, rows.seqs.astype(np.int64)])
        self.kinds.extend(rows.kinds or ["episode"] * n_new)
        self.stability = np.concatenate([self.stability, rows.stability])
        self.last_access = np.concatenate([self.last_access, rows.last_access])
        self.alive = np.concatenate([self.alive, np.ones(n_new, dtype=bool)])
        self.max_seq = max(self.max_seq, int(rows.seqs.max()))

    def _append_fields(self, ids: list[str], kinds: list[str], fields: dict[str, EpisodeFields]) -> None:
        start = self.size
        n = len(ids)
        stamps, who, session = np.zeros(n), np.full(n, -1, np.int32), np.full(n, -1, np.int32)
        prev, texts = np.full(n, -1, np.int64), []
        self.next = np.concatenate([self.next, np.full(n, -1, np.int64)])
        for i, eid in enumerate(ids):
            f = fields.get(eid)
            texts.append(f.text if f else "")
            if f is None:
                continue
            stamps[i] = f.timestamp
            if f.who is not None:
                who[i] = self.speakers.setdefault(f.who, len(self.speakers))
            for tag in f.tags:
                self.tag_rows.setdefault(tag, []).append(start + i)
            if f.session is not None:
                code = self.sessions.setdefault(f.session, len(self.sessions))
                session[i] = code
                before = self._last_in_session.get(code, -1)
                prev[i] = before
                if before >= 0:
                    self.next[before] = start + i
                self._last_in_session[code] = start + i
        self.timestamps = np.concatenate([self.timestamps, stamps])
        self.who = np.concatenate([self.who, who])
        self.session = np.concatenate([self.session, session])
        self.prev = np.concatenate([self.prev, prev])
        self.texts.extend(texts)
        for text in texts:
            self.words.update(_WORDS.findall(text.lower()))
        self.lexical.append(texts)
        empty = np.array([k == "semantic" and not t for k, t in zip(kinds, texts, strict=True)], dtype=bool)
        self.empty_prototype = np.concatenate([self.empty_prototype, empty])
        self.person = np.concatenate([self.person, np.array([_person(t) for t in texts], dtype=np.float32)])
        if self._links is not None:  # new rows have no links until a sleep links them
            self._links.resize((start + n, start + n))

    def cue_parts(self, texts: list[str | None]) -> CueParts:
        """Lexical terms, named speakers, word coverage and unknown names of each text cue."""
        b = len(texts)
        parts = CueParts.none(b)
        self._refresh_speakers()
        patterns, speaker_words = self._speaker_patterns, self._speaker_words
        known_words = self.lexical.vocabulary
        for i, text in enumerate(texts):
            if not text:
                continue
            cue_tokens = tokens(text)
            parts.terms[i] = self.lexical.term_ids(cue_tokens)
            lowered = text.lower()
            parts.speakers[i] = [code for code, pattern in patterns.items() if pattern.search(lowered)]
            if parts.speakers[i]:
                blind = self.blind_text(text, parts.speakers[i])
                parts.blind_texts[i] = blind
                parts.blind_terms[i] = self.lexical.term_ids(tokens(blind))
            words = set(cue_tokens)
            if words:
                seen = [w for w in words if w in known_words or w in speaker_words]
                parts.coverage[i] = len(seen) / len(words)
            # A capitalised word after the first is a name; one the space never saw is a stranger
            # (compared unstemmed: "Tim" is not "times").
            names = self.raw_names_in(text)
            parts.unknown_names[i] = sum(w not in self.words for w in names)
        return parts

    def blind_text(self, text: str, codes: list[int] | None = None) -> str:
        """The text with the speakers it names (``codes``: these only) replaced by "someone"."""
        self._refresh_speakers()
        for code, pattern in self._blind_patterns.items():
            if codes is None or code in codes:
                text = pattern.sub("someone", text)
        return text

    def content_free_prototypes(self) -> np.ndarray | None:
        """(n,) semantic prototypes without text, which must never take result slots (None: none)."""
        return self.empty_prototype if self.empty_prototype.any() else None

    def _refresh_speakers(self) -> None:
        """Rebuild the speaker-name patterns and words when a new speaker appeared."""
        if len(self._speaker_patterns) != len(self.speakers):
            self._speaker_patterns = {code: re.compile(rf"\b{re.escape(name.lower())}\b")
                                      for name, code in self.speakers.items()}
            self._speaker_words = {w for name in self.speakers for w in tokens(name)}
            self._blind_patterns = {code: re.compile(rf"\b{re.escape(name)}\b", re.IGNORECASE)
                                    for name, code in self.speakers.items()}

    def raw_names_in(self, text: str) -> set[str]:
        """``names_in`` lower-cased but not stemmed."""
        self._refresh_speakers()
        words = (w.lower() for w in _WORDS.findall(text)[1:] if w[0].isupper())
        return {w for w in words if w not in STOPWORDS and stem(w) not in self._speaker_words}

    def names_in(self, text: str) -> set[str]:
        """Stems of the capitalised words of a text after its first word (names, places, titles),
        other than stopwords and the space's speakers."""
        self._refresh_speakers()
        return {stem(w.lower()) for w in _WORDS.findall(text)[1:]
                if w[0].isupper() and w.lower() not in STOPWORDS} - self._speaker_words

    def links_changed(self) -> None:
        """Reread the links on next use (sleep added some, or episodes were deleted)."""
        self._links = None

    def links_matrix(self, backend: StorageBackend, space: str,
                     kinds: tuple[str, ...]) -> sparse.csr_matrix:
        """(n, n) symmetric weights of sleep's links of these kinds between live rows (built
        when first needed)."""
        if self._links is None or self._link_kinds != kinds:
            src, dst, weight = [], [], []
            self._link_kinds = kinds
            for link in backend.links(space):
                a, b = self.row_of.get(link.src), self.row_of.get(link.dst)
                if a is not None and b is not None and link.kind in kinds:
                    src += [a, b]
                    dst += [b, a]
                    weight += [link.weight, link.weight]
            self._links = sparse.csr_matrix((np.asarray(weight, np.float32), (src, dst)),
                                            shape=(self.size, self.size))
            self._link_degree = None
        return self._links

    def graph(self, backend: StorageBackend, space: str, kinds: tuple[str, ...]) -> Graph | None:
        """The episode graph recall completes over: session neighbours and sleep's links of
        these kinds (None: the space has neither)."""
        links = self.links_matrix(backend, space, kinds)
        if not links.nnz:
            return None if not self.sessions else Graph(self.prev, self.next, None, None)
        if self._link_degree is None or len(self._link_degree) != links.shape[0]:
            self._link_degree = np.maximum(np.asarray(links.sum(1)).ravel(), 1.0)
        return Graph(self.prev, self.next, links, self._link_degree)

    def speaker_groups(self) -> SpeakerGroups:
        """The rows grouped by speaker and first person (rebuilt after rows were added)."""
        if self._groups is None or len(self._groups.order) != self.size:
            self._groups = speaker_groups(self.who, self.person > 0)
        return self._groups

    def remove(self, ids: list[str]) -> None:
        """Mark rows deleted and zero every in-memory copy of their vectors."""
        self._links = None
        removed = [self.row_of[eid] for eid in ids if eid in self.row_of]
        if self._half is not None:
            self._half.forget(removed)
        if self._hnsw is not None:
            self._hnsw.retire(removed)
        for eid in ids:
            row = self.row_of.pop(eid, None)
            if row is not None:
                self.alive[row] = False
                self.lexical.remove([row])
                self.n_dead += 1
                self.unit[row] = 0.0
                if row < len(self._sketch):
                    self._sketch[row] = 0.0

    def dead_mask(self) -> np.ndarray | None:
        return ~self.alive if self.n_dead else None

    # ------------------------------------------------------------------ sketch (two-stage search)

    def sketch_search(self, queries: np.ndarray, c: int, sketch_dim: int, shortlist: int, seed: int,
                      dead: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-C by a two-stage scan: a random projection to ``sketch_dim`` dimensions (a
        Johnson–Lindenstrauss sketch, ~d/sketch_dim times less memory traffic) shortlists
        ``shortlist`` rows per cue, which are then rescored exactly; best first, -1 pads."""
        if self._projection is None or self._projection.shape[1] != sketch_dim:
            rng = np.random.default_rng(seed)
            self._projection = (rng.standard_normal((self.dim, sketch_dim)) / np.sqrt(sketch_dim)).astype(
                np.float32
            )
            self._sketch = np.zeros((0, sketch_dim), dtype=np.float32)
        if len(self._sketch) < self.size:
            new = self.unit[len(self._sketch) : self.size] @ self._projection
            self._sketch = np.concatenate([self._sketch, new.astype(np.float32)])
        rough = (queries @ self._projection) @ self._sketch[: self.size].T
        if dead is not None:
            rough[:, dead] = -np.inf
        s = min(shortlist, self.size)
        short = np.argpartition(-rough, s - 1, axis=1)[:, :s] if s < self.size else np.broadcast_to(
            np.arange(self.size), (len(queries), self.size))
        exact = np.einsum("bsd,bd->bs", self.unit[short], queries)
        exact[~np.isfinite(np.take_along_axis(rough, short, 1))] = -np.inf
        c_eff = min(c, s)
        top = np.argpartition(-exact, c_eff - 1, axis=1)[:, :c_eff] if c_eff < s else np.broadcast_to(
            np.arange(s), (len(queries), s))
        top_scores = np.take_along_axis(exact, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        rows = np.take_along_axis(np.take_along_axis(short, top, 1), order, 1)
        scores = np.take_along_axis(top_scores, order, 1)
        rows = np.where(np.isfinite(scores), rows, -1)
        if rows.shape[1] < c:
            rows = np.pad(rows, ((0, 0), (0, c - rows.shape[1])), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, c - scores.shape[1])), constant_values=-np.inf)
        return rows, scores

    # ------------------------------------------------------------------ fast first stages

    def shortlist(self, queries: np.ndarray, dead: np.ndarray | None, config: RecallConfig, exact: bool
                  ) -> tuple[np.ndarray, np.ndarray] | None:
        """Candidates (rows (B, S), exact float32 scores; -1 pads) of unit cues among the rows
        ``dead`` does not hide, from the HNSW graph (approximate) or the certified fp16 scan (exact),
        when ``exact``: the cues' score is the cosine alone, so the top C by it are the answer;
        None: scan every row in float32 (a fused score, a small space, or faiss absent)."""
        if not exact or not ann.HAS_FAISS or self.live == 0:
            # A fused score (lexical, speaker, graph) needs the dense score of every row anyway.
            return None
        allowed = None if dead is None else ~dead
        if config.ann_above is not None and self.live >= config.ann_above:
            n_allowed = self.size if allowed is None else int(np.count_nonzero(allowed))
            if n_allowed > 16 * config.ann_ef:
                rows, scores = self._graph_search(queries, allowed, config)
                if (np.count_nonzero(rows >= 0, axis=1) >= min(config.candidates, n_allowed)).all():
                    return rows, scores
            # A filter that keeps few rows (or that the graph search could not fill): those rows exactly.
            kept = np.flatnonzero(allowed) if allowed is not None else np.arange(self.size)
            return np.broadcast_to(kept, (len(queries), len(kept))), self.rescore(
                np.broadcast_to(kept, (len(queries), len(kept))), queries)
        if config.half_above is not None and self.live >= config.half_above:
            return self._half_search(queries, allowed, config.candidates)
        return None

    def dense_shortlist(self, queries: np.ndarray, dead: np.ndarray | None, config: RecallConfig
                        ) -> np.ndarray:
        """(B, S) rows of each unit cue's ``config.shortlist_dense`` best rows by the dense cosine,
        best first, among those ``dead`` does not hide (-1 pads): the HNSW graph's from
        ``ann_above`` live rows on (with faiss), else an exact scan."""
        s = config.shortlist_dense
        allowed = None if dead is None else ~dead
        if ann.HAS_FAISS and config.ann_above is not None and self.live >= config.ann_above:
            n_allowed = self.size if allowed is None else int(np.count_nonzero(allowed))
            ef = max(config.ann_ef, s)
            if n_allowed > 16 * ef:
                rows = self._graph_search(queries, allowed, config, k=s, ef=ef, rescore=False)[0]
                if (np.count_nonzero(rows >= 0, axis=1) >= min(s, n_allowed)).all():
                    return rows
        scores = queries @ self.view().T
        if dead is not None:
            scores[:, dead] = -np.inf
        top = np.argpartition(-scores, s - 1, axis=1)[:, :s] if s < self.size else np.broadcast_to(
            np.arange(self.size), scores.shape)
        best = np.take_along_axis(scores, top, 1)
        order = np.argsort(-best, axis=1, kind="stable")
        top, best = np.take_along_axis(top, order, 1), np.take_along_axis(best, order, 1)
        return np.where(np.isfinite(best), top, -1)

    def rescore(self, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """(B, S) exact float32 inner products of each cue with its shortlisted rows (-inf at -1)."""
        safe = np.maximum(rows, 0)
        if len(queries) == 1:
            exact = (self.unit[safe[0]] @ queries[0])[None, :]
        else:
            exact = np.einsum("bsd,bd->bs", self.unit[safe], queries)
        return np.where(rows >= 0, exact, -np.inf).astype(np.float32, copy=False)

    def _half_search(self, queries: np.ndarray, allowed: np.ndarray | None, c: int
                     ) -> tuple[np.ndarray, np.ndarray] | None:
        """The fp16 scan's shortlist, rescored; widened until its worst approximate score plus
        the fp16 error bound is below each cue's C-th exact score (then no row outside it can
        enter the top C), or None when it would have to hold a quarter of the rows."""
        if self._half is None:
            self._half = ann.HalfScan(self.dim)
        if self._half.rows < self.size:
            self._half.extend(self.unit[self._half.rows : self.size])
        error = ann.half_error(self.dim)
        s = max(4 * c, 128)
        while 4 * s <= self.size:
            approx, rows = self._half.search(queries, s, allowed)
            exact = self.rescore(rows, queries)
            kth = -np.sort(-exact, axis=1)[:, c - 1] if s >= c else np.full(len(queries), -np.inf)
            complete = rows[:, -1] < 0  # fewer allowed rows than s: all of them are here
            if (complete | (approx[:, -1] + error < kth)).all():
                return rows, exact
            s *= 4
        return None

    def _graph_search(self, queries: np.ndarray, allowed: np.ndarray | None, config: RecallConfig,
                      k: int | None = None, ef: int | None = None, rescore: bool = True
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """The HNSW graph's ``k`` (default ``ann_shortlist``) best rows, searched with ``ef``
        (default ``ann_ef``) candidates (the graph built, loaded or caught up first), and their
        exact scores (None without ``rescore``)."""
        if self._hnsw is None and self._hnsw_pending:
            self._load_graph()
        graph = self._hnsw
        if graph is not None and (graph.m != config.ann_m or graph.retired > 0.2 * max(graph.nodes, 1)):
            graph = None  # other settings, or too many retired nodes: rebuild
        if graph is None:
            graph = ann.Hnsw(self.dim, config.ann_m)
            live = np.flatnonzero(self.alive)
            graph.add(live, self.unit[live])
            self._hnsw = graph
            self._hnsw_rows = self.size
            self._save_graph()
        elif self._hnsw_rows < self.size:
            new = np.arange(self._hnsw_rows, self.size)
            new = new[self.alive[new]]
            graph.add(new, self.unit[new])
            self._hnsw_rows = self.size
            if graph.nodes - graph.saved_at >= max(1024, graph.nodes // 10):
                self._save_graph()
        _, rows = graph.search(queries, config.ann_shortlist if k is None else k,
                               config.ann_ef if ef is None else ef, allowed)
        return rows, self.rescore(rows, queries) if rescore else None

    def _save_graph(self) -> None:
        """Persist the graph beside the store (a derived copy: a failure only warns)."""
        if self._hnsw is None or self._hnsw_file is None:
            return
        try:
            self._hnsw.save(self._hnsw_file, self.seqs, self._space)
        except OSError as error:
            warnings.warn(f"recall index of space {self._space!r}: could not persist the HNSW graph "
                          f"({error}); it is rebuilt when next needed", stacklevel=3)

    def _load_graph(self) -> None:
        """Adopt the persisted graph when it checks out against the rows: its checksum, its
        settings, one node per row it covers (seq ≤ its highest) with the same vector; rows added
        since (e.g. acknowledged before a crash) are inserted, and it is written back when it
        changed. Anything else leaves it to be rebuilt when next needed."""
        self._hnsw_pending = False
        loaded = ann.Hnsw.load(self._hnsw_file, self._space, self.dim, self.seqs)
        if loaded is None:
            return
        graph, max_seq = loaded
        covered = np.flatnonzero(self.seqs <= max_seq)
        labels = graph.labels()
        live_nodes = labels[labels != ann.GONE]
        sample = live_nodes[:: max(1, len(live_nodes) // 64)]
        if (len(live_nodes) != len(covered) or not np.array_equal(np.sort(live_nodes), covered)
                or not np.array_equal(graph.vectors_of(sample), self.unit[sample])):
            return
        new = np.flatnonzero(self.seqs > max_seq)
        graph.add(new, self.unit[new])
        self._hnsw = graph
        self._hnsw_rows = self.size
        if len(new) or graph.retired:
            self._save_graph()
