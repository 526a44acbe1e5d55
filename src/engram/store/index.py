"""The in-memory recall index of one space: unit-norm embeddings, ids and decay state.

Built from the backend and kept in step with it: this process's writes are applied directly;
other processes' commits are noticed through the backend's cheap ``changed()`` check and read
incrementally (new rows) or, after deletions and compactions elsewhere, by a full reload.
"""

from __future__ import annotations

import numpy as np

from engram.store.backend import IndexRows, StorageBackend


class RecallIndex:
    """Rows in insertion order; deleted rows stay as dead rows until the next reload."""

    def __init__(self, dim: int):
        self.dim = dim
        self.unit = np.zeros((0, dim), dtype=np.float32)
        self.ids: list[str] = []
        self.kinds: list[str] = []
        self.row_of: dict[str, int] = {}
        self.stability = np.zeros(0)
        self.last_access = np.zeros(0)
        self.alive = np.zeros(0, dtype=bool)
        self.n_dead = 0
        self.max_seq = -1
        self._capacity_rows = 0
        self._faiss = None
        self._faiss_rows = 0
        self._projection: np.ndarray | None = None
        self._sketch = np.zeros((0, 0), dtype=np.float32)

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
        self.__init__(self.dim)
        self.append(backend.index_rows(space))

    def sync(self, backend: StorageBackend, space: str) -> bool:
        """Catch up with commits from other connections; True when there were any."""
        if not backend.changed():
            return False
        new = backend.index_rows(space, after_seq=self.max_seq)
        self.append(new)
        if backend.count(space) != self.live:
            self.reload(backend, space)
        return True

    def append(self, rows: IndexRows) -> None:
        n_new = len(rows.ids)
        if n_new == 0:
            return
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
        self.kinds.extend(rows.kinds or ["episode"] * n_new)
        self.stability = np.concatenate([self.stability, rows.stability])
        self.last_access = np.concatenate([self.last_access, rows.last_access])
        self.alive = np.concatenate([self.alive, np.ones(n_new, dtype=bool)])
        self.max_seq = max(self.max_seq, int(rows.seqs.max()))

    def remove(self, ids: list[str]) -> None:
        for eid in ids:
            row = self.row_of.pop(eid, None)
            if row is not None:
                self.alive[row] = False
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

    # ------------------------------------------------------------------ faiss (large spaces)

    def faiss_search(self, queries: np.ndarray, c: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-C with a faiss IVF index over the live rows (built on first use)."""
        import faiss

        if self._faiss is None:
            live = np.flatnonzero(self.alive)
            n_lists = max(16, int(np.sqrt(len(live))))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, n_lists, faiss.METRIC_INNER_PRODUCT)
            sample = self.unit[live[:: max(1, len(live) // (64 * n_lists))]]
            index.train(np.ascontiguousarray(sample))
            self._faiss = faiss.IndexIDMap(index)
            self._faiss.add_with_ids(np.ascontiguousarray(self.unit[live]), live.astype(np.int64))
            self._faiss_rows = self.size
        elif self._faiss_rows < self.size:
            new = np.arange(self._faiss_rows, self.size)
            new = new[self.alive[new]]
            self._faiss.add_with_ids(np.ascontiguousarray(self.unit[new]), new.astype(np.int64))
            self._faiss_rows = self.size
        faiss.extract_index_ivf(self._faiss).nprobe = nprobe
        scores, rows = self._faiss.search(np.ascontiguousarray(queries, dtype=np.float32), c + 16)
        valid = rows >= 0
        valid[valid] = self.alive[rows[valid]]
        out_rows = np.full((len(queries), c), -1, dtype=np.int64)
        out_scores = np.full((len(queries), c), -np.inf, dtype=np.float32)
        for i in range(len(queries)):
            keep = np.flatnonzero(valid[i])[:c]
            out_rows[i, : len(keep)] = rows[i, keep]
            out_scores[i, : len(keep)] = scores[i, keep]
        return out_rows, out_scores
