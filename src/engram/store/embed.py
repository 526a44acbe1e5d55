"""Embedders: what turns an episode's text (and a text cue) into the vector the store keeps.

``SentenceTransformerEmbedder`` wraps any sentence-transformers model, by hub name or local
folder (the optional ``text`` extra installs the library). ``HashingEmbedder`` needs no
download and no model: hashed word and character n-grams, a lexical stand-in that is much
weaker at paraphrase than a trained model; it is the offline default so that text works
everywhere, and it says so in its name.
"""

from __future__ import annotations

import itertools
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit-norm float32 vectors of a fixed ``dim``; ``name`` identifies the model."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(n, dim) float32 embeddings of ``texts``."""
        ...


def check_embeddings(vectors: object, n: int, dim: int, name: str) -> np.ndarray:
    """What an embedder returned, checked: shape (n, dim), finite; the error names ``name``."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.shape != (n, dim):
        raise ValueError(f"embedder: {name} returned shape {array.shape}, expected ({n}, {dim})")
    if not np.isfinite(array).all():
        raise ValueError(f"embedder: {name} returned NaN or infinite values")
    return np.ascontiguousarray(array)


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded by hub name or from a local folder.

    Args:
        name_or_path: e.g. ``"all-MiniLM-L6-v2"`` or a folder holding a saved model.
        device: ``"cpu"``, ``"cuda"`` … (None: the library's choice).
    """

    def __init__(self, name_or_path: str | os.PathLike[str], device: str | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "SentenceTransformerEmbedder needs sentence-transformers: pip install 'engram[text]'"
            ) from error
        path = Path(name_or_path)
        self._model = SentenceTransformer(str(name_or_path), device=device)
        # A folder and the hub model it was saved from are the same embedder.
        self.name = f"sentence-transformers/{path.name if path.is_dir() else str(name_or_path)}"
        # sentence-transformers ≥ 5 renamed the method; older versions only have the first name.
        measure = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        dim = measure()
        if dim is None:
            raise ValueError(f"name_or_path: {name_or_path} does not declare an embedding dimension")
        self.dim = int(dim)

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        vectors = self._model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress,
                                     normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)


_WORD = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Offline, model-free embedding (weaker): signed hashing of words, word pairs and
    character 3-grams into ``dim`` buckets, unit norm. Similar wording gives similar vectors;
    paraphrase with other words does not."""

    def __init__(self, dim: int = 512):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 16:
            raise ValueError(f"dim: expected an integer ≥ 16, got {dim!r}")
        self.dim = dim
        self.name = f"hashing-ngrams-v1-{dim} (offline, weaker than a trained model)"

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        grams = [f"w:{w}" for w in words] + [f"b:{a}_{b}" for a, b in itertools.pairwise(words)]
        for w in words:
            padded = f"#{w}#"
            grams += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
        return grams

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for gram in self._features(text):
                h = zlib.crc32(gram.encode())
                out[row, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


__all__ = ["Embedder", "HashingEmbedder", "SentenceTransformerEmbedder", "check_embeddings"]
