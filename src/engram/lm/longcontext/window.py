"""Sliding-window inference with attention sinks for any ``engram.lm`` model, and a memory of
what left the window written at eviction.

The stream is read in frames. A frame holds the ``sinks`` first tokens, the ``window`` tokens
before it and up to ``chunk`` new ones, at the model's own positions 0, 1, … (the frame is
re-encoded when it opens, as StreamingLLM's "sliding window with re-computation", so a model
with learned absolute positions sees only positions it was trained on). A new token therefore
sees the sinks and the last ``window`` to ``window + chunk − 1`` tokens. When a frame opens at
stream position ``a``, every non-sink token before ``a − window`` has been evicted: each is
written, once and in order, to every layer's memory with its key, value and attention input
from the last frame that held it, the attention it received as a new frame's query target
(importance) and its attention-weighted key from when it was new. New tokens inside a frame
are decoded with the model's KV cache, so one token at a time and a whole chunk at once give
the same logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engram.lm.longcontext.attention import MemoryAttention, memory_attention
from engram.lm.longcontext.memories import LayerMemory, MemorySpec
from engram.lm.longcontext.streams import StreamedLM
from engram.lm.model import HippocampalTransformer, KVCache
from engram.params import Interval, check
from engram.streaming.memories.base import FLOAT_BYTES
from engram.streaming.window import Evicted


@dataclass(frozen=True)
class SlidingWindow:
    """The attention span: ``sinks`` first tokens, a ``window`` of recent ones, frames of
    ``chunk`` new tokens."""

    window: int
    sinks: int = 4
    chunk: int = 16

    def __post_init__(self) -> None:
        check("window", self.window, Interval(int, 1, None))
        check("sinks", self.sinks, Interval(int, 0, None))
        check("chunk", self.chunk, Interval(int, 1, None))

    @property
    def frame(self) -> int:
        """The most tokens a frame holds."""
        return self.sinks + self.window + self.chunk

    def fits(self, block_size: int) -> None:
        """Raise a ValueError naming the sizes when a frame exceeds the model's block."""
        if self.frame > block_size:
            raise ValueError(
                f"window: sinks {self.sinks} + window {self.window} + chunk {self.chunk} = "
                f"{self.frame} exceeds the model's block_size {block_size}"
            )

    def context(self, start: int) -> list[int]:
        """Stream positions a frame opening at ``start`` re-encodes before its new tokens."""
        sinks = list(range(min(self.sinks, start)))
        return sinks + list(range(max(self.sinks, start - self.window), start))

    def evicted(self, start: int) -> range:
        """Stream positions evicted by the time a frame opens at ``start``."""
        return range(self.sinks, max(self.sinks, start - self.window))


class _Tape:
    """Per layer: importance (B, H, T) and the attention-weighted key (B, H, T, d) of every
    stream position, grown as the stream goes."""

    def __init__(self) -> None:
        self.importance: torch.Tensor | None = None
        self.assoc: torch.Tensor | None = None

    def grow(self, length: int, like: torch.Tensor) -> None:
        B, H, _, d = like.shape
        if self.importance is None:
            self.importance = like.new_zeros(B, H, 0)
            self.assoc = like.new_zeros(B, H, 0, d)
        extra = length - self.importance.shape[-1]
        if extra > 0:
            self.importance = torch.cat([self.importance, like.new_zeros(B, H, extra)], -1)
            self.assoc = torch.cat([self.assoc, like.new_zeros(B, H, extra, d)], 2)


