"""Generic position and local-context features: the controls for the hippocampal codes.

Each control enters the HippocampalTransformer where the code it controls for enters, so a
comparison isolates the code's biology from its width and entry point:

- ``sin_theta_gamma``, ``sin_grid``, ``sin_time``: plain sinusoidal features of the position,
  as wide as the theta-gamma, grid and time-cell codes, read out into the residual stream by a
  learned linear map beside the learned position embedding, as those codes are;
- ``rope``: rotary position embedding of the queries and keys (Su et al., 2021);
- ``alibi``: linear attention biases by distance, one slope per head (Press et al., 2022);
- ``conv``: a short learned causal depthwise convolution over projected token embeddings, as
  wide as the time cells' traces and read out the same way (the control for time cells, whose
  fields are fixed and log-spaced).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CONTROLS: tuple[str, ...] = ("sin_theta_gamma", "sin_grid", "sin_time", "rope", "alibi", "conv")
SINUSOIDS: dict[str, str] = {
    "sin_theta_gamma": "theta_gamma",
    "sin_grid": "grid",
    "sin_time": "time",
}
# the hippocampal code each control stands in for (rope and alibi stand in for any position code)
CONTROL_OF: dict[str, str] = {**SINUSOIDS, "conv": "time"}


def sinusoid_table(positions: torch.Tensor, width: int, max_period: float) -> torch.Tensor:
    """(T, width) features [sin(ω₀p), cos(ω₀p), sin(ω₁p), …]: the Transformer's sinusoids
    (ω₀ = 1, frequencies geometric) with the base set so that the longest period is
    ``max_period`` (the first ``width`` columns where ``width`` is odd)."""
    if width < 1:
        raise ValueError(f"width: expected ≥ 1, got {width}")
    if max_period <= 2 * math.pi:
        raise ValueError(f"sinusoid_max_period: expected > 2π, got {max_period}")
    n = math.ceil(width / 2)
    exponents = torch.arange(n, dtype=torch.float64) / max(1, n - 1)
    omega = (max_period / (2 * math.pi)) ** -exponents
    angle = positions.to(torch.float64)[:, None] * omega
    table = torch.stack([torch.sin(angle), torch.cos(angle)], -1).flatten(-2)
    return table[:, :width].to(torch.float32)


class SinusoidCode(nn.Module):
    """Sinusoidal features of the position, ``width`` wide, read out into the residual stream;
    the table of the first ``n_positions`` positions is computed once."""

    def __init__(
        self,
        n_embd: int,
        width: int,
        max_period: float,
        bias: bool = False,
        n_positions: int = 0,
    ):
        super().__init__()
        self.width, self.max_period = width, max_period
        self.readout = nn.Linear(width, n_embd, bias=bias)
        table = sinusoid_table(torch.arange(n_positions), width, max_period)
        self.register_buffer("table", table, persistent=False)

    def forward(self, start: int, stop: int) -> torch.Tensor:
        """(stop − start, n_embd) read-out of the features of positions start … stop−1."""
        if stop <= self.table.shape[0]:
            code = self.table[start:stop]
        else:
            positions = torch.arange(start, stop, device=self.table.device)
            code = sinusoid_table(positions, self.width, self.max_period).to(self.table.device)
        return self.readout(code.to(self.readout.weight.dtype))


class Rotary(nn.Module):
    """Rotary position embedding: each pair (xᵢ, x_{i+D/2}) of a head's query or key is turned
    by the angle p·θᵢ, θᵢ = base^(−2i/D), so that q·k depends on the positions only through
    their offset."""

    def __init__(self, head_dim: int, base: float = 10000.0, n_positions: int = 0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"n_embd // n_head: rope needs an even head width, got {head_dim}")
        if base <= 1.0:
            raise ValueError(f"rope_base: expected > 1, got {base}")
        self.head_dim = head_dim
        inverse = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inverse", inverse, persistent=False)
        cos, sin = self.angles(torch.arange(n_positions))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (T, D/2), of the rotation angles at ``positions``."""
        angle = positions.to(torch.float64)[:, None] * self.inverse.to(positions.device)
        return torch.cos(angle).to(torch.float32), torch.sin(angle).to(torch.float32)

    def forward(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of positions start … stop−1, from the table where it reaches."""
        if stop <= self.cos.shape[0]:
            return self.cos[start:stop], self.sin[start:stop]
        return self.angles(torch.arange(start, stop, device=self.cos.device))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply the rotation (cos, sin) (T, D/2) to ``x`` (B, H, T, D), halves paired."""
    a, b = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's head slopes: geometric from 2^(−8/n) (for a power of two; otherwise the
    interleaved sequence of the next power of two, as in the paper's code)."""
    if n_head < 1:
        raise ValueError(f"n_head: expected ≥ 1, got {n_head}")

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    power = 2 ** math.floor(math.log2(n_head))
    slopes = geometric(power)
    if power < n_head:
        slopes += geometric(2 * power)[0::2][: n_head - power]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: torch.Tensor, start: int, length: int) -> torch.Tensor:
    """(H, length, start + length) additive attention bias for queries at positions start …
    start+length−1 over keys 0 … start+length−1: −slope·(i − j) on and below the diagonal,
    −inf above it (causal)."""
    queries = torch.arange(start, start + length, device=slopes.device)[:, None]
    keys = torch.arange(start + length, device=slopes.device)[None]
    distance = (queries - keys).to(slopes.dtype)
    bias = -slopes[:, None, None] * distance
    return bias.masked_fill(distance < 0, float("-inf"))


@dataclass(frozen=True)
class AttentionPositions:
    """What the relative-position controls give every attention layer for the new tokens:
    rotary (cos, sin) and/or an additive ALiBi bias, either None when off."""

    rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    bias: torch.Tensor | None = None


class CausalConv(nn.Module):
    """A short learned causal depthwise convolution: tokens projected to ``dim`` channels, each
    filtered by ``n_filters`` learned kernels of ``kernel`` taps (lag 0 … kernel−1), the
    ``dim·n_filters`` traces read out into the residual stream (time cells' shape, with
    learned, short kernels instead of fixed log-spaced fields)."""

    def __init__(self, n_embd: int, n_filters: int, dim: int, kernel: int, bias: bool = False):
        super().__init__()
        if kernel < 1:
            raise ValueError(f"conv_kernel: expected ≥ 1, got {kernel}")
        self.n_filters, self.dim, self.max_lag = n_filters, dim, kernel
        self.project = nn.Linear(n_embd, dim, bias=bias)
        self.readout = nn.Linear(n_filters * dim, n_embd, bias=bias)
        # kernel[c, 0, j]: the weight of lag kernel−1−j (conv1d correlates), a mean to start
        self.kernel = nn.Parameter(torch.full((dim * n_filters, 1, kernel), 1.0 / kernel))
        with torch.no_grad():
            self.kernel.add_(torch.randn_like(self.kernel) * (0.5 / kernel))

    @property
    def width(self) -> int:
        return self.n_filters * self.dim

    def forward(self, history_emb: torch.Tensor, start: int) -> torch.Tensor:
        """history_emb: (B, start+T, C) → (B, T, n_embd) for the T new positions (only the
        last ``kernel − 1`` tokens before them are read)."""
        first = max(0, start - self.max_lag + 1)
        z = self.project(history_emb[:, first:]).transpose(1, 2)  # (B, dim, T')
        z = F.pad(z, (self.max_lag - 1, 0))
        traces = F.conv1d(z, self.kernel.to(z.dtype), groups=self.dim)  # (B, dim·S, T')
        return self.readout(traces[:, :, start - first :].transpose(1, 2))
