"""The small LM the long-context experiments run: pretrained once per seed on tiny shakespeare and
reused from its folder when a checkpoint of the same training config is already there.

With ``echo_every`` > 0 the training part of the text is "echoed": after every ``echo_every``
characters, a random stretch of 8–32 of the last 56 characters is written again. A 0.8M char
model pretrained 1,500 steps on the plain text barely copies from its own context (its loss on
a repeated 24-character passage falls by 0.08 nats/char), so no memory of evicted tokens could
show in retrieval; the echoes are meant to teach in-context copying inside the block, never
beyond it (at 1,500 steps they did not: docs/lm/longcontext.md). The validation part is left as
it is, and the tasks' filler comes from it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engram.data.text import read_text, split_text
from engram.io import atomic_write_text
from engram.lm.train import CHECKPOINT, TrainConfig, load_checkpoint, train
from engram.params import Interval, check

# what must agree for a checkpoint in the folder to be the one this job would train
_SAME = (
    "data", "train_fraction", "model", "batch_size", "max_steps", "learning_rate", "min_lr",
    "warmup_steps", "seed", "tokenizer",
)
ECHO_FILE = "echoed.txt"


def echo(text: str, every: int, seed: int, shortest: int = 8, longest: int = 32, back: int = 56) -> str:
    """``text`` with a copy of a random stretch of ``shortest``–``longest`` of its last ``back``
    characters inserted after every ``every`` characters."""
    check("every", every, Interval(int, 1, None))
    rng = np.random.default_rng(seed)
    pieces = []
    for start in range(0, len(text), every):
        piece = text[start : start + every]
        pieces.append(piece)
        recent = text[max(0, start + len(piece) - back) : start + len(piece)]
        length = int(rng.integers(shortest, longest + 1))
        if len(recent) > length:
            begin = int(rng.integers(0, len(recent) - length))
            pieces.append(recent[begin : begin + length])
    return "".join(pieces)


@dataclass(frozen=True)
class Pretraining:
    """How one LM is pretrained: sizes, steps and schedule (nanoGPT's shakespeare-char recipe)."""

    model: dict[str, Any] = field(
        default_factory=lambda: {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
    )
    steps: int = 1500
    batch_size: int = 12
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    eval_batches: int = 10
    data: str = ""
    echo_every: int = 0

    def train_config(self, seed: int, folder: str | os.PathLike[str]) -> TrainConfig:
        """The training run of ``seed`` into ``folder``: on the text, or its echoed form there."""
        data = self.data or TrainConfig().data
        fraction = 0.9
        if self.echo_every:
            data, fraction = _echoed(data, self.echo_every, folder)
        return TrainConfig(
            data=data,
            train_fraction=fraction,
            model=dict(self.model),
            batch_size=self.batch_size,
            max_steps=self.steps,
            learning_rate=self.learning_rate,
            min_lr=self.min_lr,
            warmup_steps=min(self.warmup_steps, self.steps),
            eval_interval=self.steps,
            eval_batches=self.eval_batches,
            checkpoint_interval=self.steps,
            seed=seed,
        )


def pretrained(spec: Pretraining, seed: int, folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Train ``spec`` with ``seed`` into ``folder`` unless a finished checkpoint of the same
    config is there; returns the folder, the final validation estimate and whether it trained."""
    cfg = spec.train_config(seed, folder)
    path = os.path.join(folder, CHECKPOINT)
    if os.path.isfile(path):
        ckpt = load_checkpoint(path)
        saved = ckpt["train_config"]
        wanted = dataclasses.asdict(cfg)
        if all(saved.get(k) == wanted[k] for k in _SAME) and ckpt["step"] == cfg.max_steps:
            last = [r["val_loss"] for r in ckpt["history"] if "val_loss" in r]
            return {"folder": str(folder), "val_loss": last[-1], "trained": False}
    os.makedirs(folder, exist_ok=True)
    result = train(cfg, folder)
    return {"folder": str(folder), "val_loss": result.final_val_loss, "trained": True}


def _echoed(source: str, every: int, folder: str | os.PathLike[str]) -> tuple[str, float]:
    """Write the echoed training part followed by the untouched validation part into
    ``folder``; the path and the train fraction that cuts it exactly where the two meet."""
    train_text, val_text = split_text(read_text(source), 0.9)
    echoed = echo(train_text, every, seed=0)
    path = os.path.join(folder, ECHO_FILE)
    whole = echoed + val_text
    if not os.path.isfile(path) or read_text(path) != whole:
        atomic_write_text(path, whole)
    return path, (len(echoed) + 0.5) / len(whole)
