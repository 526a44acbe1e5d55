"""The small LM the long-context experiments run: pretrained once per seed on tiny shakespeare and
reused from its folder when a checkpoint of the same training config is already there."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from engram.lm.train import CHECKPOINT, TrainConfig, load_checkpoint, train

# what must agree for a checkpoint in the folder to be the one this job would train
_SAME = ("model", "batch_size", "max_steps", "learning_rate", "min_lr", "warmup_steps", "seed", "tokenizer")


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

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(
            data=self.data or TrainConfig().data,
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
    cfg = spec.train_config(seed)
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
