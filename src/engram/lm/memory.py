"""Episodic memory for generation, kNN-LM style (Khandelwal et al., 2020).

Pairs (hidden state, next token) are stored from the context or from training text; at each
step the k nearest stored states vote for their next tokens, and that distribution is
interpolated with the model's: p = (1 − λ)·p_model + λ·p_kNN. Search is ``engram.search``'s:
exact ``topk`` over squared distances by default, a flat faiss ``ApproximateIndex`` once the
store exceeds ``faiss_threshold`` entries; every retrieval can be inspected afterwards.

Vocabulary, as for every in-process memory: ``store`` pairs, ``recall`` the nearest ones (a
frozen ``Neighbours``); ``next_token_distribution`` and ``interpolate`` turn a recall into the
kNN-LM's probabilities. ``retrieval_accuracy`` measures how often the true next token is among
the neighbours' (and ``retrieval_report`` sets that beside the model's and the kNN-LM's own
top-k); ``save`` / ``EpisodicMemory.load`` keep a memory in one checksummed file, written
atomically, that loads back exactly.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engram.io import atomic_write_bytes, content_digest
from engram.params import Interval, check
from engram.search import ApproximateIndex, topk

FORMAT = "engram.lm.EpisodicMemory/1"
_SETTINGS = ("dim", "k", "interpolation", "temperature", "faiss_threshold")


@dataclass(frozen=True)
class Neighbours:
    """What Q queries recalled: for each, the indices of its k nearest stored keys, the tokens
    that followed them and their squared distances, nearest first; each (Q, k), read-only."""

    indices: np.ndarray
    tokens: np.ndarray
    distances: np.ndarray

    def __post_init__(self) -> None:
        for array in (self.indices, self.tokens, self.distances):
            array.flags.writeable = False


@dataclass
class EpisodicMemory:
    """A store of (key, next-token) pairs with top-k retrieval.

    Args:
        dim: size of the stored keys (the model's ``n_embd``).
        k: neighbours per query.
        interpolation: λ, the weight of the memory's distribution.
        temperature: softmax temperature over negative squared distances.
        faiss_threshold: store size above which faiss does the search.
    """

    dim: int
    k: int = 8
    interpolation: float = 0.25
    temperature: float = 1.0
    faiss_threshold: int = 50_000
    keep_log: bool = True
    log: list[Neighbours] = field(default_factory=list)

    def __post_init__(self) -> None:
        check("dim", self.dim, Interval(int, 1, None))
        check("k", self.k, Interval(int, 1, None))
        check("interpolation", self.interpolation, Interval(float, 0, 1, closed="both"))
        check("temperature", self.temperature, Interval(float, 0, None, closed="neither"))
        check("faiss_threshold", self.faiss_threshold, Interval(int, 0, None))
        self._keys = np.zeros((0, self.dim), dtype=np.float32)
        self._tokens = np.zeros(0, dtype=np.int64)
        self._index: ApproximateIndex | None = None

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def backend(self) -> str:
        return "faiss" if len(self) > self.faiss_threshold else "exact"

    def store(self, keys: torch.Tensor | np.ndarray, tokens: torch.Tensor | np.ndarray) -> None:
        """Add pairs: keys (N, dim) and the token that followed each (N,)."""
        keys = np.asarray(torch.as_tensor(keys).detach().float().cpu(), dtype=np.float32)
        tokens = np.asarray(torch.as_tensor(tokens).cpu(), dtype=np.int64).ravel()
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys: expected shape (N, {self.dim}), got {keys.shape}")
        if len(tokens) != len(keys):
            raise ValueError(f"tokens: expected {len(keys)} ids, got {len(tokens)}")
        self._keys = np.concatenate([self._keys, keys])
        self._tokens = np.concatenate([self._tokens, tokens])
        if self._index is not None:
            self._index.add(keys)

    def _faiss(self) -> ApproximateIndex:
        if self._index is None:
            self._index = ApproximateIndex(self.dim, metric="l2")
            self._index.add(self._keys)
        return self._index

    def recall(self, queries: torch.Tensor | np.ndarray) -> Neighbours:
        """The k nearest stored keys of each query (Q, dim), logged when ``keep_log``."""
        q = np.asarray(torch.as_tensor(queries).detach().float().cpu(), dtype=np.float32)
        q = np.atleast_2d(q)
        if len(self) == 0:
            raise ValueError("memory: the store is empty; store() pairs before recalling")
        k = min(self.k, len(self))
        if self.backend == "faiss":
            nearest = self._faiss().search(q, k)
        else:
            nearest = topk(q, self._keys, k, metric="l2")
        found = Neighbours(nearest.indices, self._tokens[nearest.indices], nearest.values)
        if self.keep_log:
            self.log.append(found)
        return found

    def next_token_distribution(self, queries: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """The memory's next-token distribution for each query: (Q, vocab_size), a softmax over
        the recalled neighbours' negative distances voting for their tokens."""
        found = self.recall(queries)
        weights = torch.softmax(-torch.tensor(found.distances) / self.temperature, dim=-1)
        votes = F.one_hot(torch.tensor(found.tokens), vocab_size).to(weights.dtype)
        return (weights[..., None] * votes).sum(1).to(queries.device)

    def interpolate(self, logits: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of (1 − λ)·softmax(logits) + λ·p_kNN; logits (Q, vocab)."""
        p_model = torch.softmax(logits.float(), -1)
        p_knn = self.next_token_distribution(queries, logits.shape[-1]).to(p_model.dtype)
        mixed = (1 - self.interpolation) * p_model + self.interpolation * p_knn
        return torch.log(mixed.clamp_min(1e-30))

    def retrieval_accuracy(
        self,
        queries: torch.Tensor | np.ndarray,
        targets: torch.Tensor | np.ndarray,
        ks: tuple[int, ...] = (1, 5),
    ) -> dict[int, float]:
        """For each k in ``ks`` (at most the memory's ``k``): the share of queries (Q, dim) whose
        k nearest stored keys include one followed by the query's true next token (Q,)."""
        targets = np.asarray(torch.as_tensor(targets).cpu(), dtype=np.int64).ravel()
        for k in ks:
            check("ks", k, Interval(int, 1, self.k))
        found = self.recall(queries)
        if len(targets) != len(found.tokens):
            raise ValueError(f"targets: expected {len(found.tokens)} ids, got {len(targets)}")
        hit = found.tokens == targets[:, None]
        return {k: float(hit[:, :k].any(1).mean()) for k in ks}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the settings and every stored pair to ``path`` atomically, with a checksum."""
        settings = {name: getattr(self, name) for name in _SETTINGS}
        meta = {"format": FORMAT, "settings": settings,
                "checksum": content_digest([settings, self._keys, self._tokens])}
        buffer = io.BytesIO()
        np.savez(buffer, keys=self._keys, tokens=self._tokens, meta=np.array(json.dumps(meta)))
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str], keep_log: bool = True) -> EpisodicMemory:
        """A memory written by ``save``; a missing, foreign or damaged file is an error naming it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"memory: {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                keys, tokens = data["keys"], data["tokens"]
        except Exception as error:  # zip, npy and JSON readers fail in their own ways
            raise ValueError(f"memory: {path} is not a saved EpisodicMemory ({error})") from error
        if meta.get("format") != FORMAT:
            raise ValueError(f"memory: {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
        if content_digest([meta["settings"], keys, tokens]) != meta["checksum"]:
            raise ValueError(f"memory: {path} fails its checksum, so it is damaged")
        memory = cls(**meta["settings"], keep_log=keep_log)
        memory.store(keys, tokens)
        return memory

    @torch.no_grad()
    def store_text(self, model: torch.nn.Module, tokens: torch.Tensor, stride: int | None = None):
        """Store every (hidden state, next token) pair of a token sequence (1-D), in windows of
        the model's block size."""
        block = model.config.block_size
        stride = stride or block
        tokens = torch.as_tensor(tokens, dtype=torch.long).ravel()
        was_training = model.training
        model.eval()
        for begin in range(0, max(1, len(tokens) - 1), stride):
            chunk = tokens[begin : begin + block + 1]
            if len(chunk) < 2:
                break
            x = chunk[:-1][None].to(model.wte.weight.device)
            hidden = model(x).hidden[0]
            self.store(hidden, chunk[1:])
        model.train(was_training)


@dataclass(frozen=True)
class RetrievalReport:
    """Top-k accuracy (share of positions whose true next token is among k candidates) of the
    model's logits, of the memory's neighbours and of the interpolated kNN-LM, per k."""

    ks: tuple[int, ...]
    model: tuple[float, ...]
    memory: tuple[float, ...]
    mixed: tuple[float, ...]
    positions: int


@torch.no_grad()
def retrieval_report(
    model: torch.nn.Module, memory: EpisodicMemory, tokens: np.ndarray, ks: tuple[int, ...] = (1, 5)
) -> RetrievalReport:
    """Top-k accuracies of ``model``, ``memory`` and their mixture over every next-token
    prediction of ``tokens`` (1-D), in consecutive windows of the model's block size."""
    block = model.config.block_size
    data = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
    n = (len(data) - 1) // block
    if n < 1:
        raise ValueError(f"tokens: {len(data)} tokens are fewer than one block of {block}")
    model.eval()
    x = data[: n * block].view(n, block).to(model.wte.weight.device)
    y = data[1 : n * block + 1].reshape(-1)
    out = model(x)
    logits, hidden = out.logits.flatten(0, 1).float(), out.hidden.flatten(0, 1)
    mixed = memory.interpolate(logits, hidden)

    def top(scores: torch.Tensor, k: int) -> float:
        return float((scores.topk(k, -1).indices.cpu() == y[:, None]).any(1).float().mean())

    return RetrievalReport(
        tuple(ks),
        tuple(top(logits, k) for k in ks),
        tuple(memory.retrieval_accuracy(hidden, y, ks)[k] for k in ks),
        tuple(top(mixed, k) for k in ks),
        len(y),
    )
