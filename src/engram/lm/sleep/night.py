"""The night: consolidation of the hippocampus's episodes into a language model's weights.

Each step of a night draws one batch from four sources at fixed shares: the day's episodes
(by priority, or uniformly), earlier days' episodes (interleaving), windows of the base corpus
(interleaving with old knowledge) and dreams (a fact joined to a training question form and to
fragments of the episodes a walk over the memory graph visits). Episodes train on their decision
tokens with the context frozen (or every token, for the ablation); optional online EWC
(``engram.replay.EWC``) anchors the weights; the optimizer is AdamW or APOLLO. The budget is a
number of steps of one batch size, the same for every strategy. A night checkpoints atomically
every few steps and resumes from its checkpoint to exactly the weights of an uninterrupted night.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engram.data.facts import ATTRIBUTE, probe_questions
from engram.io import atomic_write_bytes, content_digest
from engram.lm.model import HippocampalTransformer
from engram.lm.sleep.decision import MODES, decision_loss, token_loss
from engram.lm.sleep.episodes import Hippocampus, dream_episode, encode_episodes, training_pair
from engram.lm.sleep.signals import Scorer
from engram.params import Interval, Options, check
from engram.replay.ewc import EWC, fisher_diagonal_loop
from engram.replay.graph import MemoryGraph, random_walks

OPTIMIZERS = ("adamw", "apollo")
NIGHT_FORMAT = "engram.lm.sleep-night/1"


@dataclass(frozen=True)
class NightConfig:
    """One night's budget and which parts of the sleep are on.

    ``steps`` × ``batch`` is the budget (equal across strategies). Shares of a batch: ``old``
    (earlier days), ``base`` (base corpus), ``dream``; the day takes the rest, and a source with
    nothing to give passes its share to the day. ``mode``: ``frozen`` (decision tokens, context
    without gradients), ``decision`` (decision tokens, full forward) or ``all`` (every token).
    """

    steps: int = 100
    batch: int = 16
    lr: float = 3e-4
    mode: str = "frozen"
    old: float = 0.25
    base: float = 0.25
    dream: float = 0.25
    prioritized: bool = True
    alpha: float = 1.0
    dream_length: int = 3
    graph_k: int = 4
    optimizer: str = "adamw"
    apollo_rank: int = 8
    ewc: float = 0.0
    ewc_samples: int = 256
    grad_clip: float = 1.0
    checkpoint_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        check("steps", self.steps, Interval(int, 1, None))
        for name in ("batch", "dream_length", "graph_k", "apollo_rank", "ewc_samples",
                     "checkpoint_every"):
            check(name, getattr(self, name), Interval(int, 1, None))
        check("lr", self.lr, Interval(float, 0, None, closed="neither"))
        check("mode", self.mode, Options(MODES))
        check("optimizer", self.optimizer, Options(OPTIMIZERS))
        for name in ("old", "base", "dream"):
            check(name, getattr(self, name), Interval(float, 0, 1, closed="both", noun="share"))
        if self.old + self.base + self.dream >= 1:
            raise ValueError(f"old + base + dream: expected < 1 to leave the day a share, got "
                             f"{self.old + self.base + self.dream}")
        check("alpha", self.alpha, Interval(float, 0, None))
        check("ewc", self.ewc, Interval(float, 0, None))
        check("grad_clip", self.grad_clip, Interval(float, 0, None, closed="neither"))


@dataclass(frozen=True)
class NightReport:
    """What one night did: budget spent, time, loss, and what was replayed and why."""

    day: int
    steps: int
    drawn: dict[str, int]
    tokens_forward: int
    tokens_gradient: int
    seconds: float
    mean_loss: float
    replayed: list[dict[str, Any]] = field(default_factory=list)


class NextToken(nn.Module):
    """A language model seen as a classifier of the token after its input (for EWC's Fisher)."""

    def __init__(self, model: HippocampalTransformer):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits[:, -1]


def build_optimizer(model: nn.Module, config: NightConfig) -> torch.optim.Optimizer:
    """AdamW (no weight decay: a night must not shrink what the day did not touch) or APOLLO
    (``apollo-torch``: matrices' update scaled from a random low-rank projection of the moments,
    with its norm-growth limiter gating large updates; vectors as AdamW)."""
    matrices = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.99),
                                 weight_decay=0.0)
    from engram.extras import require

    apollo = require("apollo_torch", "lm")
    rank = min([config.apollo_rank, *(min(p.shape) for p in matrices)])
    return apollo.APOLLOAdamW(
        [{"params": vectors},
         {"params": matrices, "rank": rank, "proj": "random", "scale_type": "channel",
          "scale": 1.0, "update_proj_gap": 200, "proj_type": "std"}],
        lr=config.lr, betas=(0.9, 0.99), weight_decay=0.0)


