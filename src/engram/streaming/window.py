"""Sliding-window causal masks with attention sinks, and what an evicted token hands on.

Token ``t`` sees the first ``n_sink`` tokens (attention sinks, Xiao et al. 2023, StreamingLLM)
and the ``window`` most recent tokens ``t − window < j ≤ t``. A non-sink token ``j`` leaves the
window when token ``j + window`` arrives; from then on it is "evicted" and only a memory can
still hold it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def check_window(window: int | None, n_sink: int) -> None:
    """Raise a ValueError naming the argument when the window or the sink count is unusable."""
    if isinstance(n_sink, bool) or not isinstance(n_sink, int) or n_sink < 0:
        raise ValueError(f"n_sink: expected a non-negative integer, got {n_sink!r}")
    if window is None:
        return
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise ValueError(
            f"window: expected a positive integer or None (full attention), got {window!r}"
        )
    if n_sink > window:
        raise ValueError(f"n_sink: expected at most window={window} sink tokens, got {n_sink}")


def visible_mask(length: int, window: int | None, n_sink: int, device=None) -> torch.Tensor:
    """Boolean (T, T) mask: ``mask[t, j]`` is True when query ``t`` may attend to key ``j``."""
    check_window(window, n_sink)
    t = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    causal = j <= t
    if window is None:
        return causal
    return causal & ((j > t - window) | (j < n_sink))


def evicted_mask(length: int, window: int | None, n_sink: int, device=None) -> torch.Tensor:
    """Boolean (T, T) mask: ``mask[t, j]`` is True when token ``j`` has been evicted before ``t``.

    With full attention (``window=None``) nothing is ever evicted.
    """
    check_window(window, n_sink)
    t = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    if window is None:
        return torch.zeros(length, length, dtype=torch.bool, device=device)
    return (j >= n_sink) & (j <= t - window)


@dataclass
class Evicted:
    """One token leaving one layer's window, as handed to the eviction hook and the memory.

    Shapes: key, value, assoc_key (B, H, d_head); hidden (B, d_model); importance (B, H), the
    attention the token received from every query while it was in the window.
    """

    layer: int
    position: int
    key: torch.Tensor
    value: torch.Tensor
    hidden: torch.Tensor
    importance: torch.Tensor
    assoc_key: torch.Tensor
