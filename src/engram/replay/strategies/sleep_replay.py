"""Sleep replay: prioritized wake replay plus sleep phases that rehearse the buffer at a low rate.

Each wake step adds an importance-weighted replay batch drawn by priority (the signals of
``PrioritySignals``: reward, novelty, salience, unfinished), with β annealed to 1 over the
run; at task boundaries (or on the sleep schedule) a ``Sleep`` phase interleaves replay,
dreams recombined along the ``MemoryGraph`` and current data at a low learning rate. Options:
a ``FastSlowPair`` (the slow learner is evaluated and sleeps, the fast one is pulled toward
it), online EWC (the ``Sleep``'s, consolidated in each sleep), latent replay and DER++-style
response replay (``distill`` of the sleep config).
"""

from __future__ import annotations

import torch
from torch import nn

from engram.replay.priority import anneal_beta, atypicality
from engram.replay.sleep import FastSlowPair, Sleep, normalise_weights
from engram.replay.strategies.base import per_item_accuracy
from engram.replay.strategies.replay import ExperienceReplay


class SleepReplay(ExperienceReplay):
    """Prioritized replay while awake and ``sleep`` phases when its schedule says.

    Args:
        model: the network trained awake (the fast learner of a ``pair``).
        sleep: the consolidation loop; its buffer, signals, EWC and config are this strategy's.
        replay_batch: items replayed per wake step.
        anneal_steps: wake steps over which β rises from 0.4 to 1 (None: β stays 0.4).
        pair: a ``FastSlowPair`` whose ``fast`` is ``model``; its slow learner sleeps.
        reset_optimizer: start the wake optimiser afresh after each sleep (its moments are
            stale once the sleep optimiser moved the weights); not with a pair.
        current_items: training items of the current experience handed to each sleep.
        **options: ``encoder``/``head`` (latent replay), ``optimizer``, ``logits_fn``,
            ``loss_fn`` as in ``ExperienceReplay``.
    """

    def __init__(
        self,
        model: nn.Module,
        sleep: Sleep,
        *,
        replay_batch: int = 128,
        anneal_steps: int | None = None,
        pair: FastSlowPair | None = None,
        reset_optimizer: bool = True,
        current_items: int = 2048,
        **options,
    ):
        super().__init__(model, sleep.buffer, replay_batch=replay_batch,
                         distill=sleep.config.distill, **options)
        if pair is not None and pair.fast is not model:
            raise ValueError("pair: expected a FastSlowPair whose fast learner is model")
        if pair is not None and self.encoder is not None:
            raise ValueError("pair: latent replay is not combined with a fast/slow pair")
        for name, value in (("anneal_steps", anneal_steps), ("current_items", current_items)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value <= 0):
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.sleep = sleep
        self.pair = pair
        self.anneal_steps = anneal_steps
        self.resets_optimizer = bool(reset_optimizer)
        self.current_items = current_items
        self.steps = 0
        self._slept_last_step = False

    @property
    def evaluated(self) -> nn.Module:
        return self.pair.slow if self.pair is not None else self.model

    @property
    def sleeper(self) -> nn.Module:
        """The network a sleep trains: the layers above the codes, or the evaluated one."""
        return self.head if self.encoder is not None else self.evaluated

    def observe(
        self, inputs: torch.Tensor, targets: torch.Tensor, task: torch.Tensor | None = None
    ) -> float:
        task = self.tasks(inputs, task)
        signals, ewc, cfg = self.sleep.signals, self.sleep.ewc, self.sleep.config
        outputs, per_item = self.forward(self.model, inputs, targets, task)
        loss = per_item.mean()
        if len(self.buffer) > 0:
            progress = self.steps / self.anneal_steps if self.anneal_steps else 0.0
            batch = self.buffer.sample(self.replay_batch,
                                       "prioritized" if signals is not None else "uniform",
                                       beta=anneal_beta(progress), device=self.device)
            replayed, r_loss, r_total = self.replay_terms(batch)
            loss = loss + (normalise_weights(batch.weights, cfg.weight_norm) * r_total).mean()
            if self.pair is not None:
                with torch.no_grad():
                    slow = self.logits_fn(self.pair.slow, batch.x, batch.task)
                loss = loss + self.pair.consistency_loss(replayed, slow)
            if signals is not None:
                self.buffer.update_losses(batch.indices, r_loss.detach().cpu(),
                                          cfg.unfinished_threshold)
                signals.refresh(self.buffer)
        if ewc is not None:
            loss = loss + ewc.penalty(self.model)
        value = self.step(loss)
        if self.pair is not None:
            self.pair.track()
        self.remember(inputs, targets, task, outputs, per_item)
        self.steps += 1
        self._slept_last_step = self.sleep.tick(self.sleeper)
        if self._slept_last_step:
            self.consolidate()
        return value

    def after_experience(self) -> None:
        """Sleep at the boundary (unless the schedule just did), then freeze a latent encoder."""
        if not self._slept_last_step and len(self.buffer) > 0:
            self.consolidate()
        self._slept_last_step = False
        super().after_experience()

    def consolidate(self) -> None:
        """One sleep phase on the sleeper, with current items of this experience."""
        x, y = self.current_sample(self.current_items)
        x = self.encode(x.to(self.device)).cpu()
        current = (x, y, torch.full((x.shape[0],), self.experience))
        self.sleep.sleep(self.sleeper, current,
                         teacher=self.model if self.pair is not None else None)
        if self.pair is None and self.resets_optimizer:
            self.reset_optimizer()

    def metadata(
        self, stored: torch.Tensor, targets: torch.Tensor, outputs: torch.Tensor,
        per_item: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The replay signals' proxies: novelty = loss when stored, reward = answered right,
        salience = atypicality within the batch (the unfinished flag follows replay losses)."""
        with torch.no_grad():
            reward = per_item_accuracy(outputs, targets)
        return dict(novelty=per_item.detach().cpu(), reward=reward.cpu(),
                    salience=atypicality(stored, targets).cpu())
