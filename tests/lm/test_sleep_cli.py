"""``engram lm sleep``: a trained run and a folder of logs become a new checkpoint and a report;
an empty log folder, logs in an unknown format, a checkpoint from another tokenizer and a night
budget of zero are each one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engram.cli import main
from engram.data.facts import generate_days, write_logs
from engram.data.text import TextCorpus

ALPHABET = "\n !',.:?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sleep-cli")
    stream = generate_days(2, 3, 1, seed=0)
    logs = root / "logs"
    write_logs(stream, logs)
    text = root / "text.txt"
    text.write_text(ALPHABET + "the quick brown fox. " * 200)
    status = main(["lm", "--threads", "1", "train", "--data", str(text), "--n-layer", "1",
                   "--n-head", "2", "--n-embd", "16", "--block-size", "64", "--batch-size", "4",
                   "--steps", "2", "--eval-interval", "2", "--eval-batches", "1", "--warmup", "1",
                   "--out", str(root / "runs")])
    assert status == 0
    return next((root / "runs").iterdir()), logs


def test_a_run_and_logs_become_a_new_checkpoint_and_a_report(trained, tmp_path, capsys):
    from engram.lm.train import model_from_checkpoint

    run, logs = trained
    out = tmp_path / "slept"
    argv = ["lm", "--threads", "1", "sleep", "--run", str(run), "--logs", str(logs), "--out", str(out),
            "--steps", "3", "--batch", "4"]
    assert main(argv) == 0
    assert "closed-book probe" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["day"] == 2 and report["night"]["steps"] == 3
    assert report["replayed"] and report["replayed"][0]["times"] >= 1
    assert 0 <= report["probe"]["before"] <= 1 and 0 <= report["probe"]["after"] <= 1
    assert "What was replayed and why" in (out / "report.md").read_text()
    slept, _, _ = model_from_checkpoint(out)
    before, _, _ = model_from_checkpoint(run)
    assert any(not torch.equal(a, b) for a, b in zip(slept.parameters(), before.parameters(),
                                                       strict=True))
    assert TextCorpus.open(out / "corpus").tokenizer.vocab_size == slept.config.vocab_size
    # the same command again finds its finished night and gives the same weights
    assert main(argv) == 0
    again, _, _ = model_from_checkpoint(out)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), slept.parameters(), strict=True))


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err.strip()


def test_bad_input_is_one_clear_line(trained, tmp_path, capsys):
    run, logs = trained
    sleep = ["lm", "sleep", "--run", str(run), "--out", str(tmp_path / "o")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "logs: expected .jsonl conversation logs" in _error([*sleep, "--logs", str(empty)], capsys)
    other = tmp_path / "other"
    other.mkdir()
    (other / "chat.jsonl").write_text(json.dumps({"role": "user", "content": "hi"}) + "\n")
    message = _error([*sleep, "--logs", str(other)], capsys)
    assert "expected a JSON object with format 'engram.conversations/1', got None" in message
    zero = _error([*sleep, "--logs", str(logs), "--steps", "0"], capsys)
    assert "steps: expected a positive integer, got 0" in zero
    # a run whose corpus was tokenized by another tokenizer than its checkpoint's
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes())
    text = tmp_path / "small.txt"
    text.write_text(ALPHABET.replace("z", "") + "abc " * 50)
    TextCorpus.prepare(text, foreign / "corpus")
    message = _error(["lm", "sleep", "--run", str(foreign), "--logs", str(logs)], capsys)
    assert "checkpoint: the corpus of" in message and "another tokenizer" in message
    assert message.count("\n") == 0