def _pack_optimizer(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state with APOLLO's projector objects as plain dicts (loadable safely)."""
    state = optimizer.state_dict()  # its entries are the live state: copy before replacing
    state["state"] = {
        k: {**v, "projector": {"projector": dict(vars(v["projector"]))}} if "projector" in v else v
        for k, v in state["state"].items()
    }
    return state


def _unpack_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a state written by :func:`_pack_optimizer`; the projectors are set after loading,
    since ``load_state_dict`` casts nested values and would turn their strings into iterators."""
    projectors = {k: v["projector"]["projector"] for k, v in state["state"].items()
                  if "projector" in v}
    state = {**state, "state": {k: {n: x for n, x in v.items() if n != "projector"}
                                for k, v in state["state"].items()}}
    optimizer.load_state_dict(state)
    if not projectors:
        return
    from apollo_torch.random_projector import GradientProjector

    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, attributes in projectors.items():
        projector = object.__new__(GradientProjector)
        projector.__dict__.update(attributes)
        optimizer.state[params[index]]["projector"] = projector


def step_generator(seed: int, day: int, step: int) -> torch.Generator:
    """The generator of one step's draws: a function of (seed, day, step), so a resumed night
    draws what the uninterrupted one drew."""
    return torch.Generator().manual_seed((seed * 1_000_003 + day * 7919 + step * 104_729) % 2**63)


def save_night(path: Path, state: dict[str, Any]) -> None:
    """Write a night checkpoint with its checksum, atomically."""
    buffer = io.BytesIO()
    torch.save({**state, "checksum": content_digest(state)}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_night(path: Path) -> dict[str, Any]:
    """Read a night checkpoint, verifying its format and checksum (ValueError naming the path)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged archive fails in zip, pickle or tensor code alike
        raise ValueError(f"checkpoint: {path} is not a night checkpoint or is damaged "
                         f"({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or state.get("format") != NIGHT_FORMAT:
        raise ValueError(f"checkpoint: {path}: expected a night checkpoint ({NIGHT_FORMAT})")
    stored = state.pop("checksum", None)
    if stored != content_digest(state):
        raise ValueError(f"checkpoint: {path} fails its checksum, so it is damaged")
    return state


def consolidate(ewc: EWC, module: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator) -> None:
    """``ewc.consolidate`` (per-sample gradients by ``torch.func``); for a model with a custom
    autograd function that functorch cannot transform (the place cells' threshold mask), the
    same Fisher by one backward pass per sample, folded in the same way."""
    try:
        ewc.consolidate(module, x, y, generator=generator)
        return
    except RuntimeError as error:
        if "setup_context" not in str(error):
            raise
    if x.shape[0] > ewc.samples:
        keep = torch.randperm(x.shape[0], generator=generator)[: ewc.samples].to(x.device)
        x, y = x[keep], y[keep]
    new = fisher_diagonal_loop(module, x, y)
    for k, f in new.items():
        ewc.fisher[k] = ewc.decay * ewc.fisher[k] + f if k in ewc.fisher else f
    ewc.anchor = {k: v.detach().clone() for k, v in module.named_parameters() if k in new}


class Sleep:
    """Consolidation for any ``engram.lm`` model (the HippocampalTransformer or the plain GPT:
    one code path): call :meth:`night` after each day has been added to the hippocampus."""

    def __init__(
        self,
        model: HippocampalTransformer,
        hippocampus: Hippocampus,
        config: NightConfig,
        base: np.ndarray | None = None,
        scorer: Scorer | None = None,
    ):
        if hippocampus.layout.length > model.config.block_size:
            raise ValueError(f"layout: expected episodes of at most block_size "
                             f"{model.config.block_size} tokens, got {hippocampus.layout.length}")
        self.model = model
        self.hippocampus = hippocampus
        self.config = config
        self.base = base
        self.scorer = scorer if scorer is not None else Scorer(None, config.seed)
        self.ewc = EWC(config.ewc, samples=config.ewc_samples) if config.ewc > 0 else None
        self.history: list[NightReport] = []

    # ----------------------------------------------------------------- dusk
    def _plan(self, day: int) -> dict[str, Any]:
        """What the night draws from, fixed at dusk: episodes, their priorities, the graph."""
        h = self.hippocampus
        today, old = h.indices(day=day), h.indices(before=day)
        if not today:
            raise ValueError(f"day: expected episodes of day {day} in the hippocampus, got none")
        if self.config.prioritized and self.scorer.signals is not None:
            self.scorer.unfinished(self.model, h)
        priority = self.scorer.priorities(h) if self.config.prioritized else torch.ones(len(h))
        facts = [i for i in h.indices() if h.episodes[i].fact is not None]
        plan: dict[str, Any] = {"today": today, "old": old, "facts": facts,
                                "priority": priority.float()}
        if self.config.dream and len(facts) >= 2:
            tokens, _ = h.tokens(facts)
            with torch.no_grad():
                was = self.model.training
                self.model.eval()
                device = next(self.model.parameters()).device
                hidden = self.model(tokens[:, : h.layout.context].to(device)).hidden[:, -1].cpu()
                self.model.train(was)
            graph = MemoryGraph(k=self.config.graph_k).build(hidden)
            plan["neighbours"], plan["mask"] = graph.neighbours, graph.mask
        return plan

    def _shares(self, plan: dict[str, Any]) -> dict[str, int]:
        c = self.config
        n = {"old": round(c.batch * c.old) if plan["old"] else 0,
             "base": round(c.batch * c.base) if self.base is not None else 0,
             "dream": round(c.batch * c.dream) if "neighbours" in plan else 0}
        n["day"] = c.batch - sum(n.values())
        return n

    # ---------------------------------------------------------------- draws
    def _draw(self, pool: list[int], n: int, plan: dict[str, Any], g: torch.Generator) -> list[int]:
        weights = plan["priority"][torch.tensor(pool)] ** self.config.alpha
        pick = torch.multinomial(weights.clamp_min(1e-12), n, replacement=True, generator=g)
        return [pool[int(i)] for i in pick]

    def _dreams(self, n: int, plan: dict[str, Any], day: int, g: torch.Generator) -> list:
        h, facts = self.hippocampus, plan["facts"]
        starts = torch.tensor([facts.index(i) for i in self._draw(facts, n, plan, g)])
        neighbours, mask = plan["neighbours"], plan["mask"]
        walks = random_walks(starts, self.config.dream_length,
                             lambda node: (neighbours[node], mask[node]), g).nodes
        out = []
        for walk in walks.tolist():
            fact = h.episodes[facts[walk[0]]].fact
            fragments = "".join(h.episodes[facts[j]].context.split("\n")[0] + "\n"
                                for j in walk[1:])
            attribute = ATTRIBUTE.get(fact.attribute)
            forms = attribute.questions["train"] if attribute else None
            if forms:
                form = forms[int(torch.randint(len(forms), (1,), generator=g))]
                question = form.format(s=fact.subject)
            else:
                question = probe_questions([fact], "train")[0].text
            out.append(dream_episode(fact, question, fragments, day))
        return out

    def _loss(self, plan: dict[str, Any], n: dict[str, int], day: int, g: torch.Generator,
              counts: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, int, int]:
        """One batch's loss, and the tokens it ran forward and with gradients."""
        h, c = self.hippocampus, self.config
        picked = self._draw(plan["today"], n["day"], plan, g)
        if n["old"]:
            picked += self._draw(plan["old"], n["old"], plan, g)
        for i in picked:
            counts[i] += 1
        tokens, roles = h.tokens(picked)
        if n["dream"]:
            dt, dr = encode_episodes(self._dreams(n["dream"], plan, day, g), h.tokenizer, h.layout)
            tokens, roles = torch.cat([tokens, dt]), torch.cat([roles, dr])
        inputs, targets = training_pair(tokens, roles, c.mode)
        inputs, targets = inputs.to(device), targets.to(device)
        if c.mode == "all":
            per_item = token_loss(self.model, inputs, targets)
        else:
            per_item = decision_loss(self.model, inputs, targets, h.layout.prefix,
                                     frozen=c.mode == "frozen")
        forward = inputs.numel()
        gradient = inputs.numel() - (inputs.shape[0] * h.layout.prefix if c.mode == "frozen" else 0)
        total = per_item.sum()
        if n["base"]:
            assert self.base is not None
            length = h.layout.length
            starts = torch.randint(len(self.base) - length - 1, (n["base"],), generator=g)
            windows = torch.from_numpy(np.stack(
                [np.asarray(self.base[s : s + length + 1], dtype=np.int64) for s in starts.tolist()]))
            windows = windows.to(device)
            total = total + token_loss(self.model, windows[:, :-1], windows[:, 1:]).sum()
            forward += windows[:, :-1].numel()
            gradient += windows[:, :-1].numel()
        loss = total / c.batch
        if self.ewc is not None:
            loss = loss + self.ewc.penalty(NextToken(self.model))
        return loss, forward, gradient

    # ---------------------------------------------------------------- night
    def _fingerprint(self, day: int) -> str:
        h = self.hippocampus
        tokens, _ = h.tokens(h.indices()) if len(h) else (torch.zeros(0), None)
        return content_digest({"config": dataclasses.asdict(self.config), "day": day,
                               "active": h.indices(), "tokens": tokens,
                               "model": self.model.state_dict()})

    def night(
        self,
        day: int,
        checkpoint: str | os.PathLike[str] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> NightReport:
        """Consolidate ``day`` (its episodes must be in the hippocampus) into the model.

        With ``checkpoint`` (a file path), the night saves itself there every
        ``checkpoint_every`` steps and, when the file already holds this night, resumes from
        it; a checkpoint of another night (other model, episodes, config or day) is refused.
        ``on_step(step)`` is called after each step.
        """
        c = self.config
        path = Path(checkpoint) if checkpoint is not None else None
        fingerprint = self._fingerprint(day)
        optimizer = build_optimizer(self.model, c)
        step, losses, seconds, forward, gradient = 0, [], 0.0, 0, 0
        counts = torch.zeros(len(self.hippocampus), dtype=torch.long)
        if path is not None and path.is_file():
            state = load_night(path)
            if state["start"] != fingerprint:
                raise ValueError(f"checkpoint: {path} holds another night (other model, episodes, "
                                 f"config or day); expected this night's or none")
            self.model.load_state_dict(state["model"])
            _unpack_optimizer(optimizer, state["optimizer"])
            plan, step, losses = state["plan"], state["step"], list(state["losses"])
            seconds, forward, gradient = state["seconds"], state["forward"], state["gradient"]
            counts, fingerprint = state["counts"], state["start"]
            if self.ewc is not None and state["ewc"]:
                self.ewc.fisher, self.ewc.anchor = state["ewc"]["fisher"], state["ewc"]["anchor"]
        else:
            plan = self._plan(day)
        n = self._shares(plan)
        device = next(self.model.parameters()).device

        def save(at: int) -> None:
            if path is None:
                return
            ewc = ({"fisher": self.ewc.fisher, "anchor": self.ewc.anchor}
                   if self.ewc is not None else {})
            save_night(path, {
                "format": NIGHT_FORMAT, "start": fingerprint,
                "day": day, "step": at, "model": self.model.state_dict(),
                "optimizer": _pack_optimizer(optimizer), "plan": plan, "losses": losses,
                "seconds": seconds, "forward": forward, "gradient": gradient, "counts": counts,
                "ewc": ewc, "tokenizer": self.hippocampus.tokenizer.to_dict(),
            })

        if step == 0:
            save(0)
        self.model.train()
        while step < c.steps:
            tic = time.perf_counter()
            g = step_generator(c.seed, day, step)
            loss, f, gr = self._loss(plan, n, day, g, counts, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
            forward, gradient = forward + f, gradient + gr
            seconds += time.perf_counter() - tic
            step += 1
            if step % c.checkpoint_every == 0 or step == c.steps:
                save(step)
            if on_step is not None:
                on_step(step)
        self.model.eval()
        if self.ewc is not None:
            self._consolidate(plan)
        report = NightReport(day, c.steps, {k: v * c.steps for k, v in n.items()}, forward,
                             gradient, seconds, float(np.mean(losses)), self._replayed(plan, counts))
        self.history.append(report)
        return report

    def _consolidate(self, plan: dict[str, Any]) -> None:
        """Fold the Fisher of the active episodes' first decision token (and base windows) into EWC."""
        h = self.hippocampus
        tokens, _ = h.tokens(h.indices())
        x, y = tokens[:, : h.layout.context], tokens[:, h.layout.context]
        if self.base is not None and not self.ewc.fisher:
            g = step_generator(self.config.seed, -1, 0)
            starts = torch.randint(len(self.base) - h.layout.context - 1, (x.shape[0],), generator=g)
            windows = torch.from_numpy(np.stack([np.asarray(
                self.base[s : s + h.layout.context + 1], dtype=np.int64) for s in starts.tolist()]))
            x, y = torch.cat([x, windows[:, :-1]]), torch.cat([y, windows[:, -1]])
        device = next(self.model.parameters()).device
        consolidate(self.ewc, NextToken(self.model), x.to(device), y.to(device),
                    step_generator(self.config.seed, -2, 0))

    def _replayed(self, plan: dict[str, Any], counts: torch.Tensor, top: int = 10) -> list[dict]:
        """The most replayed episodes with the signals that put them there."""
        h = self.hippocampus
        meta = h.buffer.metadata()
        order = torch.argsort(counts, descending=True, stable=True)[:top]
        rows = []
        for i in order.tolist():
            if counts[i] == 0:
                break
            e = h.episodes[i]
            rows.append({
                "episode": i, "conversation": e.conversation, "day": e.day, "times": int(counts[i]),
                "fact": f"{e.fact.subject} / {e.fact.attribute} = {e.fact.value}" if e.fact else "",
                "priority": float(plan["priority"][i]), "reward": float(meta["reward"][i]),
                "novelty": float(meta["novelty"][i]), "salience": float(meta["salience"][i]),
                "unfinished": bool(meta["unfinished"][i]),
            })
        return rows
