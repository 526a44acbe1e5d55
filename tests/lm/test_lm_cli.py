"""The ``engram lm`` command: train, sample and eval on tiny settings; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engram.cli import main

TINY = [
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--n-embd",
    "16",
    "--block-size",
    "24",
    "--batch-size",
    "4",
    "--eval-interval",
    "5",
    "--eval-batches",
    "2",
    "--warmup",
    "2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    text = root / "text.txt"
    rng = np.random.default_rng(0)
    text.write_text("".join(rng.choice(["to be ", "or not ", "that is\n", "the question. "], 600)))
    status = main(
        [
            "lm",
            "train",
            "--data",
            str(text),
            "--steps",
            "6",
            "--parts",
            "place,prosody",
            "--out",
            str(root / "runs"),
            *TINY,
        ]
    )
    assert status == 0
    (run,) = (root / "runs").iterdir()
    return run


def test_train_writes_a_run_folder(trained):
    for name in ("config.json", "checkpoint.pt", "metrics.csv", "results.json"):
        assert (trained / name).is_file(), name
    results = json.loads((trained / "results.json").read_text())
    assert results["steps"] == 6 and results["val_bits_per_char"] > 0


def test_sample_streams_a_continuation(trained, capsys):
    assert (
        main(
            [
                "lm",
                "sample",
                str(trained),
                "--prompt",
                "to be",
                "--tokens",
                "12",
                "--strategy",
                "greedy",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("to be") and len(out.rstrip("\n")) >= len("to be") + 1
    assert (
        main(
            [
                "lm",
                "sample",
                str(trained),
                "--prompt",
                "to",
                "--tokens",
                "5",
                "--strategy",
                "beam",
                "--beams",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "lm",
                "sample",
                str(trained),
                "--prompt",
                "to",
                "--tokens",
                "5",
                "--memory-tokens",
                "200",
            ]
        )
        == 0
    )
    assert "episodic memory" in capsys.readouterr().err


def test_eval_reports_units_and_draws_place_cells(trained, capsys):
    assert main(["lm", "eval", str(trained), "--tokens", "8", "--prompt", "to"]) == 0
    results = json.loads((trained / "eval.json").read_text())
    assert {
        "val_loss_nats_per_token",
        "val_bits_per_char",
        "generation_tokens_per_s_cached",
        "diversity_sample_t0.8_k40",
    } <= set(results)
    assert (trained / "place_cells.png").is_file()


def test_resume_continues_a_run(trained):
    assert (
        main(
            [
                "lm",
                "train",
                "--data",
                str(trained.parent.parent / "text.txt"),
                "--steps",
                "8",
                "--parts",
                "place,prosody",
                "--resume",
                str(trained),
                *TINY,
            ]
        )
        == 0
    )
    assert json.loads((trained / "results.json").read_text())["steps"] == 8


def test_bad_input_exits_with_a_clear_message(trained, tmp_path, capsys):
    assert main(["lm", "sample", str(trained), "--prompt", "Zebra€", "--tokens", "3"]) == 2
    assert "not in the tokenizer's vocabulary" in capsys.readouterr().err
    assert main(["lm", "train", "--parts", "place,cortex", "--out", str(tmp_path)]) == 2
    assert "unknown part" in capsys.readouterr().err
    assert main(["lm", "train", "--data", str(tmp_path / "none.txt"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    long_prompt = "to be or not to be that is"  # 26 characters, the block holds 24
    assert main(["lm", "sample", str(trained), "--prompt", long_prompt, "--tokens", "2"]) == 2
    assert "exceed the model's block_size 24" in capsys.readouterr().err


def test_a_text_file_given_as_a_checkpoint_exits_with_a_message_naming_it(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("e" * 200)  # the unpickler's raw IndexError escaped before
    assert main(["lm", "sample", str(notes), "--prompt", "to", "--tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint: {notes} is not an Engram LM checkpoint" in err
    assert "written by `engram lm train`" in err
