"""Top-k search: one exact implementation (numpy or torch, chunked) and one approximate index.

Every similarity search in Engram goes through here: the engine's recall index, the kNN
memories of the streaming models and the kNN-LM's episodic memory.

Conventions:
- ``metric`` is ``"ip"`` (inner product, larger is nearer), ``"cosine"`` (inner product of
  unit vectors) or ``"l2"`` (squared Euclidean distance, smaller is nearer).
- Results are best first; equal scores are ordered by the lower database index, so the
  answer does not depend on chunking, on the device or on the selection routine.
- Every result has exactly ``k`` columns: where fewer than ``k`` rows are eligible (k > n, an
  empty database, excluded rows) the tail is padded with index −1 and value −inf (``"ip"``,
  ``"cosine"``) or +inf (``"l2"``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engram import codes
from engram.params import Interval, Options, check

METRICS = ("ip", "cosine", "l2")
HAS_FAISS = importlib.util.find_spec("faiss") is not None
# Database rows scored per step: with 1,024 queries a float32 chunk of scores is 256 MiB.
DEFAULT_CHUNK = 65_536
_EPS = 1e-12

Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class TopK:
    """The k best database rows of each query: ``values`` (..., Q, k) in the metric's units
    (similarity, or squared distance for ``"l2"``) and ``indices`` (..., Q, k), −1 padding."""

    values: Array
    indices: Array


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (str, bytes)) or not hasattr(x, "__len__"):
        raise TypeError(f"{name}: expected an array of numbers, got {type(x).__name__}")
    try:
        array = np.asarray(x)
        if array.dtype.kind not in "fiub":
            raise TypeError
        if array.dtype.kind != "f":
            array = array.astype(np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: expected an array of numbers, got {type(x).__name__}") from error
    return torch.from_numpy(array)


def _goodness(queries: torch.Tensor, chunk: torch.Tensor, metric: str) -> torch.Tensor:
    """Scores where larger is nearer: the similarity, or the negated squared distance."""
    scores = queries @ chunk.transpose(-1, -2)
    if metric == "l2":
        q2 = (queries * queries).sum(-1, keepdim=True)
        x2 = (chunk * chunk).sum(-1).unsqueeze(-2)
        scores = -(q2 - 2 * scores + x2).clamp_min(0.0)
    return scores


def _best_k(values: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest ``values`` along the last axis (all when fewer), best first, ties to the
    lower database index: ``indices`` ascend along the axis among equal values (true for a
    running best kept in this order followed by a later chunk), so position order is index
    order and ``codes.winners``' tie rule is the search's."""
    if values.shape[-1] == 0:
        return values, indices
    where = codes.winners(values, min(k, values.shape[-1]))
    return values.gather(-1, where), indices.gather(-1, where)


