"""What a long-context LM keeps of the tokens that left its window, one object per layer.

Every kind is written at eviction, one token at a time (``write``, the streaming
:class:`~engram.streaming.window.Evicted` record), and read inside the attention layer in one
of three ways: extra key/value ``slots`` that join the window's softmax (the episodic kNN
memory, the compressed memory), an additive ``read`` (the streaming memories), or an
``adjust``-ment of new keys and values (the streaming projection writes).

Kinds (``KINDS``):
- ``none``: the window alone;
- ``episodic``: the evicted keys and values themselves, the ``top_k`` best of them joining each
  query's softmax (Memorizing Transformers' kNN attention, without its learned gate), bounded to
  ``capacity`` entries per head by ``engram.streaming``'s importance rule;
- ``compressive``: the evicted keys and values mean-pooled ``rate`` at a time into at most
  ``capacity`` slots per head, oldest dropped first, every slot joining the softmax (the
  Compressive Transformer's memory with its parameter-free compression function);
- ``matrix``, ``matrix_delta``, ``knn``, ``projection``: ``engram.streaming.memories`` run as
  they run in the streaming transformer (read added to the attention output, or rank-1 writes
  into the key and value projections).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engram.params import Interval, Options, check
from engram.search import topk
from engram.streaming.memories import EvictionMemory, KNNMemory, MemoryOptions, memory_for
from engram.streaming.memories.base import FLOAT_BYTES
from engram.streaming.window import Evicted

STREAMING_KINDS = ("matrix", "matrix_delta", "knn", "projection")
KINDS = ("none", "episodic", "compressive", *STREAMING_KINDS)


@dataclass(frozen=True)
class Slots:
    """Keys and values that join a query's softmax beside the window's. Either shared by every
    query, keys (B, H, n, d), or chosen per query, keys (B, H, T, m, d); ``valid`` marks the real
    ones, (B, H, n) or (B, H, T, m)."""

    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor


class LayerMemory:
    """One layer's memory of evicted tokens; the defaults keep nothing and change nothing."""

    def reset(self, batch: int, n_head: int, d_head: int, d_model: int, device: torch.device) -> None:
        """Empty the memory for ``batch`` new sequences."""
        self.n_head, self.d_head, self.d_model = n_head, d_head, d_model
        self.written = 0

    def write(self, ev: Evicted) -> None:
        """Keep what is worth keeping of one evicted token."""
        self.written += 1

    def adjust(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New keys and values (B, H, T, d) of inputs x (B, T, D) under the memory."""
        return k, v

    def slots(self, q: torch.Tensor) -> Slots | None:
        """Key/value slots for queries q (B, H, T, d) to attend to, or None."""
        return None

    def read(self, q: torch.Tensor) -> torch.Tensor | None:
        """What the memory adds to the attention output of queries q (B, H, T, d), or None."""
        return None

    def state_bytes(self) -> int:
        """Bytes of one sequence's memory state."""
        return 0


class EpisodicKV(LayerMemory):
    """Evicted keys and values, the ``top_k`` nearest of them (largest q·k) joining the softmax.

    Storage and the bounded-capacity rule are ``engram.streaming``'s :class:`KNNMemory`
    (the ``capacity`` most important entries per head; ``None`` keeps every one); the search is
    ``engram.search.topk``.
    """

    def __init__(self, top_k: int = 8, capacity: int | None = None):
        self.store = KNNMemory(top_k, capacity)

    def reset(self, batch, n_head, d_head, d_model, device) -> None:
        super().reset(batch, n_head, d_head, d_model, device)
        self.state = self.store.init_state(batch, n_head, d_head, d_model, device)

    def write(self, ev: Evicted) -> None:
        super().write(ev)
        self.state = self.store.write(self.state, ev)

    def slots(self, q: torch.Tensor) -> Slots | None:
        keys, values, alive = self.state["keys"], self.state["values"], self.state["alive"]
        n = keys.shape[-2]
        if n == 0:
            return None
        exclude = ~alive[..., None, :].expand(*q.shape[:-1], n)
        found = topk(q, keys, min(self.store.top_k, n), exclude=exclude)
        index = found.indices.clamp_min(0)  # (B, H, T, m)

        def gather(table: torch.Tensor) -> torch.Tensor:
            flat = index.flatten(2)[..., None].expand(-1, -1, -1, table.shape[-1])
            return torch.gather(table, 2, flat).view(*index.shape, table.shape[-1])

        return Slots(gather(keys), gather(values), found.indices >= 0)

    def state_bytes(self) -> int:
        return self.store.state_bytes(self.n_head, self.d_head, self.d_model, self.written)


class CompressedKV(LayerMemory):
    """Evicted keys and values mean-pooled ``rate`` consecutive tokens per slot; at most
    ``capacity`` slots per head, the oldest dropped first; the newest slot may be partly filled
    (its running mean), so no uncompressed token is ever held outside the slots."""

    def __init__(self, capacity: int, rate: int):
        self.capacity = check("capacity", capacity, Interval(int, 1, None))
        self.rate = check("rate", rate, Interval(int, 1, None))

    def reset(self, batch, n_head, d_head, d_model, device) -> None:
        super().reset(batch, n_head, d_head, d_model, device)
        self.keys = torch.zeros(batch, n_head, 0, d_head, device=device)
        self.values = torch.zeros(batch, n_head, 0, d_head, device=device)
        self.filled = 0  # tokens pooled into the newest slot

    def write(self, ev: Evicted) -> None:
        super().write(ev)
        key, value = ev.key[..., None, :], ev.value[..., None, :]
        if self.filled in (0, self.rate):
            self.keys = torch.cat([self.keys, key], 2)[:, :, -self.capacity :]
            self.values = torch.cat([self.values, value], 2)[:, :, -self.capacity :]
            self.filled = 1
            return
        n = self.filled
        self.keys = torch.cat([self.keys[:, :, :-1], (self.keys[:, :, -1:] * n + key) / (n + 1)], 2)
        self.values = torch.cat(
            [self.values[:, :, :-1], (self.values[:, :, -1:] * n + value) / (n + 1)], 2
        )
        self.filled = n + 1

    def slots(self, q: torch.Tensor) -> Slots | None:
        if self.keys.shape[2] == 0:
            return None
        valid = torch.ones(self.keys.shape[:3], dtype=torch.bool, device=self.keys.device)
        return Slots(self.keys, self.values, valid)

    def state_bytes(self) -> int:
        return self.n_head * self.keys.shape[2] * 2 * self.d_head * FLOAT_BYTES


class StreamingEviction(LayerMemory):
    """One of ``engram.streaming.memories`` as the streaming transformer runs it: written at
    eviction, read added to the attention output, or adjusting new keys and values."""

    def __init__(self, memory: EvictionMemory):
        self.memory = memory
        kind = type(memory)
        self._reads = kind.read is not EvictionMemory.read
        self._adjusts = kind.adjust is not EvictionMemory.adjust

    def reset(self, batch, n_head, d_head, d_model, device) -> None:
        super().reset(batch, n_head, d_head, d_model, device)
        self.state = self.memory.init_state(batch, n_head, d_head, d_model, device)

    def write(self, ev: Evicted) -> None:
        super().write(ev)
        self.state = self.memory.write(self.state, ev)

    def adjust(self, x, k, v):
        if not self._adjusts or not self.written:
            return k, v
        pairs = [
            self.memory.adjust(self.state, x[:, t], k[:, :, t], v[:, :, t]) for t in range(x.shape[1])
        ]
        return torch.stack([p[0] for p in pairs], 2), torch.stack([p[1] for p in pairs], 2)

    def read(self, q: torch.Tensor) -> torch.Tensor | None:
        if not self._reads or not self.written:
            return None
        # the streaming form reads one query per sequence and head at a time
        return torch.stack([self.memory.read(self.state, q[:, :, t]) for t in range(q.shape[2])], 2)

    def state_bytes(self) -> int:
        return self.memory.state_bytes(self.n_head, self.d_head, self.d_model, self.written)


@dataclass(frozen=True)
class MemorySpec:
    """Which memory every layer gets and its sizes: ``capacity`` entries (episodic, streaming
    kNN) or slots (compressive) per head, ``top_k`` entries read, the compression ``rate`` and
    the projection writes' learning ``eta``."""

    kind: str = "none"
    capacity: int | None = 64
    top_k: int = 8
    rate: int = 4
    eta: float = 1e-2

    def __post_init__(self) -> None:
        check("kind", self.kind, Options(KINDS))
        check("capacity", self.capacity, Interval(int, 1, None), None)
        check("top_k", self.top_k, Interval(int, 1, None))
        check("rate", self.rate, Interval(int, 1, None))
        check("eta", self.eta, Interval(float, 0, None, closed="neither"))
        if self.kind == "compressive" and self.capacity is None:
            raise ValueError("capacity: the compressive memory needs a number of slots, got None")

    def build(self) -> LayerMemory:
        """A fresh memory of this kind for one layer."""
        if self.kind == "none":
            return LayerMemory()
        if self.kind == "episodic":
            return EpisodicKV(self.top_k, self.capacity)
        if self.kind == "compressive":
            return CompressedKV(self.capacity, self.rate)
        if self.kind == "knn" and self.capacity is None:
            return StreamingEviction(memory_for("knn_unbounded", MemoryOptions(top_k=self.top_k)))
        options = MemoryOptions(top_k=self.top_k, capacity=self.capacity, rate=self.eta)
        return StreamingEviction(memory_for(self.kind, options))
