"""Hippocampal codes for the language model: place cells, grid cells, time cells, the
theta-gamma position code and text-derived rhythm (prosody) features.

Every module here maps the token stream (ids, embeddings or positions) to a (B, T, n_embd)
contribution for the residual stream, or, for prosody, to per-token rhythm features. Modules
whose code depends on the past receive the whole token history and the index ``start`` of the
first new position, so the KV-cached decoder computes exactly what the uncached one does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _ThresholdMask(torch.autograd.Function):
    """Hard mask u ≥ t in the forward pass; in the backward pass the gradient of a sigmoid
    σ((u − t)/s) (straight-through), so both u and the threshold t receive gradients."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, threshold: torch.Tensor, scale: torch.Tensor):
        ctx.save_for_backward(u, threshold, scale)
        return (u >= threshold).to(u.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, threshold, scale = ctx.saved_tensors
        # the reciprocal is taken on the (..., 1) scale, not on every unit; sigmoid_backward
        # forms grad·z·(1 − z) in one kernel
        inverse = scale.reciprocal()
        z = torch.sigmoid((u - threshold) * inverse)
        d = torch.ops.aten.sigmoid_backward(grad, z) * inverse
        return d, -d.sum(-1, keepdim=True), None


def soft_threshold_kwta(
    u: torch.Tensor, level: torch.Tensor, max_level: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-winners-take-all along the last axis at a fractional, differentiable coding level.

    The threshold interpolates linearly between the ⌊k⌋-th and ⌈k⌉-th largest value
    (k = level·N), read from ``topk`` values by ``index_select`` at the rank, so there is no
    scatter in the forward or backward pass (``topk`` values are detached; its backward would
    scatter).
    The forward mask is the hard k-WTA mask; gradients reach ``u`` and ``level`` through a
    sigmoid surrogate whose width is a tenth of the spread of the top values.

    Where k is whole the mask is ``engram.codes.kwta(u, k)``; this variant exists for what
    that one cannot do inside a trained model: a fractional, learnable k and no scatter.

    Returns (code, mask): code = u · mask, mask ∈ {0, 1}.
    """
    n = u.shape[-1]
    k_max = min(n, math.ceil(max_level * n) + 1)
    top = torch.topk(u.detach(), k_max, dim=-1).values  # (..., k_max), descending
    position = (level * n).clamp(1.0, k_max - 1.0) - 1.0  # index of the k-th largest
    low = position.detach().floor()
    frac = position - low  # carries the gradient with respect to the level
    # the two ranks around k as an index tensor: no host sync for the level on a GPU
    ranks = low.to(torch.long).reshape(1) + torch.arange(2, device=u.device)
    pair = top.index_select(-1, ranks)  # (..., 2): the values at ranks ⌊k⌋ and ⌈k⌉
    at_low, at_high = pair[..., :1], pair[..., 1:]
    threshold = at_low + frac * (at_high - at_low)
    scale = ((top[..., :1] - top[..., -1:]) * 0.1).clamp_min(1e-6)
    mask = _ThresholdMask.apply(u, threshold, scale)
    return u * mask, mask.detach()


def hard_kwta(
    u: torch.Tensor, low: int, frac: torch.Tensor
) -> torch.Tensor:
    """The forward pass of ``soft_threshold_kwta`` alone, for inference: the code u · mask with
    the threshold at fractional rank ``low`` + ``frac`` (from ``kwta_rank``), reading only the
    ``low + 2`` largest values. The same code (losers are +0 here, ±0 there), in a third of
    the operations."""
    top = torch.topk(u, low + 2, dim=-1).values
    at_low, at_high = top[..., low : low + 1], top[..., low + 1 :]
    threshold = at_low + frac * (at_high - at_low)
    return torch.where(u >= threshold, u, 0.0)


def kwta_rank(level: torch.Tensor, n: int, max_level: float) -> tuple[int, torch.Tensor]:
    """(⌊k⌋ − 1, the fraction above it) of the coding level's rank k = level·n, computed as
    ``soft_threshold_kwta`` computes them."""
    k_max = min(n, math.ceil(max_level * n) + 1)
    position = (level.detach() * n).clamp(1.0, k_max - 1.0) - 1.0
    low = position.floor()
    return int(low), position - low


class PlaceCells(nn.Module):
    """A sparse population code of the residual stream: a learned projection to ``n_cells``,
    k-WTA at a learned coding level, and a learned read-out back into the stream.

    The coding level a = a_min + (a_max − a_min)·σ(θ) starts at ``init_level`` and is trained
    with the rest of the model; it is not fixed at 3%.
    """

    def __init__(
        self,
        n_embd: int,
        n_cells: int,
        init_level: float = 0.05,
        min_level: float = 0.01,
        max_level: float = 0.15,
        bias: bool = False,
    ):
        super().__init__()
        if not min_level < init_level < max_level:
            raise ValueError(
                f"place_level: expected a coding level in ({min_level}, {max_level}), "
                f"got {init_level}"
            )
        self.n_cells, self.min_level, self.max_level = n_cells, min_level, max_level
        self.encode = nn.Linear(n_embd, n_cells, bias=bias)
        self.decode = nn.Linear(n_cells, n_embd, bias=bias)
        frac = (init_level - min_level) / (max_level - min_level)
        self.level_logit = nn.Parameter(torch.tensor(math.log(frac / (1 - frac))))
        self.record = False
        self.last_code: torch.Tensor | None = None

    @property
    def coding_level(self) -> torch.Tensor:
        return self.min_level + (self.max_level - self.min_level) * torch.sigmoid(self.level_logit)

    def folded(self) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rank, fraction, encode and decode weights transposed): what ``forward`` reads for
        inference with the current weights, to be handed back to it while they hold."""
        rank, frac = kwta_rank(self.coding_level, self.n_cells, self.max_level)
        return rank, frac, self.encode.weight.T.contiguous(), self.decode.weight.T.contiguous()

    def forward(
        self,
        x: torch.Tensor,
        folded: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Code ``x`` (…, n_embd) and read it out; ``folded`` (from ``folded()``, gradients
        off): the same in two matrix products, for decoding."""
        if folded is not None and self.encode.bias is None and not self.record:
            rank, frac, encode, decode = folded
            flat = x.reshape(-1, x.shape[-1])
            code = hard_kwta(torch.mm(flat, encode), rank, frac)
            return torch.mm(code, decode).view(*x.shape[:-1], -1)
        if torch.is_grad_enabled():
            code, _ = soft_threshold_kwta(self.encode(x), self.coding_level, self.max_level)
        else:  # inference: the same mask without the surrogate's bookkeeping
            rank = kwta_rank(self.coding_level, self.n_cells, self.max_level)
            code = hard_kwta(F.linear(x, self.encode.weight, self.encode.bias), *rank)
        if self.record:
            self.last_code = code.detach()
        return self.decode(code)


class GridCells(nn.Module):
    """Multi-scale hexagonal grid codes of a 2-D location, read out into the residual stream.

    Each module (one spatial scale, scales growing by √2 as in entorhinal cortex) holds cells
    whose rate is the mean of three cosines with wave vectors 60° apart, at different spatial
    phases. The location is either the token position laid on a line through the plane
    (``source='position'``) or a learned path: the running sum of a 2-D velocity predicted
    from each token's embedding (``source='path'``, path integration). Rates of the first
    ``n_positions`` positions depend on nothing learned and are computed once, as a table.
    """

    def __init__(
        self,
        n_embd: int,
        n_modules: int = 4,
        cells_per_module: int = 8,
        min_scale: float = 3.0,
        source: str = "position",
        bias: bool = False,
        n_positions: int = 0,
    ):
        super().__init__()
        if source not in ("position", "path"):
            raise ValueError(f"grid_source: expected 'position' or 'path', got {source!r}")
        self.source = source
        scales = min_scale * math.sqrt(2.0) ** torch.arange(n_modules, dtype=torch.float32)
        # module m is rotated by m·7°, so the lattices are not aligned
        angles = torch.arange(n_modules)[:, None] * math.radians(7.0) + torch.tensor(
            [0.0, math.pi / 3, 2 * math.pi / 3]
        )
        magnitude = 4 * math.pi / (math.sqrt(3.0) * scales)  # (M,)
        wave = torch.stack([torch.cos(angles), torch.sin(angles)], -1) * magnitude[:, None, None]
        self.register_buffer("wave", wave, persistent=False)  # (M, 3, 2)
        # spatial phases of the cells: a fixed low-discrepancy spread over one lattice period
        golden = (math.sqrt(5.0) - 1) / 2
        c = torch.arange(cells_per_module, dtype=torch.float32)
        phases = torch.stack([(c * golden) % 1.0, (c + 0.5) / cells_per_module], -1)
        offsets = phases[None] * scales[:, None, None]  # (M, C, 2)
        self.register_buffer("offsets", offsets, persistent=False)
        direction = torch.tensor([math.cos(0.4), math.sin(0.4)])
        self.register_buffer("direction", direction, persistent=False)
        if source == "path":
            self.velocity = nn.Linear(n_embd, 2, bias=bias)
        self.readout = nn.Linear(n_modules * cells_per_module, n_embd, bias=bias)
        n_table = n_positions if source == "position" else 0
        table = self.rates(self.position_location(torch.arange(n_table)))
        self.register_buffer("position_rates", table, persistent=False)  # (n_table, M·C)

    def rates(self, location: torch.Tensor) -> torch.Tensor:
        """Firing rates in [−0.5, 1] of all cells at ``location`` (..., 2) → (..., M·C)."""
        rel = location[..., None, None, :] - self.offsets  # (..., M, C, 2)
        proj = torch.einsum("...mcd,mjd->...mcj", rel, self.wave)
        return torch.cos(proj).mean(-1).flatten(-2)

    def position_location(self, positions: torch.Tensor) -> torch.Tensor:
        """(T, 2): the positions laid on a line through the plane."""
        return positions.to(self.direction.dtype)[:, None] * self.direction

    def path_location(self, tok_emb: torch.Tensor) -> torch.Tensor:
        """(B, T, 2): the path integrated from a 2-D velocity predicted from each token."""
        return torch.cumsum(torch.tanh(self.velocity(tok_emb)), dim=1)

    def position_code(self, start: int, stop: int) -> torch.Tensor:
        """(stop − start, n_embd) read-out at positions start … stop−1 (``source='position'``),
        from the table where it reaches."""
        if stop <= self.position_rates.shape[0]:
            rates = self.position_rates[start:stop]
        else:
            positions = torch.arange(start, stop, device=self.direction.device)
            rates = self.rates(self.position_location(positions))
        return self.readout(rates.to(self.readout.weight.dtype))

    def forward(self, history_emb: torch.Tensor, start: int) -> torch.Tensor:
        """Path code: history_emb (B, start+T, C) token embeddings → (B, T, n_embd) for the T
        new positions."""
        if self.source == "position":
            raise ValueError("grid_source: forward() codes a path; use position_code() here")
        return self.readout(self.rates(self.path_location(history_emb)[:, start:]))


class TimeCells(nn.Module):
    """Cells tuned to how long ago something happened: log-spaced temporal receptive fields.

    Cell i responds to a (projected) token seen τ_i steps ago, with a Gaussian field in log-lag
    whose width grows with τ_i (scale invariance, as in hippocampal time cells and Howard &
    Shankar's inverse-Laplace model). Computed as a fixed causal depthwise convolution; for
    windows up to ``n_positions`` tokens as one matrix product with the banded (Toeplitz) form
    of the fields, which is faster on a CPU for short windows (and for every cached decoding
    step, whose window is at most ``max_lag`` tokens).
    """

    def __init__(
        self,
        n_embd: int,
        n_cells: int = 8,
        dim: int = 16,
        max_lag: int = 32,
        width: float = 0.35,
        bias: bool = False,
        n_positions: int = 0,
    ):
        super().__init__()
        self.n_cells, self.dim, self.max_lag = n_cells, dim, max_lag
        self.project = nn.Linear(n_embd, dim, bias=bias)
        self.readout = nn.Linear(n_cells * dim, n_embd, bias=bias)
        peaks = torch.logspace(0, math.log10(max_lag - 1), n_cells)  # 1 … max_lag-1 steps
        lags = torch.arange(max_lag, dtype=torch.float32)
        fields = torch.exp(
            -((torch.log1p(lags)[None] - torch.log1p(peaks)[:, None]) ** 2) / (2 * width**2)
        )
        fields = fields / fields.sum(-1, keepdim=True)  # (S, L), index = lag
        # conv1d correlates, so the kernel runs from the oldest lag to lag 0
        kernel = fields.flip(-1).repeat(dim, 1)[:, None, :]  # (dim·S, 1, L)
        self.register_buffer("kernel", kernel, persistent=False)
        # band[t', s, t] = field_s(t − t'): the matrix product costs n/L times the convolution's
        # arithmetic, so it is used only for windows up to 4·max_lag
        n = min(n_positions, 4 * max_lag)
        lag = torch.arange(n)[None] - torch.arange(n)[:, None]
        band = fields[:, lag.clamp(0, max_lag - 1)] * ((lag >= 0) & (lag < max_lag))
        self.register_buffer("band", band.transpose(0, 1).contiguous(), persistent=False)

    def fields(self) -> torch.Tensor:
        """The receptive fields (n_cells, max_lag), indexed by lag."""
        return self.kernel[: self.n_cells, 0].flip(-1)

    def forward(self, history_emb: torch.Tensor, start: int) -> torch.Tensor:
        """history_emb: (B, start+T, C) → (B, T, n_embd) for the T new positions."""
        first = max(0, start - self.max_lag + 1)
        z = self.project(history_emb[:, first:]).transpose(1, 2)  # (B, dim, T')
        B, window, offset = z.shape[0], z.shape[2], start - first
        if window <= self.band.shape[0]:
            band = self.band[:window, :, offset:window].reshape(window, -1)  # (T', S·T)
            traces = (z @ band.to(z.dtype)).view(B, self.dim, self.n_cells, window - offset)
            traces = traces.permute(0, 3, 1, 2).flatten(2)  # (B, T, dim·S), as the conv's
        else:
            z = F.pad(z, (self.max_lag - 1, 0))
            traces = F.conv1d(z, self.kernel.to(z.dtype), groups=self.dim)  # (B, dim·S, T')
            traces = traces[:, :, offset:].transpose(1, 2)
        return self.readout(traces)


class ThetaGammaCode(nn.Module):
    """Positions as gamma cycles nested in theta cycles (Lisman & Jensen's theta-gamma code).

    Each token occupies one gamma cycle; ``gamma_per_theta`` (about 5–7) of them make a theta
    cycle. A position is coded by gamma-slot cells with von Mises tuning to theta phase (which
    slot of the current theta cycle) and by the theta cycle count on a few slower clocks. The
    code of the first ``n_positions`` positions is computed once, as a table.
    """

    def __init__(
        self,
        n_embd: int,
        gamma_per_theta: float = 6.0,
        n_theta_scales: int = 4,
        concentration: float = 2.0,
        bias: bool = False,
        n_positions: int = 0,
    ):
        super().__init__()
        if not 2.0 <= gamma_per_theta <= 16.0:
            raise ValueError(f"gamma_per_theta: expected a value in [2, 16], got {gamma_per_theta}")
        self.gamma_per_theta = float(gamma_per_theta)
        self.n_slots = round(gamma_per_theta)
        self.concentration = concentration
        preferred = 2 * math.pi * torch.arange(self.n_slots) / self.n_slots
        self.register_buffer("preferred", preferred, persistent=False)
        periods = 2.0 ** torch.arange(1, n_theta_scales + 1, dtype=torch.float32)
        self.register_buffer("periods", periods, persistent=False)
        self.readout = nn.Linear(self.n_slots + 2 * n_theta_scales, n_embd, bias=bias)
        self.register_buffer("table", self.code(torch.arange(n_positions)), persistent=False)

    def code(self, positions: torch.Tensor) -> torch.Tensor:
        p = positions.to(torch.float32)
        theta_phase = 2 * math.pi * (p / self.gamma_per_theta)
        slots = torch.exp(
            self.concentration * (torch.cos(theta_phase[:, None] - self.preferred) - 1)
        )
        cycle = torch.floor(p / self.gamma_per_theta)
        clock = 2 * math.pi * cycle[:, None] / self.periods
        return torch.cat([slots, torch.cos(clock), torch.sin(clock)], -1)

    def forward(self, start: int, stop: int) -> torch.Tensor:
        """(stop − start, n_embd) read-out of the code of positions start … stop−1, from the
        table where it reaches."""
        if stop <= self.table.shape[0]:
            code = self.table[start:stop]
        else:
            code = self.code(torch.arange(start, stop, device=self.preferred.device))
        return self.readout(code.to(self.readout.weight.dtype))


RHYTHM_STATIC = ("newline", "sentence_end", "clause_punct", "space", "capital", "length")
RHYTHM_DYNAMIC = ("chars_since_space", "chars_since_newline", "chars_since_sentence")
N_RHYTHM = len(RHYTHM_STATIC) + len(RHYTHM_DYNAMIC)
# the static flags that end what each dynamic feature counts: space, newline, sentence end
_BOUNDARIES = [RHYTHM_STATIC.index(name) for name in ("space", "newline", "sentence_end")]


def rhythm_table(token_strings: list[str]) -> torch.Tensor:
    """Per-token rhythm flags (vocab, 6) read from each token's text (never random)."""
    rows = []
    for s in token_strings:
        rows.append(
            [
                float("\n" in s),
                float(any(c in ".!?" for c in s)),
                float(any(c in ",;:" for c in s)),
                float(any(c in " \t" for c in s)),
                float(bool(s.strip()) and s.strip()[0].isupper()),
                min(len(s), 8) / 8.0,
            ]
        )
    return torch.tensor(rows, dtype=torch.float32)


class RhythmFeatures(nn.Module):
    """Rhythm features of the text: punctuation, line and sentence boundaries, word length.

    Static flags come from a per-vocabulary table built from the token strings; dynamic ones
    (characters since the last space, newline and sentence end, i.e. word length and position
    in the line and sentence, log-scaled) are running counts over the history.
    """

    def __init__(self, vocab_size: int):
        super().__init__()
        self.register_buffer("table", torch.zeros(vocab_size, len(RHYTHM_STATIC)))
        self.register_buffer("chars", torch.ones(vocab_size))
        self.register_buffer("boundaries", torch.tensor(_BOUNDARIES), persistent=False)

    def set_vocabulary(self, token_strings: list[str]) -> None:
        if len(token_strings) != self.table.shape[0]:
            raise ValueError(
                f"token_strings: expected {self.table.shape[0]} strings, got {len(token_strings)}"
            )
        self.table.copy_(rhythm_table(token_strings))
        self.chars.copy_(torch.tensor([max(len(s), 1) for s in token_strings], dtype=torch.float32))

    def forward(
        self, tokens: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: (B, T) new token ids; ``state`` (B, 3): the counts after the tokens before
        them (None at the start of a sequence). Returns the (B, T, N_RHYTHM) features and the
        state after ``tokens``, so that a KV-cached decoder pays per new token, not per token
        of the history.

        The state holds the characters since the last space, newline and sentence end (since
        the start where there was none); the counts are whole numbers, exact in floating
        point, so carrying them gives the features that counting over the whole history gives.
        """
        static = self.table[tokens]
        boundary = static.index_select(-1, self.boundaries) > 0
        if state is not None and tokens.shape[1] == 1:  # one decoding step: no scans
            since = torch.where(boundary[:, 0], 0.0, state + self.chars[tokens])
            dyn = torch.log1p(since) / math.log(65.0)
            return torch.cat([static, dyn[:, None]], -1), since
        total = torch.cumsum(self.chars[tokens], dim=1)[..., None]  # characters of these tokens
        # each boundary's last mark, counted from the first new token: before them, −state
        last = torch.zeros_like(total[:, :1, :1]).expand(-1, 1, len(_BOUNDARIES))
        if state is not None:
            last = -state[:, None]
        # characters since the last space, newline and sentence end, all three boundaries in
        # one pass: the running maximum of the marked totals
        marks = torch.cummax(torch.where(boundary, total, last), dim=1).values
        since = total - marks
        dyn = torch.log1p(since) / math.log(65.0)
        # its own storage: a compiled decoding step guards on a view's offset
        return torch.cat([static, dyn], -1), since[:, -1].clone()
