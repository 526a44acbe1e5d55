"""Fast first stages of the dense search over a space's unit-norm embeddings (faiss, optional):
an fp16 copy whose shortlist is rescored in float32 and certified exact (``HalfScan``), and an
HNSW graph for large spaces (``Hnsw``), persisted beside the store.

Both are derived from the rows, which stay the truth. Labels are index rows; a deleted row keeps
its graph node (HNSW cannot remove one) with its vector zeroed and its label set to ``GONE``, which
no search selector admits. The persisted graph is labelled by the rows' insertion ``seq`` and
checked against the rows when it is loaded (``Hnsw.load``): nodes of rows that no longer exist are
retired, rows it lacks are added, and a file that fails its checksum is rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np

from engram.io import atomic_write_bytes

HAS_FAISS = importlib.util.find_spec("faiss") is not None
GONE = np.int64(2**62)  # label of a retired node: beyond every selector's bitmap
_FORMAT = 1


def half_error(dim: int) -> float:
    """Bound on |fp16 score − float32 score| for unit vectors: fp16 rounding (relative 2⁻¹¹ per
    component, so at most 2⁻¹¹ on a unit inner product) plus float32 accumulation on both sides."""
    return 2.0**-11 + 2 * dim * 2.0**-24


def selector(allowed: np.ndarray | None):
    """A faiss selector admitting the rows where ``allowed`` (n,) is True (None: every row)."""
    import faiss

    if allowed is None:
        return None
    bits = np.packbits(allowed, bitorder="little")
    sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
    sel.referenced = bits  # keep the bitmap alive as long as the selector
    return sel


class HalfScan:
    """An fp16 copy of the unit vectors (half the bytes of the float32 scan), rows in order."""

    def __init__(self, dim: int):
        import faiss

        self.dim = dim
        self.index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16,
                                                faiss.METRIC_INNER_PRODUCT)

    @property
    def rows(self) -> int:
        return int(self.index.ntotal)

    def extend(self, unit: np.ndarray) -> None:
        """Append rows (their float32 unit vectors)."""
        self.index.add(np.ascontiguousarray(unit, dtype=np.float32))

    def forget(self, rows: list[int]) -> None:
        """Zero the fp16 codes of deleted rows (no copy of a deleted vector stays in memory)."""
        import faiss

        codes = faiss.rev_swig_ptr(self.index.codes.data(), self.rows * self.index.code_size)
        view = codes.reshape(self.rows, self.index.code_size)
        view[[r for r in rows if r < self.rows]] = 0

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(approximate scores, rows) of the k best allowed rows per query, best first, -1 pads."""
        import faiss

        params = faiss.SearchParameters(sel=selector(allowed)) if allowed is not None else None
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)


