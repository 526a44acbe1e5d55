"""Training: schedule, learning on tiny shakespeare, exact resume, DDP gradients, fallbacks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from engram.lm.model import HippocampalTransformerConfig
from engram.lm.train import (
    TrainConfig,
    compile_or_eager,
    data_parallel_gradients,
    get_batch,
    learning_rate,
    load_checkpoint,
    model_from_checkpoint,
    train,
)

TINY_MODEL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}


def tiny_cfg(data: str, **kw) -> TrainConfig:
    base = dict(
        data=data,
        model=dict(TINY_MODEL),
        batch_size=8,
        max_steps=20,
        warmup_steps=5,
        learning_rate=3e-3,
        eval_interval=10,
        eval_batches=4,
        checkpoint_interval=10,
        seed=3,
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def small_text(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("text") / "small.txt"
    rng = np.random.default_rng(0)
    words = ["the ", "king ", "queen ", "and ", "said ", "to ", "thee.\n", "my ", "lord, "]
    path.write_text("".join(rng.choice(words, 3000)))
    return str(path)


def test_schedule_warms_up_then_decays_by_cosine():
    cfg = TrainConfig(max_steps=100, warmup_steps=10, learning_rate=1e-3, min_lr=1e-4)
    lrs = [learning_rate(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert learning_rate(100, cfg) == pytest.approx(1e-4)
    assert learning_rate(55, cfg) == pytest.approx(0.5 * (1e-3 + 1e-4))


def test_batches_are_seeded_and_shifted_by_one():
    data = np.arange(1000, dtype=np.uint16)
    x, y = get_batch(data, 16, 4, seed=5)
    x2, _ = get_batch(data, 16, 4, seed=5)
    assert torch.equal(x, x2) and torch.equal(y, x + 1)


def test_a_few_hundred_steps_lower_the_validation_loss_clearly(data_dir, tmp_path):
    cfg = tiny_cfg(
        str(data_dir / "tinyshakespeare" / "input.txt"),
        max_steps=300,
        eval_interval=300,
        eval_batches=8,
        checkpoint_interval=300,
    )
    result = train(cfg, tmp_path)
    first = result.history[0]["val_loss"]
    assert abs(first - math.log(65)) < 0.1  # the initial loss is ln(vocabulary)
    assert result.final_val_loss < first - 1.2, (first, result.final_val_loss)
    assert (tmp_path / "metrics.csv").is_file() and (tmp_path / "results.json").is_file()


def test_checkpoint_resumes_to_the_same_loss_curve(small_text, tmp_path):
    cfg = tiny_cfg(small_text, model={**TINY_MODEL, "parts": ("place", "prosody")})
    straight = train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "resumed", stop_at=7)
    assert load_checkpoint(tmp_path / "resumed")["step"] == 7
    resumed = train(cfg, tmp_path / "resumed", resume=True)
    losses = lambda r: [row.get("train_loss") for row in r.history]  # noqa: E731
    assert losses(resumed) == losses(straight)
    assert resumed.final_val_loss == straight.final_val_loss
    a, _, _ = model_from_checkpoint(tmp_path / "straight")
    b, _, _ = model_from_checkpoint(tmp_path / "resumed")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_ddp_on_two_gloo_processes_matches_single_process_gradients():
    config = HippocampalTransformerConfig(
        vocab_size=13, block_size=16, n_layer=1, n_head=2, n_embd=16, parts=("place", "time")
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(13, (4, 16), generator=gen)
    y = torch.randint(13, (4, 16), generator=gen)
    from engram.lm.model import HippocampalTransformer

    torch.manual_seed(0)
    single = HippocampalTransformer(config)
    single(x, y).loss.backward()
    ddp = data_parallel_gradients(config, x, y, world=2, seed=0)
    for name, p in single.named_parameters():
        torch.testing.assert_close(ddp[name], p.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_a_failing_compile_falls_back_to_eager(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    model = torch.nn.Linear(3, 3)
    used, note = compile_or_eager(model, torch.zeros(1, 3))
    assert used is model and "no compiler here" in note


def test_missing_data_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(tiny_cfg(str(tmp_path / "absent.txt")), tmp_path / "run")


def test_bad_training_config_is_a_clear_error():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="vocab_size"):
        TrainConfig(model={"vocab_size": 10})


def test_resuming_a_finished_run_adds_no_second_final_row(small_text, tmp_path):
    cfg = tiny_cfg(small_text, max_steps=6, warmup_steps=2, eval_interval=3, checkpoint_interval=3)
    finished = train(cfg, tmp_path)
    again = train(cfg, tmp_path, resume=True)
    assert again.history == finished.history
    assert load_checkpoint(tmp_path)["history"] == finished.history
    longer = train(tiny_cfg(small_text, max_steps=8, warmup_steps=2, eval_interval=3,
                            checkpoint_interval=3), tmp_path, resume=True)
    steps = [row["step"] for row in longer.history]
    assert steps == sorted(set(steps)) == list(range(9))  # each step once, the final row last


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error_naming_it(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not a model\n")
    for load in (load_checkpoint, model_from_checkpoint):
        with pytest.raises(ValueError, match=rf"checkpoint: {text} is not an Engram LM checkpoint"):
            load(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match=rf"checkpoint: {foreign} .*lacks .*model"):
        load_checkpoint(foreign)


@pytest.fixture(scope="module")
def finished_run(small_text, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    train(tiny_cfg(small_text, max_steps=2, warmup_steps=1, eval_interval=2,
                   checkpoint_interval=2, eval_batches=1), folder)
    return folder


def test_every_bit_flip_in_a_checkpoint_is_an_error_or_changes_nothing(finished_run, tmp_path):
    from engram.io import content_digest

    original = (finished_run / "checkpoint.pt").read_bytes()
    expected = content_digest(load_checkpoint(finished_run))
    gen = np.random.default_rng(0)
    damaged, caught = tmp_path / "checkpoint.pt", 0
    for position in gen.choice(len(original) * 8, 150, replace=False):
        data = bytearray(original)
        data[position // 8] ^= 1 << (position % 8)
        damaged.write_bytes(bytes(data))
        try:
            loaded = load_checkpoint(damaged)
        except ValueError as error:
            assert str(damaged) in str(error)
            caught += 1
        else:  # a flip the format ignores (e.g. in zip padding) may load, but only unchanged
            assert content_digest(loaded) == expected, f"bit {position} loaded silently"
    assert caught >= 100


def test_a_checkpoint_written_before_checksums_still_loads(finished_run, tmp_path):
    state = load_checkpoint(finished_run)
    old = tmp_path / "old.pt"
    torch.save(state, old)  # what save_checkpoint wrote before it added a checksum
    assert load_checkpoint(old)["step"] == state["step"]