class WindowedLM(StreamedLM):
    """An ``engram.lm`` model streamed through a :class:`SlidingWindow` with a memory of
    evicted tokens in every layer (``MemorySpec``; ``kind="none"`` is the window alone)."""

    def __init__(
        self, model: HippocampalTransformer, window: SlidingWindow, memory: MemorySpec | None = None
    ):
        memory = memory or MemorySpec()
        window.fits(model.config.block_size)
        self.model, self.spec, self.memory_spec = model, window, memory
        self.written: list[int] = []  # stream positions written to the memories, in order
        self.start(1)

    def start(self, batch: int) -> None:
        """Begin ``batch`` new streams: empty memories, no tokens."""
        c = self.model.config
        device = self.model.wte.weight.device
        self.memories: list[LayerMemory] = [self.memory_spec.build() for _ in range(c.n_layer)]
        for m in self.memories:
            m.reset(batch, c.n_head, c.n_embd // c.n_head, c.n_embd, device)
        self.tokens = torch.zeros(batch, 0, dtype=torch.long, device=device)
        self.tapes = [_Tape() for _ in range(c.n_layer)]
        self.cache: KVCache | None = None
        self.positions: list[int] = []  # stream position of each cache row
        self.hidden: list[torch.Tensor] = []  # per layer, attention input of each cache row
        self.frame_start = 0
        self.written = []

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Continue the streams with ``tokens`` (B, n); their logits (B, n, vocab)."""
        tokens = self._next_piece(tokens)
        self.model.eval()
        out = []
        done = 0
        while done < tokens.shape[1]:
            if self.cache is None or self.length >= self.frame_start + self.spec.chunk:
                self._open_frame()
            take = min(tokens.shape[1] - done, self.frame_start + self.spec.chunk - self.length)
            out.append(self._forward(tokens[:, done : done + take], new=True))
            done += take
        if not out:
            return torch.zeros(tokens.shape[0], 0, self.model.config.vocab_size)
        return torch.cat(out, 1)

    def _forward(self, ids: torch.Tensor, new: bool) -> torch.Tensor:
        first = self.length if new else None
        with memory_attention(self.model, self.memories, self.spec.sinks) as layers:
            logits = self.model(ids, cache=self.cache).logits
        if new:
            self.tokens = torch.cat([self.tokens, ids], 1)
            self.positions += list(range(first, first + ids.shape[1]))
        self._note(layers, new, first)
        return logits

    def _note(self, layers: list[MemoryAttention], new: bool, first: int | None) -> None:
        for i, layer in enumerate(layers):
            record = layer.record
            self.hidden[i] = torch.cat([self.hidden[i], record.x], 1)
            if not new:
                continue
            tape = self.tapes[i]
            tape.grow(self.length, record.keys)
            received = record.probs.sum(2)  # (B, H, L): attention received from the new rows
            rows = torch.tensor(self.positions[: received.shape[-1]], device=received.device)
            tape.importance[..., rows] += received
            tape.assoc[:, :, first : self.length] = record.probs @ record.keys

    def _open_frame(self) -> None:
        start = self.length
        if self.cache is not None:
            self._evict(start)
        self.frame_start = start
        self.cache = self.model.new_cache(self.tokens.shape[0])
        context = self.spec.context(start)
        self.positions = list(context)
        c = self.model.config
        self.hidden = [
            torch.zeros(self.tokens.shape[0], 0, c.n_embd, device=self.tokens.device)
            for _ in self.memories
        ]
        if context:
            self._forward(self.tokens[:, context], new=False)

    def _evict(self, start: int) -> None:
        """Write every token that leaves the window before a frame opens at ``start``."""
        before = self.spec.evicted(self.frame_start)
        leaving = range(max(before.stop, self.spec.sinks), self.spec.evicted(start).stop)
        rows = {p: r for r, p in enumerate(self.positions)}
        for p in leaving:
            r = rows[p]
            for i, memory in enumerate(self.memories):
                tape = self.tapes[i]
                memory.write(
                    Evicted(
                        i,
                        p,
                        self.cache.keys[i][:, :, r],
                        self.cache.values[i][:, :, r],
                        self.hidden[i][:, r],
                        tape.importance[:, :, p],
                        tape.assoc[:, :, p],
                    )
                )
            self.written.append(p)

    def memory_bytes(self) -> int:
        """Bytes of one stream's memory beyond the window, over all layers."""
        return sum(m.state_bytes() for m in self.memories)

    def window_bytes(self) -> int:
        """Bytes of one stream's keys and values in a full frame, over all layers."""
        c = self.model.config
        return 2 * self.spec.frame * c.n_embd * c.n_layer * FLOAT_BYTES