class Hnsw:
    """An HNSW graph (faiss ``IndexHNSWFlat`` under an id map) over unit vectors, inner product."""

    def __init__(self, dim: int, m: int, ef_construction: int = 80):
        import faiss

        self.dim, self.m = dim, m
        graph = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        self.index = faiss.IndexIDMap(graph)
        self.retired = 0
        self.saved_at = 0  # nodes when last saved

    @property
    def nodes(self) -> int:
        return int(self.index.ntotal)

    def labels(self) -> np.ndarray:
        """Each node's label (its row, or ``GONE``), a copy."""
        return self._labels().copy()

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of the nodes labelled ``rows``."""
        labels = self._labels()
        order = np.argsort(labels, kind="stable")
        return self._vectors()[order[np.searchsorted(labels[order], rows)]]

    def _labels(self) -> np.ndarray:
        import faiss

        return faiss.rev_swig_ptr(self.index.id_map.data(), self.nodes).view(np.int64)

    def _vectors(self) -> np.ndarray:
        import faiss

        storage = faiss.downcast_index(faiss.downcast_index(self.index.index).storage)
        return faiss.rev_swig_ptr(storage.get_xb(), self.nodes * self.dim).reshape(self.nodes, self.dim)

    def add(self, rows: np.ndarray, unit: np.ndarray) -> None:
        """Insert rows (labels) with their unit vectors."""
        if len(rows):
            self.index.add_with_ids(np.ascontiguousarray(unit, dtype=np.float32), rows.astype(np.int64))

    def retire(self, rows: list[int]) -> None:
        """Deleted rows: their nodes stay (HNSW cannot unlink one) with zero vectors, unreachable."""
        labels = self._labels()
        hit = np.flatnonzero(np.isin(labels, np.asarray(rows, dtype=np.int64)))
        labels[hit] = GONE
        self._vectors()[hit] = 0.0
        self.retired += len(hit)

    def relabel(self, label_seqs: np.ndarray, seqs: np.ndarray) -> None:
        """Label every node by the current row holding its seq (``label_seqs``: each node's seq,
        -1 for a retired one; ``seqs``: the rows' seqs, increasing); nodes of rows that no longer
        exist are retired."""
        labels = self._labels()
        at = np.minimum(np.searchsorted(seqs, label_seqs), max(len(seqs) - 1, 0))
        found = (label_seqs >= 0) & (seqs[at] == label_seqs) if len(seqs) else np.zeros(len(labels), bool)
        self._vectors()[~found & (labels != GONE)] = 0.0
        labels[:] = np.where(found, at, GONE)
        self.retired = int((~found).sum())

    def seqs_of_nodes(self, seqs: np.ndarray) -> np.ndarray:
        """Each node's seq under the row labelling ``seqs`` (-1: retired)."""
        labels = self._labels()
        live = labels != GONE
        return np.where(live, seqs[np.where(live, labels, 0)], -1) if len(seqs) else np.full(len(labels), -1)

    def search(self, queries: np.ndarray, k: int, ef: int, allowed: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(approximate scores, rows) of up to k allowed rows per query, best first, -1 pads."""
        import faiss

        sel = selector(allowed)
        params = faiss.SearchParametersHNSW(efSearch=ef, sel=sel) if sel is not None else \
            faiss.SearchParametersHNSW(efSearch=ef)
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
        rows[rows == GONE] = -1  # only reachable without a selector, when nothing is retired
        return scores, rows

    # ------------------------------------------------------------------ persistence

    def save(self, path: Path, seqs: np.ndarray, space: str) -> None:
        """Write the graph labelled by seq (atomically, 0600), with a header that checks it."""
        import faiss

        labels = self._labels()
        rows = labels.copy()
        labels[:] = self.seqs_of_nodes(seqs)
        try:
            blob = faiss.serialize_index(self.index).tobytes()
        finally:
            labels[:] = rows
        header = {"format": _FORMAT, "space": space, "dim": self.dim, "m": self.m, "nodes": self.nodes,
                  "live": self.nodes - self.retired,
                  "max_seq": int(seqs.max()) if len(seqs) else -1, "sha256": hashlib.sha256(blob).hexdigest()}
        path.parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write_bytes(path, json.dumps(header).encode() + b"\n" + blob)
        self.saved_at = self.nodes

    @staticmethod
    def header(path: Path) -> dict | None:
        """The persisted graph's header (None: no readable file)."""
        try:
            with open(path, "rb") as handle:
                header = json.loads(handle.readline())
        except (OSError, ValueError):
            return None
        return header if isinstance(header, dict) else None

    @classmethod
    def load(cls, path: Path, space: str, dim: int, seqs: np.ndarray) -> tuple[Hnsw, int] | None:
        """The persisted graph relabelled to the current rows and the highest seq it covers, or
        None when the file is absent, damaged or made for other settings (then rebuild)."""
        import faiss

        try:
            raw = path.read_bytes()
            head, blob = raw.split(b"\n", 1)
            header = json.loads(head)
        except (OSError, ValueError):
            return None
        if (header.get("format") != _FORMAT or header.get("space") != space or header.get("dim") != dim
                or not isinstance(header.get("m"), int)
                or hashlib.sha256(blob).hexdigest() != header.get("sha256")):
            return None
        try:
            index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        except RuntimeError:
            return None
        out = cls.__new__(cls)
        out.dim, out.m, out.index, out.retired = dim, header["m"], index, 0
        if out.nodes != header["nodes"]:
            return None
        out.relabel(out._labels().copy(), seqs)
        out.saved_at = out.nodes
        return out, int(header["max_seq"])
