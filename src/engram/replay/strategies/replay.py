"""Experience replay: each step also rehearses a batch drawn from a reservoir of the stream.

With ``distill`` > 0 every stored item also keeps the network's outputs when it was stored,
and replay pulls today's outputs toward them: dark experience replay, DER++ (Buzzega et al.
2020). With an ``encoder`` the buffer keeps its codes instead of the inputs and replays them
through ``head`` (latent replay, Pellegrini et al. 2020); the encoder freezes after the first
experience so the stored codes stay valid.
"""

from __future__ import annotations

import torch
from torch import nn

from engram.replay.buffer import EpisodicBuffer, ReplayBatch
from engram.replay.sleep import response_distance
from engram.replay.strategies.base import Strategy


class ExperienceReplay(Strategy):
    """Current batch plus a uniform replayed batch per step; every batch seen is offered to the buffer.

    Args:
        model: the network trained.
        buffer: the store replayed from (reservoir eviction keeps a uniform sample of the stream).
        replay_batch: items replayed per step.
        distill: weight of the distance to each replayed item's stored outputs (0 = off).
        encoder, head: with latent replay, ``model(x) == head(encoder(x))``; both or neither.
        **options: ``optimizer``, ``logits_fn``, ``loss_fn`` as in ``Strategy``.
    """

    def __init__(
        self,
        model: nn.Module,
        buffer: EpisodicBuffer,
        *,
        replay_batch: int = 128,
        distill: float = 0.0,
        encoder: nn.Module | None = None,
        head: nn.Module | None = None,
        **options,
    ):
        super().__init__(model, **options)
        if not isinstance(buffer, EpisodicBuffer):
            raise TypeError(f"buffer: expected an EpisodicBuffer, got {type(buffer).__name__}")
        if isinstance(replay_batch, bool) or not isinstance(replay_batch, int) or replay_batch <= 0:
            raise ValueError(f"replay_batch: expected a positive integer, got {replay_batch!r}")
        if not distill >= 0:
            raise ValueError(f"distill: expected a weight ≥ 0, got {distill}")
        if (encoder is None) != (head is None):
            raise ValueError("encoder, head: latent replay needs both (model = head ∘ encoder)")
        self.buffer = buffer
        self.replay_batch = replay_batch
        self.distill = float(distill)
        self.encoder = encoder
        self.head = head if head is not None else model

    def observe(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor | None = None
    ) -> float:
        task = self.tasks(inputs, task)
        outputs, per_item = self.forward(self.model, inputs, targets, task)
        loss = per_item.mean()
        if len(self.buffer) > 0:
            batch = self.buffer.sample(self.replay_batch, "uniform", device=self.device)
            _, _, replayed = self.replay_terms(batch)
            loss = loss + replayed.mean()
        value = self.step(loss)
        self.remember(inputs, targets, task, outputs, per_item)
        return value

    def after_experience(self) -> None:
        if self.encoder is not None:
            self.encoder.requires_grad_(False)

    def replay_terms(
        self, batch: ReplayBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Outputs on a replayed batch, each item's loss, and its loss plus the distillation."""
        outputs, per_item = self.forward(self.head, batch.x, batch.y, batch.task)
        total = per_item
        if self.distill and batch.response is not None:
            total = per_item + self.distill * response_distance(outputs, batch.response)
        return outputs, per_item, total

    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """What the buffer keeps of ``inputs``: the inputs, or their codes under latent replay."""
        with torch.no_grad():
            return self.encoder(inputs) if self.encoder is not None else inputs

    def remember(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor,
        outputs: torch.Tensor, per_item: torch.Tensor,
    ) -> None:
        """Offer the batch just trained on to the buffer, with what the strategy replays by."""
        stored = self.encode(inputs)
        meta = self.metadata(stored, targets, outputs, per_item)
        if self.distill:
            meta["response"] = outputs.detach().cpu()
        self.buffer.add(stored.cpu(), targets.cpu(), task.cpu(), **meta)

    def metadata(
        self, stored: torch.Tensor, targets: torch.Tensor, outputs: torch.Tensor,
        per_item: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Columns stored beside each item (none: uniform replay needs no priorities)."""
        return {}