def topk(
    queries: Array,
    database: Array,
    k: int,
    *,
    metric: str = "ip",
    exclude: Array | None = None,
    chunk: int = DEFAULT_CHUNK,
) -> TopK:
    """Exact top-k of each query over the database rows, scanned ``chunk`` rows at a time.

    Args:
        queries: (Q, d) or one query (d,); torch inputs may carry leading batch dimensions
            (*B, Q, d) that broadcast with the database's (*B, n, d).
        database: (n, d), or (*B, n, d).
        k: results per query (k > n pads, see the module docstring).
        metric: ``"ip"``, ``"cosine"`` or ``"l2"``.
        exclude: bool, True for rows never returned: (n,) for every query or (..., Q, n).
        chunk: database rows scored at once; memory is O(Q · (chunk + k)).

    Returns numpy arrays for numpy inputs and tensors (on the inputs' device, differentiable
    in ``values``) for torch inputs.

    Example:
        >>> topk(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), 1).indices.ravel()
        array([0, 1, 2])
    """
    as_numpy = not isinstance(queries, torch.Tensor) and not isinstance(database, torch.Tensor)
    check("k", k, Interval(int, 1, None))
    check("metric", metric, Options(METRICS))
    check("chunk", chunk, Interval(int, 1, None))
    q = _as_tensor(queries, "queries")
    x = _as_tensor(database, "database")
    if q.dim() == 0 or x.dim() < 2:
        raise ValueError(
            f"queries/database: expected shapes (Q, d) or (d,) and (n, d), "
            f"got {tuple(q.shape)} and {tuple(x.shape)}"
        )
    single = q.dim() == 1
    if single:
        q = q[None]
    if q.shape[-1] != x.shape[-1]:
        raise ValueError(
            f"queries: expected last dimension {x.shape[-1]} (the database's), got {tuple(q.shape)}"
        )
    if x.device != q.device:
        raise ValueError(f"database: expected device {q.device} (the queries'), got {x.device}")
    dtype = torch.promote_types(q.dtype, x.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float32
    q, x = q.to(dtype), x.to(dtype)
    if not bool(torch.isfinite(q).all()):
        raise ValueError("queries: contains NaN or infinite values")
    n = x.shape[-2]
    if metric == "cosine":
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    mask = None
    if exclude is not None:
        mask = exclude if isinstance(exclude, torch.Tensor) else torch.from_numpy(np.asarray(exclude))
        mask = mask.to(q.device)
        if mask.dtype != torch.bool or mask.shape[-1] != n:
            raise ValueError(
                f"exclude: expected a bool mask over the {n} database rows, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
    lead = torch.broadcast_shapes(q.shape[:-2], x.shape[:-2])
    values = torch.full((*lead, q.shape[-2], 0), -torch.inf, dtype=dtype, device=q.device)
    indices = torch.zeros(values.shape, dtype=torch.int64, device=q.device)
    for start in range(0, n, chunk):
        rows = x[..., start : start + chunk, :]
        if metric == "cosine":
            rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(_EPS)
        scores = _goodness(q, rows, metric)
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("database: contains NaN or infinite values (or scores overflow)")
        if mask is not None:
            scores = scores.masked_fill(mask[..., start : start + rows.shape[-2]], -torch.inf)
        at = torch.arange(start, start + rows.shape[-2], device=q.device).expand(scores.shape)
        values = torch.cat([values.expand(*scores.shape[:-1], -1), scores], -1)
        indices = torch.cat([indices.expand(*scores.shape[:-1], -1), at], -1)
        values, indices = _best_k(values, indices, k)
    missing = k - values.shape[-1]
    if missing > 0:
        values = torch.cat([values, values.new_full((*values.shape[:-1], missing), -torch.inf)], -1)
        indices = torch.cat([indices, indices.new_full((*indices.shape[:-1], missing), -1)], -1)
    indices = torch.where(torch.isinf(values), -1, indices)
    if metric == "l2":
        values = -values
    if single:
        values, indices = values[0], indices[0]
    if as_numpy:
        return TopK(values.numpy(), indices.numpy())
    return TopK(values, indices)


class ApproximateIndex:
    """An approximate (or, with ``lists=None``, flat exact) faiss index that grows by ``add``.

    Args:
        dim: vector size d.
        metric: ``"ip"``, ``"cosine"`` (vectors normalised on the way in) or ``"l2"``.
        lists: inverted lists of an IVF index, trained on the first ``add``; ``None`` for a
            flat index (exact, faiss's own kernels). ``"auto"`` takes max(16, √n).
        nprobe: lists visited per query (IVF only); more is slower and closer to exact.

    ``search`` follows ``topk``'s conventions (best first, −1 padding, ``exclude``), but
    faiss orders ties as it likes. Rows are numbered in the order they were added.
    """

    def __init__(self, dim: int, *, metric: str = "ip", lists: int | str | None = None, nprobe: int = 8):
        if not HAS_FAISS:
            raise ImportError("ApproximateIndex needs faiss: pip install 'engram[store]' (faiss-cpu)")
        self.dim = check("dim", dim, Interval(int, 1, None))
        self.metric = check("metric", metric, Options(METRICS))
        if lists is not None and lists != "auto":
            check("lists", lists, Interval(int, 1, None))
        self.lists = lists
        self.nprobe = check("nprobe", nprobe, Interval(int, 1, None))
        self._index: Any = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def _prepare(self, vectors: Array, name: str) -> np.ndarray:
        array = _as_tensor(vectors, name).detach().cpu().numpy()
        array = np.ascontiguousarray(np.atleast_2d(array), dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"{name}: expected shape (n, {self.dim}), got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        if self.metric == "cosine":
            array = array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), _EPS)
        return np.ascontiguousarray(array, dtype=np.float32)

    def _build(self, first: np.ndarray) -> None:
        import faiss

        kind = faiss.METRIC_L2 if self.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        flat = faiss.IndexFlatL2(self.dim) if self.metric == "l2" else faiss.IndexFlatIP(self.dim)
        if self.lists is None:
            self._index = flat
            return
        n_lists = max(16, int(np.sqrt(len(first)))) if self.lists == "auto" else int(self.lists)
        if len(first) < n_lists:
            raise ValueError(
                f"vectors: an IVF index with {n_lists} lists is trained on the first add, "
                f"which needs at least {n_lists} vectors, got {len(first)}"
            )
        index = faiss.IndexIVFFlat(flat, self.dim, n_lists, kind)
        index.train(first[:: max(1, len(first) // (64 * n_lists))])
        index.nprobe = self.nprobe
        self._flat_quantizer = flat  # the IVF index does not own its quantizer
        self._index = index

    def add(self, vectors: Array) -> None:
        """Append rows (n, d); they take the numbers len(self) … len(self) + n − 1."""
        array = self._prepare(vectors, "vectors")
        if self._index is None:
            self._build(array)
        self._index.add(array)
        self._size += len(array)

    def search(
        self, queries: Array, k: int, *, exclude: np.ndarray | None = None, overfetch: int = 16
    ) -> TopK:
        """The k best rows of each query (Q, d) or (d,); ``exclude`` (len(self),) bool rows are
        dropped after asking faiss for ``k + overfetch`` (fewer than k may then remain)."""
        check("k", k, Interval(int, 1, None))
        check("overfetch", overfetch, Interval(int, 0, None))
        single = np.ndim(queries) == 1
        q = self._prepare(queries, "queries")
        out_values = np.full((len(q), k), np.inf if self.metric == "l2" else -np.inf, dtype=np.float32)
        out_rows = np.full((len(q), k), -1, dtype=np.int64)
        if self._size:
            fetch = min(k + (overfetch if exclude is not None else 0), self._size)
            values, rows = self._index.search(q, fetch)
            valid = rows >= 0
            if exclude is not None:
                exclude = np.asarray(exclude, dtype=bool)
                if exclude.shape != (self._size,):
                    raise ValueError(f"exclude: expected shape ({self._size},), got {exclude.shape}")
                valid[valid] = ~exclude[rows[valid]]
            for i in range(len(q)):
                keep = np.flatnonzero(valid[i])[:k]
                out_rows[i, : len(keep)] = rows[i, keep]
                out_values[i, : len(keep)] = values[i, keep]
        if single:
            return TopK(out_values[0], out_rows[0])
        return TopK(out_values, out_rows)
