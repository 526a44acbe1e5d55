"""A night killed with SIGKILL resumes from its atomic checkpoint to exactly the weights of an
uninterrupted night (AdamW with EWC in a real subprocess; APOLLO's state through an interruption)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from engram.data.facts import generate_days
from engram.data.text import CharTokenizer
from engram.lm.model import HippocampalTransformer, HippocampalTransformerConfig
from engram.lm.sleep import Hippocampus, Layout, NightConfig, Scorer, Sleep
from engram.lm.sleep.night import load_night
from engram.replay.priority import PrioritySignals

ALPHABET = sorted("\n !',.:?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
STEPS = 8


def build(optimizer: str = "adamw", ewc: float = 5.0) -> Sleep:
    """Night 2 of a two-day stream, every part on: the same sleep in every process."""
    torch.manual_seed(0)
    config = HippocampalTransformerConfig(vocab_size=len(ALPHABET), n_layer=1, n_head=2, n_embd=32,
                                          block_size=64, parts=("place",))
    model = HippocampalTransformer(config, ALPHABET)
    tok = CharTokenizer(ALPHABET)
    stream = generate_days(2, 3, 1, seed=0)
    h = Hippocampus(tok, Layout(64, 12))
    base = np.array(tok.encode(" ".join(c.text() for c in stream.days[0]) * 3))
    night = NightConfig(steps=STEPS, batch=8, ewc=ewc, ewc_samples=8, checkpoint_every=3,
                        optimizer=optimizer, seed=3)
    sleep = Sleep(model, h, night, base=base, scorer=Scorer(PrioritySignals()))
    h.add(list(stream.days[0]), model=model)
    sleep.night(1)  # night 1 in memory: EWC has a Fisher, day 1 is old
    h.add(list(stream.days[1]), model=model)
    return sleep


def _kill_at(step: int):
    def on_step(done: int) -> None:
        if done == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return on_step


def _child(path: str) -> None:
    build().night(2, checkpoint=path, on_step=_kill_at(5))


def test_a_night_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path):
    path = tmp_path / "night.pt"
    here = Path(__file__).parent
    code = (f"import sys; sys.path.insert(0, {str(here)!r}); import test_sleep_resume as t; "
            f"t._child({str(path)!r})")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, timeout=240, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert load_night(path)["step"] == 3  # the last checkpoint before the kill at step 5
    resumed = build()
    resumed.night(2, checkpoint=path)
    straight = build()
    straight.night(2)
    for (name, a), b in zip(resumed.model.state_dict().items(), straight.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert load_night(path)["step"] == STEPS


def test_apollo_state_survives_an_interruption_exactly(tmp_path):
    path = tmp_path / "night.pt"

    def stop(done: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):
        build("apollo", ewc=0.0).night(2, checkpoint=path, on_step=stop)
    state = load_night(path)
    assert state["step"] == 3
    assert any("projector" in entry for entry in state["optimizer"]["state"].values())
    resumed = build("apollo", ewc=0.0)
    resumed.night(2, checkpoint=path)
    straight = build("apollo", ewc=0.0)
    straight.night(2)
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(a, b)
