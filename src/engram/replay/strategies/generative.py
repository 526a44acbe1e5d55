"""Deep generative replay (Shin et al. 2017), as van de Ven et al. (2020, 2022) run it.

A separate generator (a ``VAE``) learns the inputs of the stream. When an experience ends,
copies of the classifier and the generator are frozen; during the next one each step adds a
batch drawn from the frozen generator, labelled by the frozen classifier — its arg-max
(``targets="hard"``, DGR) or its tempered softmax (``"soft"``, the distillation of DGR+distill
and of brain-inspired replay). The generator trains alongside on the current batch plus the
same replayed inputs, so it comes to cover every experience so far. Both losses weigh the
current batch by 1/k and the replay by 1 − 1/k in the k-th experience, as in van de Ven's code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from engram.replay.sleep import soft_cross_entropy
from engram.replay.strategies.base import OptimizerFactory, Strategy, adam
from engram.replay.vae import VAE

TARGETS = ("hard", "soft")
# The outputs the frozen classifier may label replay with in an experience (bool [C]), or None.
TargetMask = Callable[[int], torch.Tensor | None]


class GenerativeReplay(Strategy):
    """Current batch plus a generated batch labelled by the previous model; the VAE trains alongside.

    Args:
        model: the classifier trained.
        generator: the VAE that learns the inputs (flat, in [0, 1]).
        replay_batch: items generated per step.
        targets: ``"hard"`` (the frozen classifier's arg-max) or ``"soft"`` (its softmax at
            ``temperature``, distilled with the T² scaling of Hinton et al.).
        temperature: T for soft targets.
        per_task: label each replayed item under every past experience's task (task heads)
            and average the losses over them, instead of once for all.
        target_mask: outputs the frozen classifier labels among in an experience (e.g. the
            classes of earlier experiences in class-incremental learning).
        generator_optimizer: builds the VAE's optimiser (default Adam, lr 1e-3).
        **options: ``optimizer``, ``logits_fn``, ``loss_fn`` as in ``Strategy``.
    """

    def __init__(
        self,
        model: nn.Module,
        generator: VAE,
        *,
        replay_batch: int = 128,
        targets: str = "hard",
        temperature: float = 2.0,
        per_task: bool = False,
        target_mask: TargetMask | None = None,
        generator_optimizer: OptimizerFactory | None = None,
        **options,
    ):
        super().__init__(model, **options)
        if not isinstance(generator, VAE):
            raise TypeError(f"generator: expected a VAE, got {type(generator).__name__}")
        if isinstance(replay_batch, bool) or not isinstance(replay_batch, int) or replay_batch <= 0:
            raise ValueError(f"replay_batch: expected a positive integer, got {replay_batch!r}")
        if targets not in TARGETS:
            raise ValueError(f"targets: expected one of {list(TARGETS)}, got {targets!r}")
        if not temperature > 0:
            raise ValueError(f"temperature: expected T > 0, got {temperature}")
        self.generator = generator
        self.replay_batch = replay_batch
        self.targets = targets
        self.temperature = float(temperature)
        self.per_task = bool(per_task)
        self.target_mask = target_mask
        self.generator_optimizer = (generator_optimizer or adam())(generator.parameters())
        self.previous_model: nn.Module | None = None
        self.previous_generator: VAE | None = None

    def replay(self) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Generated inputs and, per labelling task, (task of each item, its target)."""
        assert self.previous_model is not None and self.previous_generator is not None
        x = self.previous_generator.sample(self.replay_batch)
        tasks = range(self.experience) if self.per_task else (self.experience,)
        labelled = []
        with torch.no_grad():
            for t in tasks:
                task = torch.full((x.shape[0],), t, device=x.device)
                logits = self.logits_fn(self.previous_model, x, task)
                mask = self.target_mask(self.experience) if self.target_mask is not None else None
                if mask is not None:
                    logits = logits.masked_fill(~mask, -float("inf"))
                target = (logits.argmax(-1) if self.targets == "hard"
                          else (logits / self.temperature).softmax(-1))
                labelled.append((task, target))
        return x, labelled

    def replay_loss(self, x: torch.Tensor, labelled: list[tuple[torch.Tensor, torch.Tensor]]
                    ) -> torch.Tensor:
        """The classifier's mean loss on the replayed inputs against the frozen model's targets."""
        losses = []
        for task, target in labelled:
            outputs = self.logits_fn(self.model, x, task)
            if self.targets == "hard":
                losses.append(self.loss_fn(outputs, target).mean())
            else:
                t = self.temperature
                losses.append(soft_cross_entropy(outputs / t, target).mean() * t * t)
        return torch.stack(losses).mean()

    def observe(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor | None = None
    ) -> float:
        _, per_item = self.forward(self.model, inputs, targets, self.tasks(inputs, task))
        current = per_item.mean()
        gen_loss = self.generator.loss(inputs).mean()
        if self.previous_model is None:
            loss = current
        else:
            new = 1.0 / (self.experience + 1)
            x, labelled = self.replay()
            loss = new * current + (1 - new) * self.replay_loss(x, labelled)
            gen_loss = new * gen_loss + (1 - new) * self.generator.loss(x).mean()
        self.generator_optimizer.zero_grad(set_to_none=True)
        gen_loss.backward()
        self.generator_optimizer.step()
        return self.step(loss)

    def after_experience(self) -> None:
        """Freeze copies of the classifier and the generator: the next experience replays them."""
        self.previous_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.previous_generator = copy.deepcopy(self.generator).eval().requires_grad_(False)
