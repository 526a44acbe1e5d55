"""The attention of an ``engram.lm`` model with a memory of evicted tokens read inside it.

:class:`MemoryAttention` wraps a block's own :class:`~engram.lm.model.CausalSelfAttention`
(its ``c_attn`` and ``c_proj``, the same cache protocol) and adds what a
:class:`~engram.lm.longcontext.memories.LayerMemory` gives: key/value slots joining the softmax,
an additive read and adjusted keys and values. Rows before ``first_reader`` (the attention
sinks) are left exactly as the model computes them. :func:`memory_attention` swaps the wrappers
into a model's blocks for the length of a ``with`` block, so ``model.forward`` runs unchanged
around them. With an empty memory the output is the model's own, up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from engram.lm.longcontext.memories import LayerMemory, Slots
from engram.lm.model import CausalSelfAttention, HippocampalTransformer, KVCache
from engram.lm.positions import AttentionPositions, rotate


@dataclass(frozen=True)
class Record:
    """What one call saw: the keys and values of the whole context, cache included
    (B, H, L, d); the new rows' attention input x (B, T, D) and their attention over the
    context, probs (B, H, T, L)."""

    keys: torch.Tensor
    values: torch.Tensor
    x: torch.Tensor
    probs: torch.Tensor


def _slot_scores(q: torch.Tensor, slots: Slots) -> torch.Tensor:
    if slots.keys.dim() == 4:  # shared by every query
        scores = q @ slots.keys.transpose(-1, -2)
        valid = slots.valid[:, :, None, :]
    else:
        scores = (q[..., None, :] * slots.keys).sum(-1)
        valid = slots.valid
    return (scores / math.sqrt(q.shape[-1])).masked_fill(~valid, float("-inf"))


def _slot_output(probs: torch.Tensor, slots: Slots) -> torch.Tensor:
    if slots.values.dim() == 4:
        return probs @ slots.values
    return (probs[..., None] * slots.values).sum(-2)


class MemoryAttention(nn.Module):
    """A block's attention plus a memory; ``record`` holds what the last call saw."""

    def __init__(self, attn: CausalSelfAttention, memory: LayerMemory, first_reader: int = 0):
        super().__init__()
        self.attn, self.memory, self.first_reader = attn, memory, first_reader
        self.record: Record | None = None

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, C = t.shape
        return t.view(B, T, self.attn.n_head, C // self.attn.n_head).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, gain: torch.Tensor | None, cache: KVCache | None, layer: int,
        positions: AttentionPositions | None = None,
    ) -> torch.Tensor:
        """The model's attention (prosody gain, rotary angles, ALiBi bias as it applies them)
        with the memory's keys, values, slots and read added for the positions it reads at."""
        a = self.attn
        B, T, C = x.shape
        q, k, v = (self._heads(part) for part in a.c_attn(x).split(a.n_embd, dim=2))
        if gain is not None:
            q = q * gain.to(q.dtype)
        bias = None
        if positions is not None:
            if positions.rotary is not None:
                q, k = rotate(q, *positions.rotary), rotate(k, *positions.rotary)
            bias = positions.bias
        start = cache.length if cache is not None else 0
        reader = (torch.arange(start, start + T, device=x.device) >= self.first_reader)[:, None]
        adjusted = self.memory.adjust(x, k, v)
        k = torch.where(reader, adjusted[0], k)
        v = torch.where(reader, adjusted[1], v)
        if cache is not None:
            cache.keys[layer][:, :, start : start + T] = k
            cache.values[layer][:, :, start : start + T] = v
            k = cache.keys[layer][:, :, : start + T]
            v = cache.values[layer][:, :, : start + T]
        rows = torch.arange(start, start + T, device=x.device)[:, None]
        visible = torch.arange(start + T, device=x.device)[None] <= rows
        scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~visible, float("-inf"))
        if bias is not None:  # ALiBi's distance bias (it also carries the causal mask)
            scores = scores + bias.to(scores.dtype)
        slots = self.memory.slots(q)
        if slots is None:
            probs = torch.softmax(scores, -1)
            y = probs @ v
        else:
            extra = _slot_scores(q, slots).masked_fill(~reader, float("-inf"))
            joint = torch.softmax(torch.cat([scores, extra], -1), -1)
            probs = joint[..., : scores.shape[-1]]
            y = probs @ v + _slot_output(joint[..., scores.shape[-1] :], slots)
        read = self.memory.read(q)
        if read is not None:
            y = y + read * reader
        self.record = Record(k, v, x, probs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return a.resid_dropout(a.c_proj(y))


@contextmanager
def memory_attention(
    model: HippocampalTransformer, memories: list[LayerMemory], first_reader: int = 0
) -> Iterator[list[MemoryAttention]]:
    """Swap a :class:`MemoryAttention` with ``memories[i]`` into block ``i`` of ``model`` and put
    the model's own attention back on leaving, even after an error."""
    if len(memories) != len(model.blocks):
        raise ValueError(f"memories: expected one per layer ({len(model.blocks)}), got {len(memories)}")
    originals = [block.attn for block in model.blocks]
    if any(isinstance(a, MemoryAttention) for a in originals):
        raise ValueError("model: its blocks already carry a MemoryAttention (nested use)")
    wrappers = [MemoryAttention(a, m, first_reader) for a, m in zip(originals, memories, strict=True)]
    try:
        for block, wrapper in zip(model.blocks, wrappers, strict=True):
            block.attn = wrapper
        yield wrappers
    finally:
        for block, original in zip(model.blocks, originals, strict=True):
            block.attn = original
