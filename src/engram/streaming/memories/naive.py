"""The naive recurrent reference: a memory's streaming form run token by token over a training
sequence, the obviously correct answer every parallel form is tested against (outputs and
gradients), as flash-linear-attention keeps ``naive.py`` beside each fast kernel."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engram.streaming.memories.base import EvictionMemory, ParallelInputs
from engram.streaming.window import Evicted


@dataclass(frozen=True)
class Recurrence:
    """Per position, as the parallel form returns them. Shapes (B, H, T, d_head)."""

    keys: torch.Tensor
    values: torch.Tensor
    reads: torch.Tensor


def naive_recurrent(memory: EvictionMemory, h: torch.Tensor, x: ParallelInputs) -> Recurrence:
    """At each step t: write every token evicted when t arrives (with its adjusted key and
    value), adjust t's key and value, read with t's query.

    h (B, T, D); ``x.k`` and ``x.v`` are the unadjusted keys and values; importance and the
    attention-weighted keys are taken as given, as the parallel form takes them.
    """
    B, H, T, d = x.q.shape
    if h.shape[:2] != (B, T):
        raise ValueError(f"h: expected shape ({B}, {T}, d_model), got {tuple(h.shape)}")
    state = memory.init_state(B, H, d, h.shape[-1], x.q.device)
    keys: list[torch.Tensor] = []
    values: list[torch.Tensor] = []
    reads: list[torch.Tensor] = []
    for t in range(T):
        leaving = x.evicted[t] & ~x.evicted[t - 1] if t else x.evicted[0]
        for j in leaving.nonzero().flatten().tolist():
            ev = Evicted(0, j, keys[j], values[j], h[:, j], x.importance[:, :, j], x.assoc_keys[:, :, j])
            state = memory.write(state, ev)
        k_t, v_t = memory.adjust(state, h[:, t], x.k[:, :, t], x.v[:, :, t])
        keys.append(k_t)
        values.append(v_t)
        reads.append(memory.read(state, x.q[:, :, t]))
    return Recurrence(torch.stack(keys, 2), torch.stack(values, 2), torch.stack(reads, 2))


def parallel(memory: EvictionMemory, h: torch.Tensor, x: ParallelInputs) -> Recurrence:
    """The parallel form on the same inputs, in the order the attention layer calls it."""
    k = memory.parallel_keys(h, x.k, x.evicted)
    v = memory.parallel_values(h, x.v, x.importance, x.evicted)
    adjusted = ParallelInputs(x.q, k, v, x.importance, x.assoc_keys, x.evicted)
    return Recurrence(k, v, memory.parallel_read(adjusted))
