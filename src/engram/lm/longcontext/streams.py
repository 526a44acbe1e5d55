"""What every streamed long-context model shares: whole streams through ``feed``, the length
read so far, and the check of each new piece of the streams."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class StreamedLM(ABC):
    """A model read over streams piece by piece; subclasses give ``start`` and ``feed``."""

    tokens: torch.Tensor  # (B, length) the streams read so far

    @abstractmethod
    def start(self, batch: int) -> None:
        """Begin ``batch`` new streams."""

    @abstractmethod
    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Continue the streams with ``tokens`` (B, n); their logits (B, n, vocab)."""

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab) of whole new streams (B, T)."""
        self.start(tokens.shape[0])
        return self.feed(tokens)

    def _next_piece(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` as a (B, n) long tensor on the streams' device, B the streams' count."""
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.tokens.device)
        if tokens.dim() != 2 or tokens.shape[0] != self.tokens.shape[0]:
            raise ValueError(
                f"tokens: expected shape ({self.tokens.shape[0]}, n), got {tuple(tokens.shape)}"
            )
        return tokens
