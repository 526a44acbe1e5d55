"""Transformer-XL-style segment recurrence for any ``engram.lm`` model.

The stream is read in segments of ``segment`` tokens. Each segment attends to the cached keys
and values of the ``sinks`` first tokens and of the ``memory`` tokens before it, as they were
computed in their own segments (no re-encoding, no gradient through them), then to itself
causally. Keys and values are the layer's projections of the cached hidden states, so caching
them is caching Transformer-XL's hidden-state memory. The segment's tokens take the positions
after the cache's, through the model's own ``KVCache``: the first two segments are the plain
forward pass; later ones meet cached states computed at other absolute positions (the
"temporal confusion" that Transformer-XL's relative positions remove, measured, not hidden).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engram.lm.longcontext.streams import StreamedLM
from engram.lm.model import HippocampalTransformer, KVCache
from engram.params import Interval, check
from engram.streaming.memories.base import FLOAT_BYTES


@dataclass(frozen=True)
class SegmentRecurrence:
    """Segments of ``segment`` tokens with ``memory`` cached tokens before each and ``sinks``."""

    segment: int
    memory: int
    sinks: int = 4

    def __post_init__(self) -> None:
        check("segment", self.segment, Interval(int, 1, None))
        check("memory", self.memory, Interval(int, 0, None))
        check("sinks", self.sinks, Interval(int, 0, None))

    def fits(self, block_size: int) -> None:
        total = self.sinks + self.memory + self.segment
        if total > block_size:
            raise ValueError(
                f"memory: sinks {self.sinks} + memory {self.memory} + segment {self.segment} = "
                f"{total} exceeds the model's block_size {block_size}"
            )

    def context(self, start: int) -> list[int]:
        """Stream positions whose cached states a segment opening at ``start`` attends to."""
        sinks = list(range(min(self.sinks, start)))
        return sinks + list(range(max(self.sinks, start - self.memory), start))


class RecurrentLM(StreamedLM):
    """An ``engram.lm`` model streamed with Transformer-XL-style segment recurrence."""

    def __init__(self, model: HippocampalTransformer, spec: SegmentRecurrence):
        spec.fits(model.config.block_size)
        self.model, self.spec = model, spec
        self.start(1)

    def start(self, batch: int) -> None:
        """Begin ``batch`` new streams."""
        device = self.model.wte.weight.device
        self.tokens = torch.zeros(batch, 0, dtype=torch.long, device=device)
        self.cache: KVCache | None = None
        self.positions: list[int] = []
        self.segment_start = 0

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Continue the streams with ``tokens`` (B, n); their logits (B, n, vocab)."""
        tokens = self._next_piece(tokens)
        self.model.eval()
        out, done = [], 0
        while done < tokens.shape[1]:
            if self.cache is None or self.length >= self.segment_start + self.spec.segment:
                self._open_segment()
            take = min(tokens.shape[1] - done, self.segment_start + self.spec.segment - self.length)
            ids = tokens[:, done : done + take]
            out.append(self.model(ids, cache=self.cache).logits)
            self.positions += list(range(self.length, self.length + take))
            self.tokens = torch.cat([self.tokens, ids], 1)
            done += take
        if not out:
            return torch.zeros(tokens.shape[0], 0, self.model.config.vocab_size)
        return torch.cat(out, 1)

    def _open_segment(self) -> None:
        start = self.length
        context = self.spec.context(start)
        fresh = self.model.new_cache(self.tokens.shape[0])
        if self.cache is not None and context:
            rows = torch.tensor([self.positions.index(p) for p in context], device=self.tokens.device)
            n = len(context)
            for layer in range(len(fresh.keys)):
                fresh.keys[layer][:, :, :n] = self.cache.keys[layer].index_select(2, rows)
                fresh.values[layer][:, :, :n] = self.cache.values[layer].index_select(2, rows)
            fresh.length = n
            fresh.tokens = self.tokens[:, context]
            fresh.rhythm = self.cache.rhythm
        self.cache, self.positions, self.segment_start = fresh, list(context), start

    def memory_bytes(self) -> int:
        """Bytes of one stream's cached keys and values (sinks and memory), over all layers."""
        c = self.model.config
        return 2 * (self.spec.sinks + self.spec.memory) * c.n_embd * c.n_layer * FLOAT_BYTES
