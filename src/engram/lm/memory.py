"""Episodic memory for generation, kNN-LM style (Khandelwal et al., 2020).

Pairs (hidden state, next token) are stored from the context or from training text; at each
step the k nearest stored states vote for their next tokens, and that distribution is
interpolated with the model's: p = (1 − λ)·p_model + λ·p_kNN. Search is exact (a matrix of
squared distances) by default and goes to a faiss flat index once the store exceeds
``faiss_threshold`` entries; every retrieval can be inspected afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class Retrieval:
    """What one query retrieved: memory indices, their stored next tokens and distances."""

    indices: np.ndarray
    tokens: np.ndarray
    distances: np.ndarray


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
    log: list[Retrieval] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.dim < 1 or self.k < 1:
            raise ValueError(f"dim, k: expected positive integers, got {self.dim}, {self.k}")
        if not 0.0 <= self.interpolation <= 1.0:
            raise ValueError(f"interpolation: expected λ in [0, 1], got {self.interpolation}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")
        self._keys = np.zeros((0, self.dim), dtype=np.float32)
        self._tokens = np.zeros(0, dtype=np.int64)
        self._index = None

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

    def _faiss(self):
        if self._index is None:
            import faiss

            self._index = faiss.IndexFlatL2(self.dim)
            self._index.add(self._keys)
        return self._index

    def search(self, queries: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest stored keys of each query (Q, dim): (squared distances, indices)."""
        q = np.asarray(torch.as_tensor(queries).detach().float().cpu(), dtype=np.float32)
        q = np.atleast_2d(q)
        if len(self) == 0:
            raise ValueError("memory: the store is empty; store() pairs before searching")
        k = min(self.k, len(self))
        if self.backend == "faiss":
            distances, indices = self._faiss().search(q, k)
            return distances, indices
        d = (q**2).sum(1, keepdims=True) - 2 * q @ self._keys.T + (self._keys**2).sum(1)[None]
        indices = np.argsort(d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, indices, 1), indices

    def recall(self, queries: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """The memory's next-token distribution for each query: (Q, vocab_size)."""
        distances, indices = self.search(queries)
        tokens = self._tokens[indices]
        if self.keep_log:
            for row in range(len(indices)):
                self.log.append(Retrieval(indices[row], tokens[row], distances[row]))
        weights = torch.softmax(-torch.as_tensor(distances) / self.temperature, dim=-1)
        votes = F.one_hot(torch.as_tensor(tokens), vocab_size).to(weights.dtype)
        return (weights[..., None] * votes).sum(1).to(queries.device)

    def interpolate(self, logits: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of (1 − λ)·softmax(logits) + λ·p_kNN; logits (Q, vocab)."""
        p_model = torch.softmax(logits.float(), -1)
        p_knn = self.recall(queries, logits.shape[-1]).to(p_model.dtype)
        mixed = (1 - self.interpolation) * p_model + self.interpolation * p_knn
        return torch.log(mixed.clamp_min(1e-30))

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
