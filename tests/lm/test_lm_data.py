"""Text data: tokenizers, memory-mapped token arrays, the train/validation split."""

from __future__ import annotations

import numpy as np
import pytest

from engram.data.text import (
    BPETokenizer,
    CharTokenizer,
    TextCorpus,
    open_tokens,
    read_text,
    split_text,
    tokenizer_from_dict,
    write_tokens,
)

TEXT = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind\n" * 20


def test_char_tokenizer_round_trips_and_names_unknown_characters():
    tok = CharTokenizer.fit(TEXT)
    assert tok.decode(tok.encode("to be")) == "to be"
    with pytest.raises(ValueError, match=r"characters \['Z', '€'\] are not in"):
        tok.encode("Z to €")
    assert tokenizer_from_dict(tok.to_dict()).chars == tok.chars


def test_bpe_is_trained_locally_and_encodes_any_text():
    tok = BPETokenizer.train(TEXT, vocab_size=300)
    assert 257 <= tok.vocab_size <= 300
    ids = tok.encode("to be or not")
    assert len(ids) < len("to be or not")  # merges were learned
    assert tok.decode(tok.encode("unseen ∑ text")) == "unseen ∑ text"
    assert tokenizer_from_dict(tok.to_dict()).encode("question") == tok.encode("question")


def test_token_arrays_are_memory_mapped_and_exact(tmp_path):
    ids = np.arange(1000) % 300
    write_tokens(ids, tmp_path / "t.bin", vocab_size=300)
    arr = open_tokens(tmp_path / "t.bin")
    assert isinstance(arr, np.memmap) and arr.dtype == np.uint16
    assert np.array_equal(arr, ids)
    with pytest.raises(ValueError, match=r"out-of-range"):
        write_tokens([5, 400], tmp_path / "bad.bin", vocab_size=300)


def test_corpus_splits_first_ninety_percent_for_training(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    corpus = TextCorpus.prepare(path, tmp_path / "corpus")
    train, val = split_text(TEXT, 0.9)
    assert corpus.tokenizer.decode(list(corpus.train)) == train
    assert corpus.tokenizer.decode(list(corpus.val)) == val
    assert len(train) == int(0.9 * len(TEXT))
    reopened = TextCorpus.open(tmp_path / "corpus")
    assert np.array_equal(reopened.val, corpus.val)


def test_missing_text_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.txt"):
        read_text(tmp_path / "absent.txt")
