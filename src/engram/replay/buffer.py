"""EpisodicBuffer: the fast store of a complementary learning system.

Keeps experiences (input, target, task) with the metadata that decides what is replayed —
reward, salience, novelty at storage time, the current loss and an "unfinished" flag — up to
a fixed capacity. Eviction is reservoir (Vitter's algorithm R: every item seen has the same
chance to be kept) or by priority (the lowest-priority item makes room). Sampling is uniform,
class-balanced, or prioritized (P(i) ∝ p_i^α with importance weights (N·P(i))^-β / max,
Schaul et al. 2016), and priorities are updated after replay.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engram.io import atomic_write_bytes, content_digest

EVICTIONS = ("reservoir", "priority")
SAMPLINGS = ("uniform", "balanced", "prioritized")
STORAGES = ("float32", "float16", "uint8", "int64")
METADATA = ("reward", "salience", "novelty", "loss")
_HEADER = "engram.EpisodicBuffer"


@dataclass(frozen=True)
class ReplayBatch:
    """A sample from the buffer: inputs, targets, tasks, their slots and importance weights."""

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor
    indices: torch.Tensor
    weights: torch.Tensor
    response: torch.Tensor | None = None


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive integer, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return int(value)


def _check_finite(name: str, values: torch.Tensor, non_negative: bool) -> None:
    """Reject NaN and ±∞ (and negatives where asked): one NaN priority would stop a
    priority-evicting buffer from ever taking an item, and make sampling fail later."""
    bad = ~torch.isfinite(values)
    if non_negative:
        bad |= values < 0
    if bool(bad.any()):
        kind = "finite non-negative" if non_negative else "finite"
        raise ValueError(f"{name}: expected {kind} values, got {values[bad][0].item()}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


class EpisodicBuffer:
    """A fixed-capacity store of experiences with priorities.

    Args:
        capacity: most items kept (> 0).
        eviction: ``"reservoir"`` or ``"priority"``.
        storage: dtype the inputs are kept in; ``"float16"`` or ``"uint8"`` (inputs assumed in
            [0, 1], quantised to 256 levels) are the lower-precision copies of compressed replay;
            ``"int64"`` keeps integer inputs (token ids) exactly.
        alpha: priority exponent (0 = uniform, 1 = proportional).
        seed: seed of the buffer's own generator (reservoir draws and sampling).

    Shapes: ``add(x[B, *shape], y[B, *target_shape], task[B])``: a label per item, or any
    integer target (a sequence of next tokens); every later item must match the first's shapes.

    Example:
        >>> buf = EpisodicBuffer(capacity=100)
        >>> buf.add(torch.rand(8, 4), torch.arange(8) % 2, task=0)
        >>> batch = buf.sample(4)
        >>> batch.x.shape
        torch.Size([4, 4])
    """

    def __init__(
        self,
        capacity: int,
        eviction: str = "reservoir",
        storage: str = "float32",
        alpha: float = 0.6,
        seed: int = 0,
    ):
        self.capacity = _check_positive_int("capacity", capacity)
        self.eviction = _check_choice("eviction", eviction, EVICTIONS)
        self.storage = _check_choice("storage", storage, STORAGES)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.seed = int(seed)
        self._gen = torch.Generator().manual_seed(self.seed)
        self.seen = 0
        self.size = 0
        self.item_shape: tuple[int, ...] | None = None
        self._x: torch.Tensor | None = None
        self.y = torch.zeros(self.capacity, dtype=torch.long)
        self.task = torch.zeros(self.capacity, dtype=torch.long)
        self.step = torch.zeros(self.capacity, dtype=torch.long)
        self.meta = {name: torch.zeros(self.capacity) for name in METADATA}
        self.unfinished = torch.zeros(self.capacity, dtype=torch.bool)
        self.priority = torch.ones(self.capacity)
        # The model's output when each item was stored (for response replay), if kept.
        self._response: torch.Tensor | None = None

    # ------------------------------------------------------------------ storage
    def __len__(self) -> int:
        return self.size

    @property
    def x(self) -> torch.Tensor:
        """Stored inputs of the filled slots, decoded to float32."""
        if self._x is None:
            raise ValueError("buffer: empty, add items before reading them")
        return self._decode(self._x[: self.size])

    @property
    def memory_bytes(self) -> int:
        """Bytes held by stored inputs, targets and metadata of the filled slots."""
        if self._x is None:
            return 0
        per_item = self._x[0].numel() * self._x.element_size()
        # y, task, step; metadata; flag; priority
        per_item += (self.y[0].numel() + 2) * 8 + len(METADATA) * 4 + 1 + 4
        if self._response is not None:
            per_item += self._response[0].numel() * self._response.element_size()
        return per_item * self.size

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.storage == "uint8":
            return (x.clamp(0, 1) * 255).round().to(torch.uint8)
        if self.storage == "int64" and torch.is_floating_point(x):
            raise TypeError(f"x: int64 storage keeps integer inputs, got {x.dtype}")
        return x.to(getattr(torch, self.storage))

    def _decode(self, stored: torch.Tensor) -> torch.Tensor:
        if self.storage == "uint8":
            return stored.float() / 255
        if self.storage == "int64":
            return stored.clone()
        return stored.float()

    def _as_column(self, name: str, value: object, n: int, dtype: torch.dtype) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=dtype).cpu()
        if t.ndim == 0:
            t = t.expand(n)
        if t.shape != (n,):
            raise ValueError(f"{name}: expected a scalar or shape ({n},), got {tuple(t.shape)}")
        if t.is_floating_point():
            _check_finite(name, t, non_negative=name == "priority")
        return t

    def add(
        self,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        task: int | torch.Tensor = 0,
        *,
        reward: float | torch.Tensor = 0.0,
        salience: float | torch.Tensor = 0.0,
        novelty: float | torch.Tensor = 0.0,
        unfinished: bool | torch.Tensor = False,
        priority: float | torch.Tensor | None = None,
        response: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Offer a batch of experiences; returns the slot of each (−1 where not kept).

        ``novelty`` is measured by the caller at storage time (e.g. the item's loss) and also
        seeds the current ``loss``; ``priority`` defaults to the buffer's highest so far, so new
        items are replayed at least once (as in prioritized experience replay). ``response``
        [B, C] is the model's output for each item now, replayed later as a target the network
        should still give (dark experience replay, Buzzega et al. 2020); a buffer keeps it for
        every item or for none.
        """
        x = torch.as_tensor(x).detach().cpu()
        if x.ndim < 2:
            raise ValueError(f"x: expected a batch [B, *shape], got shape {tuple(x.shape)}")
        if not torch.is_floating_point(x) and self.storage != "int64":
            x = x.float()
        n = x.shape[0]
        if self.item_shape is not None and tuple(x.shape[1:]) != self.item_shape:
            raise ValueError(
                f"x: expected items of shape {self.item_shape} like those stored, "
                f"got {tuple(x.shape[1:])}"
            )
        y = self._targets(y, n)
        response = self._check_response(response, n)
        tasks = self._as_column("task", task, n, torch.long)
        columns = {
            "reward": self._as_column("reward", reward, n, torch.float32),
            "salience": self._as_column("salience", salience, n, torch.float32),
            "novelty": self._as_column("novelty", novelty, n, torch.float32),
        }
        columns["loss"] = columns["novelty"].clone()
        flags = self._as_column("unfinished", unfinished, n, torch.bool)
        if priority is None:
            top = float(self.priority[: self.size].max()) if self.size else 1.0
            prio = torch.full((n,), top)
        else:
            prio = self._as_column("priority", priority, n, torch.float32)
        if self._x is None:  # every argument is valid: only now does the buffer take a shape
            self.item_shape = tuple(x.shape[1:])
            self._x = torch.zeros((self.capacity, *self.item_shape), dtype=self._encode(x[:1]).dtype)
        slots = self._slots_for(prio)
        kept = slots >= 0
        # A later item of the batch may land in the slot of an earlier one: the later one wins.
        order = torch.arange(n)
        last = torch.full((self.capacity,), -1, dtype=torch.long)
        last[slots[kept]] = order[kept]
        src = last[last >= 0]
        dst = slots[src]
        assert self._x is not None
        self._x[dst] = self._encode(x[src])
        self.y[dst], self.task[dst] = y[src], tasks[src]
        self.step[dst] = self.seen - n + src
        for name, col in columns.items():
            self.meta[name][dst] = col[src]
        self.unfinished[dst] = flags[src]
        self.priority[dst] = prio[src]
        if response is not None:
            if self._response is None:
                self._response = torch.zeros(self.capacity, response.shape[1])
            self._response[dst] = response[src]
        return slots

    def _targets(self, y: object, n: int) -> torch.Tensor:
        """Integer targets [n, *target_shape]; the first batch fixes the shape later ones keep."""
        t = torch.as_tensor(y, dtype=torch.long).cpu()
        if t.ndim == 0:
            t = t.expand(n)
        if t.shape[0] != n:
            raise ValueError(f"y: expected a scalar or shape ({n}, ...), got {tuple(t.shape)}")
        if self.seen == 0 and t.shape[1:] != self.y.shape[1:]:
            self.y = torch.zeros((self.capacity, *t.shape[1:]), dtype=torch.long)
        if t.shape[1:] != self.y.shape[1:]:
            raise ValueError(
                f"y: expected targets of shape {tuple(self.y.shape[1:])} like those stored, "
                f"got {tuple(t.shape[1:])}"
            )
        return t

    def _check_response(self, response: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """Validate ``response`` [n, C] against what is stored (every item keeps one, or none)."""
        if response is None:
            if self._response is not None:
                raise ValueError("response: this buffer keeps a response per item, got none")
            return None
        if self.seen > 0 and self._response is None:
            raise ValueError("response: this buffer was filled without responses, got one")
        response = torch.as_tensor(response).detach().cpu().float()
        if response.ndim != 2 or response.shape[0] != n:
            raise ValueError(
                f"response: expected shape ({n}, n_outputs), got {tuple(response.shape)}"
            )
        if self._response is not None and response.shape[1] != self._response.shape[1]:
            raise ValueError(
                f"response: expected {self._response.shape[1]} outputs like those stored, "
                f"got {response.shape[1]}"
            )
        return response

    def _slots_for(self, prio: torch.Tensor) -> torch.Tensor:
        """Slot of each offered item (−1: not kept), advancing ``seen`` and ``size``."""
        n = prio.numel()
        slots = torch.full((n,), -1, dtype=torch.long)
        free = min(n, self.capacity - self.size)
        slots[:free] = torch.arange(self.size, self.size + free)
        self.size += free
        self.seen += free
        rest = n - free
        if rest == 0:
            return slots
        if self.eviction == "reservoir":
            # Algorithm R: the k-th item seen (0-based) replaces a random slot with prob cap/(k+1).
            k = torch.arange(self.seen, self.seen + rest, dtype=torch.float64)
            u = torch.rand(rest, generator=self._gen, dtype=torch.float64)
            j = torch.floor(u * (k + 1)).long()
            slots[free:] = torch.where(j < self.capacity, j, torch.full_like(j, -1))
        else:
            pending = self.priority.clone()
            pending[slots[:free]] = prio[:free]
            for i in range(free, n):
                weakest = int(torch.argmin(pending))
                if float(prio[i]) > float(pending[weakest]):
                    slots[i] = weakest
                    pending[weakest] = prio[i]
        self.seen += rest
        return slots

    # ----------------------------------------------------------------- sampling
    def probabilities(self) -> torch.Tensor:
        """P(i) ∝ priority_i^α over the filled slots."""
        p = self.priority[: self.size].clamp_min(1e-12) ** self.alpha
        return p / p.sum()

    def sample(
        self,
        n: int,
        mode: str = "uniform",
        beta: float = 0.4,
        device: torch.device | str | None = None,
    ) -> ReplayBatch:
        """Draw ``n`` items (with replacement) uniformly, class-balanced, or by priority.

        Importance weights are 1 except for ``"prioritized"``, where they are
        (N·P(i))^−β normalised by their maximum.
        """
        n = _check_positive_int("n", n)
        _check_choice("mode", mode, SAMPLINGS)
        if self.size == 0:
            raise ValueError("buffer: empty, add items before sampling")
        weights = torch.ones(n)
        if mode == "uniform":
            idx = torch.randint(self.size, (n,), generator=self._gen)
        elif mode == "balanced":
            if self.y.ndim != 1:
                raise ValueError("mode: class-balanced sampling needs one label per item, "
                                 f"got targets of shape {tuple(self.y.shape[1:])}")
            labels = self.y[: self.size]
            classes, counts = torch.unique(labels, return_counts=True)
            per_item = 1.0 / counts[torch.searchsorted(classes, labels)].float()
            idx = torch.multinomial(per_item, n, replacement=True, generator=self._gen)
        else:
            if not 0.0 <= beta <= 1.0:
                raise ValueError(f"beta: expected a value in [0, 1], got {beta}")
            probs = self.probabilities()
            idx = torch.multinomial(probs, n, replacement=True, generator=self._gen)
            w = (self.size * probs[idx]) ** (-beta)
            weights = w / w.max()
        assert self._x is not None
        batch = ReplayBatch(
            x=self._decode(self._x[idx]),
            y=self.y[idx].clone(),
            task=self.task[idx].clone(),
            indices=idx,
            weights=weights,
            response=self._response[idx] if self._response is not None else None,
        )
        if device is None:
            return batch
        response = batch.response.to(device) if batch.response is not None else None
        return ReplayBatch(*(t.to(device) for t in (batch.x, batch.y, batch.task)), idx,
                           weights.to(device), response)

    def update_priorities(self, indices: torch.Tensor, priorities: torch.Tensor) -> None:
        """Set the priorities of the given slots (e.g. from the replay loss)."""
        idx = torch.as_tensor(indices, dtype=torch.long).cpu().ravel()
        prio = torch.as_tensor(priorities, dtype=torch.float32).detach().cpu().ravel()
        if idx.shape != prio.shape:
            raise ValueError(
                f"priorities: expected one per index ({idx.numel()}), got {prio.numel()}"
            )
        self._check_slots(idx)
        _check_finite("priorities", prio, non_negative=True)
        self.priority[idx] = prio

    def update_losses(self, indices: torch.Tensor, losses: torch.Tensor, threshold: float) -> None:
        """Record the current loss of replayed slots; those above ``threshold`` stay unfinished."""
        idx = torch.as_tensor(indices, dtype=torch.long).cpu().ravel()
        loss = torch.as_tensor(losses, dtype=torch.float32).detach().cpu().ravel()
        if idx.shape != loss.shape:
            raise ValueError(f"losses: expected one per index ({idx.numel()}), got {loss.numel()}")
        self._check_slots(idx)
        _check_finite("losses", loss, non_negative=False)
        if not math.isfinite(threshold):
            raise ValueError(f"threshold: expected a finite number, got {threshold}")
        self.meta["loss"][idx] = loss
        self.unfinished[idx] = loss > threshold

    def _check_slots(self, idx: torch.Tensor) -> None:
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.size):
            raise ValueError(f"indices: expected slots in [0, {self.size}), got {idx.tolist()}")

    def metadata(self) -> dict[str, torch.Tensor]:
        """Metadata columns of the filled slots (reward, salience, novelty, loss, unfinished)."""
        out = {k: v[: self.size] for k, v in self.meta.items()}
        out["unfinished"] = self.unfinished[: self.size].float()
        return out

    # ------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        tensors = {
            "y": self.y, "task": self.task, "step": self.step,
            "unfinished": self.unfinished, "priority": self.priority,
            "generator": self._gen.get_state(),
        }
        tensors.update({f"meta.{k}": v for k, v in self.meta.items()})
        if self._x is not None:
            tensors["x"] = self._x
        if self._response is not None:
            tensors["response"] = self._response
        return tensors

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the buffer (items, metadata, priorities, RNG state) to one safetensors file."""
        from safetensors.torch import save

        header = {
            "capacity": self.capacity, "eviction": self.eviction, "storage": self.storage,
            "alpha": self.alpha, "seed": self.seed, "seen": self.seen, "size": self.size,
            "item_shape": self.item_shape,
        }
        tensors = {k: v.contiguous() for k, v in self.state_dict().items()}
        metadata = {_HEADER: json.dumps(header)}
        metadata["sha256"] = _file_digest(metadata, tensors)
        return atomic_write_bytes(path, save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EpisodicBuffer:
        """Read a buffer written by :meth:`save`; it samples exactly as the saved one would.

        The file's checksum is verified (files written before checksums, without one, load
        unverified); a damaged or foreign file raises ValueError naming it.
        """
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: buffer file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"path: {path} is not a readable safetensors file: {error}") from error
        if _HEADER not in meta:
            raise ValueError(f"path: {path} is not a saved EpisodicBuffer")
        if set(meta) - {_HEADER, "sha256"}:
            unknown = sorted(set(meta) - {_HEADER, "sha256"})
            raise ValueError(f"path: {path} has unknown metadata {unknown}: damaged or foreign")
        if "sha256" in meta and meta["sha256"] != _file_digest(meta, tensors):
            raise ValueError(f"path: {path} fails its checksum, so it is damaged")
        try:
            return cls._from_saved(json.loads(meta[_HEADER]), tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"path: {path} holds an unreadable buffer: {error!r}") from error

    @classmethod
    def _from_saved(cls, header: dict, tensors: dict[str, torch.Tensor]) -> EpisodicBuffer:
        buf = cls(header["capacity"], header["eviction"], header["storage"], header["alpha"],
                  header["seed"])
        buf.seen, buf.size = header["seen"], header["size"]
        buf.item_shape = tuple(header["item_shape"]) if header["item_shape"] else None
        buf._x = tensors.get("x")
        buf._response = tensors.get("response")
        buf.y, buf.task, buf.step = tensors["y"], tensors["task"], tensors["step"]
        buf.unfinished, buf.priority = tensors["unfinished"], tensors["priority"]
        buf.meta = {k: tensors[f"meta.{k}"] for k in METADATA}
        buf._gen.set_state(tensors["generator"])
        return buf


def _file_digest(metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a buffer file's header and tensors (in name order), the checksum it carries."""
    return content_digest(
        {"header": metadata[_HEADER], "tensors": {k: tensors[k] for k in sorted(tensors)}}
    )
