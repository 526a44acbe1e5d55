"""Text corpora for language modelling: reading a file by path, a character tokenizer, a
byte-level BPE trained locally with the ``tokenizers`` library, and memory-mapped token arrays.

Token arrays are stored as flat ``uint16``/``uint32`` files and opened with ``np.memmap``, so a
corpus never has to fit in memory twice and every worker of a data-parallel run shares the pages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from engram.io import atomic_write_bytes, atomic_write_text


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text corpus; a missing file is a FileNotFoundError naming the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data: text file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if not text:
        raise ValueError(f"data: text file {path} is empty")
    return text


# the named corpora of the shared data folder (``engram.data.data_root()``): tiny shakespeare,
# and WikiText-2's validation file, used here as a second corpus of its own (split 90/10 like
# any text file), never as "WikiText-2 perplexity", since WikiText-2's train split is not used
CORPORA: dict[str, str] = {
    "tinyshakespeare": "tinyshakespeare/input.txt",
    "wikitext2-valid": "wikitext-2/wiki.valid.tokens",
}


def corpus_path(name: str) -> Path:
    """The file of the named corpus in the shared data folder (``CORPORA``)."""
    from engram.data.location import data_root

    if name not in CORPORA:
        raise ValueError(f"corpus: expected one of {sorted(CORPORA)}, got {name!r}")
    return data_root() / CORPORA[name]


def split_text(text: str, train_fraction: float = 0.9) -> tuple[str, str]:
    """The conventional split: the first ``train_fraction`` of the characters train, the rest
    validate."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction: expected a value in (0, 1), got {train_fraction}")
    cut = int(len(text) * train_fraction)
    return text[:cut], text[cut:]


class Tokenizer(Protocol):
    """What the language model needs from a tokenizer."""

    kind: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_strings(self) -> list[str]: ...

    def to_dict(self) -> dict: ...


@dataclass
class CharTokenizer:
    """One token per distinct character of the training text, sorted by code point."""

    chars: list[str]
    kind: str = "char"

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars) or not self.chars:
            raise ValueError("chars: expected a non-empty list of distinct characters")
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        if not text:
            raise ValueError("text: expected a non-empty string to fit a character vocabulary")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted({c for c in text if c not in self._index})
        if unknown:
            raise ValueError(
                f"text: characters {unknown!r} are not in the tokenizer's vocabulary of "
                f"{self.vocab_size} characters"
            )
        return [self._index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def token_strings(self) -> list[str]:
        return list(self.chars)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}


class BPETokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenisation) trained on local text with ``tokenizers``.

    Byte-level means every string can be encoded: there is no out-of-vocabulary input.
    """

    kind = "bpe"

    def __init__(self, serialized: str):
        from tokenizers import Tokenizer as _HFTokenizer

        self._json = serialized
        self._tok = _HFTokenizer.from_str(serialized)

    @classmethod
    def train(cls, text: str, vocab_size: int = 512, min_frequency: int = 2) -> BPETokenizer:
        from tokenizers import Tokenizer as _HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise ValueError(f"vocab_size: expected ≥ 257 for a byte-level BPE, got {vocab_size}")
        tok = _HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
        return cls(tok.to_str())

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids))

    def token_strings(self) -> list[str]:
        return [self.decode([i]) for i in range(self.vocab_size)]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "json": self._json}


def tokenizer_from_dict(data: dict) -> CharTokenizer | BPETokenizer:
    """Rebuild a tokenizer saved with ``to_dict`` (it travels inside checkpoints)."""
    kind = data.get("kind")
    if kind == "char":
        return CharTokenizer(list(data["chars"]))
    if kind == "bpe":
        return BPETokenizer(data["json"])
    raise ValueError(f"tokenizer: expected kind 'char' or 'bpe', got {kind!r}")


def save_tokenizer(tokenizer: CharTokenizer | BPETokenizer, path: str | os.PathLike[str]) -> Path:
    return atomic_write_text(path, json.dumps(tokenizer.to_dict()))


def load_tokenizer(path: str | os.PathLike[str]) -> CharTokenizer | BPETokenizer:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer: file {path} does not exist")
    return tokenizer_from_dict(json.loads(path.read_text(encoding="utf-8")))


def _dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_tokens(
    ids: list[int] | np.ndarray, path: str | os.PathLike[str], vocab_size: int
) -> Path:
    """Write token ids as a flat binary array (atomically), with a JSON sidecar for its dtype."""
    dtype = _dtype_for(vocab_size)
    array = np.asarray(ids, dtype=np.int64)
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise ValueError(f"ids: expected token ids in [0, {vocab_size}), got out-of-range ids")
    path = Path(path)
    atomic_write_bytes(path, array.astype(dtype).tobytes())
    atomic_write_text(path.with_suffix(path.suffix + ".json"), json.dumps({"dtype": dtype.name}))
    return path


def open_tokens(path: str | os.PathLike[str]) -> np.memmap:
    """Open a token file written by ``write_tokens`` as a read-only memory map."""
    path = Path(path)
    meta = path.with_suffix(path.suffix + ".json")
    if not path.is_file() or not meta.is_file():
        raise FileNotFoundError(f"tokens: {path} (and its .json sidecar) must exist")
    dtype = np.dtype(json.loads(meta.read_text())["dtype"])
    return np.memmap(path, dtype=dtype, mode="r")


def make_tokenizer(kind: str, text: str, vocab_size: int = 512) -> CharTokenizer | BPETokenizer:
    """Fit a tokenizer of ``kind`` ('char' or 'bpe') on ``text``."""
    if kind == "char":
        return CharTokenizer.fit(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size=vocab_size)
    raise ValueError(f"tokenizer: expected 'char' or 'bpe', got {kind!r}")


@dataclass
class TextCorpus:
    """A tokenised train/validation split stored as memory-mapped arrays in ``folder``."""

    tokenizer: CharTokenizer | BPETokenizer
    train: np.memmap
    val: np.memmap
    n_train_chars: int
    n_val_chars: int

    @classmethod
    def prepare(
        cls,
        path: str | os.PathLike[str],
        folder: str | os.PathLike[str],
        tokenizer: str = "char",
        bpe_vocab_size: int = 512,
        train_fraction: float = 0.9,
    ) -> TextCorpus:
        """Read ``path``, split it, fit the tokenizer on the training part, and write both splits.

        The character vocabulary is fitted on the whole text so that validation never meets an
        unknown character (tiny shakespeare's validation split lacks a few of its 65).
        """
        text = read_text(path)
        train_text, val_text = split_text(text, train_fraction)
        tok = make_tokenizer(tokenizer, text if tokenizer == "char" else train_text, bpe_vocab_size)
        folder = Path(folder)
        save_tokenizer(tok, folder / "tokenizer.json")
        write_tokens(tok.encode(train_text), folder / "train.bin", tok.vocab_size)
        write_tokens(tok.encode(val_text), folder / "val.bin", tok.vocab_size)
        atomic_write_text(
            folder / "corpus.json",
            json.dumps(
                {"source": str(path), "train_chars": len(train_text), "val_chars": len(val_text)}
            ),
        )
        return cls.open(folder)

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> TextCorpus:
        folder = Path(folder)
        meta_path = folder / "corpus.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"corpus: {meta_path} does not exist (prepare it first)")
        meta = json.loads(meta_path.read_text())
        return cls(
            tokenizer=load_tokenizer(folder / "tokenizer.json"),
            train=open_tokens(folder / "train.bin"),
            val=open_tokens(folder / "val.bin"),
            n_train_chars=int(meta["train_chars"]),
            n_val_chars=int(meta["val_chars"]),
        )
