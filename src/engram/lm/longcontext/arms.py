"""The ways of running one pretrained model over a long stream, by name, at one attention span.

Every arm but ``full`` sees the same sinks + window + chunk frame; they differ in what they keep
of the tokens that left it (``ARMS``). ``full`` is the model's own forward pass, defined only
while the stream fits its block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engram.lm.longcontext.memories import MemorySpec
from engram.lm.longcontext.recurrence import RecurrentLM, SegmentRecurrence
from engram.lm.longcontext.window import SlidingWindow, WindowedLM
from engram.lm.model import HippocampalTransformer
from engram.params import Interval, check

# arm -> the memory kind of the windowed LM (None: not a windowed LM)
ARMS: dict[str, str | None] = {
    "full": None,
    "window": "none",
    "episodic": "episodic",
    "episodic_all": "episodic",
    "compressive": "compressive",
    "matrix": "matrix",
    "knn": "knn",
    "projection": "projection",
    "xl": None,
}


@dataclass(frozen=True)
class Span:
    """The attention span every arm shares and the memories' sizes: ``capacity`` entries or
    slots per head and layer (``episodic_all`` has no bound), ``top_k`` read, compression
    ``rate``, projection-write rate ``eta``; XL keeps ``window`` cached tokens and reads
    segments of ``chunk``."""

    window: int = 32
    sinks: int = 4
    chunk: int = 16
    capacity: int = 64
    top_k: int = 8
    rate: int = 4
    eta: float = 1e-4

    def __post_init__(self) -> None:
        for name in ("window", "chunk", "capacity", "top_k", "rate"):
            check(name, getattr(self, name), Interval(int, 1, None))
        check("sinks", self.sinks, Interval(int, 0, None))
        check("eta", self.eta, Interval(float, 0, None, closed="neither"))


def check_arms(arms: tuple[str, ...]) -> None:
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"arms: unknown {unknown}; expected names from {list(ARMS)}")


def streamer(model: HippocampalTransformer, arm: str, span: Span) -> WindowedLM | RecurrentLM | None:
    """The object that streams ``model`` as ``arm`` does (None for ``full``)."""
    check_arms((arm,))
    if arm == "full":
        return None
    if arm == "xl":
        return RecurrentLM(model, SegmentRecurrence(span.chunk, span.window, span.sinks))
    capacity = None if arm == "episodic_all" else span.capacity
    memory = MemorySpec(ARMS[arm], capacity, span.top_k, span.rate, span.eta)
    return WindowedLM(model, SlidingWindow(span.window, span.sinks, span.chunk), memory)


@torch.no_grad()
def arm_logits(model: HippocampalTransformer, arm: str, span: Span, tokens: torch.Tensor):
    """(logits (B, T, vocab), bytes per stream kept beyond the frame) of ``tokens`` under
    ``arm``: XL's cached states are its frame, so it keeps none beyond; ``full`` raises a
    ValueError when the stream exceeds the block."""
    lm = streamer(model, arm, span)
    if lm is None:
        model.eval()
        return model(tokens).logits, 0
    logits = lm.logits(tokens)
    return logits, lm.memory_bytes() if isinstance(lm, WindowedLM) else 0


@torch.no_grad()
def greedy(lm: WindowedLM | RecurrentLM, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding of ``new_tokens`` after ``prompt`` (B, T) through a streaming LM, one
    token at a time; the new tokens (B, new_tokens)."""
    check("new_tokens", new_tokens, Interval(int, 0, None))
    lm.start(prompt.shape[0])
    logits = lm.feed(prompt)[:, -1]
    out = []
    for _ in range(new_tokens):
        token = logits.argmax(-1, keepdim=True)
        out.append(token)
        logits = lm.feed(token)[:, -1]
    return torch.cat(out, 1) if out else prompt.new_zeros(prompt.shape[0], 0)
