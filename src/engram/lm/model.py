"""The HippocampalTransformer: a nanoGPT-style decoder whose hippocampal parts are switched
by config. With ``parts=()`` it is the plain GPT baseline, through the same code path
(``HippocampalTransformerConfig.plain_gpt`` builds that config by name).

Parts (any subset of ``PARTS``):
- ``place``: a sparse place-cell code of the residual stream, added before block ``place_layer``;
- ``grid``: hexagonal grid-cell codes of the position or of a learned path;
- ``time``: time cells with log-spaced temporal receptive fields over recent tokens;
- ``theta_gamma``: positions as gamma cycles nested in theta cycles;
- ``prosody``: per-head attention gain modulated by rhythm features of the text.
Grid, time and theta-gamma codes join the learned position embedding (``position_codes='join'``)
or replace it (``'replace'``).

Controls (any subset of ``engram.lm.positions.CONTROLS``, the ``controls`` field) are the
generic features each code is compared against, through the same code path: sinusoids of each
code's width given the way the code is given, RoPE, ALiBi and a short causal convolution.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from engram.lm.cells import (
    N_RHYTHM,
    GridCells,
    PlaceCells,
    RhythmFeatures,
    ThetaGammaCode,
    TimeCells,
)
from engram.lm.positions import (
    CONTROLS,
    AttentionPositions,
    CausalConv,
    Rotary,
    SinusoidCode,
    alibi_bias,
    alibi_slopes,
    rotate,
)
from engram.params import Interval, check

PARTS: tuple[str, ...] = ("place", "grid", "time", "theta_gamma", "prosody")
POSITION_PARTS = ("grid", "time", "theta_gamma")
# controls that stand in for a position code: with position_codes="replace" they, too, replace
# the learned position embedding
POSITION_CONTROLS = ("sin_theta_gamma", "sin_grid", "sin_time", "rope", "alibi", "conv")


@dataclass
class HippocampalTransformerConfig:
    """Sizes of the transformer and the switches and sizes of its hippocampal parts."""

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    mlp_hidden: int | None = None  # MLP hidden width; None = nanoGPT's 4 * n_embd
    parts: tuple[str, ...] = ()
    position_codes: str = "join"
    place_cells: int = 128
    place_level: float = 0.05
    place_layer: int = -1
    grid_modules: int = 4
    grid_cells_per_module: int = 8
    grid_source: str = "position"
    time_cells: int = 8
    time_dim: int = 8
    time_max_lag: int = 32
    gamma_per_theta: float = 6.0
    theta_scales: int = 4
    controls: tuple[str, ...] = ()
    sinusoid_max_period: float = 128.0
    rope_base: float = 10000.0
    conv_kernel: int = 4
    gradient_checkpointing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parts = tuple(self.parts)
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown:
            raise ValueError(f"parts: unknown part(s) {unknown}; expected a subset of {PARTS}")
        if len(set(self.parts)) != len(self.parts):
            raise ValueError(f"parts: expected distinct names, got {self.parts}")
        self.controls = tuple(self.controls)
        unknown = [p for p in self.controls if p not in CONTROLS]
        if unknown:
            raise ValueError(
                f"controls: unknown control(s) {unknown}; expected a subset of {CONTROLS}"
            )
        if len(set(self.controls)) != len(self.controls):
            raise ValueError(f"controls: expected distinct names, got {self.controls}")
        check("conv_kernel", self.conv_kernel, Interval(int, 1, None))
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check(name, getattr(self, name), Interval(int, 1, None))
        check("mlp_hidden", self.mlp_hidden, Interval(int, 1, None), None)
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd: expected a multiple of n_head={self.n_head}, got {self.n_embd}"
            )
        if self.position_codes not in ("join", "replace"):
            raise ValueError(
                f"position_codes: expected 'join' or 'replace', got {self.position_codes!r}"
            )
        if self.extra:
            raise ValueError(f"config: unknown field(s) {sorted(self.extra)}")
        if self.place_layer < 0:
            self.place_layer = self.n_layer // 2
        if self.place_layer >= self.n_layer:
            raise ValueError(
                f"place_layer: expected < n_layer={self.n_layer}, got {self.place_layer}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HippocampalTransformerConfig:
        """Build from a dict, rejecting unknown keys by name (e.g. a typo in a config file)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = {k: v for k, v in data.items() if k not in names}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, extra=unknown)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("extra")
        data["parts"] = list(self.parts)
        data["controls"] = list(self.controls)
        return data

    @classmethod
    def plain_gpt(cls, **sizes: Any) -> HippocampalTransformerConfig:
        """The plain GPT baseline: every hippocampal part and control off, the same code path.

        ``sizes`` are any other fields (``n_layer``, ``n_embd``, ``mlp_hidden`` …); passing
        ``parts`` or ``controls`` is refused, since the point of this preset is that there are
        none.
        """
        for name in ("parts", "controls"):
            if name in sizes:
                raise ValueError(f"{name}: the plain GPT has none, got {sizes[name]!r}")
        return cls(**sizes, parts=(), controls=())

    def without_parts(self) -> HippocampalTransformerConfig:
        """This config with every hippocampal part and control off: its plain GPT of the same
        sizes."""
        return dataclasses.replace(self, parts=(), controls=())

    def has(self, part: str) -> bool:
        """Whether a hippocampal part or a control (``CONTROLS``) is on."""
        return part in self.parts or part in self.controls

    def code_width(self, code: str) -> int:
        """Features a position code reads out into the residual stream: theta-gamma's slots
        and clocks, grid's cells, time cells' traces (what its controls are matched to)."""
        widths = {
            "theta_gamma": round(self.gamma_per_theta) + 2 * self.theta_scales,
            "grid": self.grid_modules * self.grid_cells_per_module,
            "time": self.time_cells * self.time_dim,
        }
        if code not in widths:
            raise ValueError(f"code: expected one of {sorted(widths)}, got {code!r}")
        return widths[code]

    @property
    def mlp_width(self) -> int:
        return 4 * self.n_embd if self.mlp_hidden is None else self.mlp_hidden


# the largest time-cell token table (lags × vocabulary × width, in elements) folded for decoding
MAX_TIME_TABLE = 1 << 22


@dataclass(frozen=True)
class DecodingTables:
    """Weights folded for KV-cached inference (a snapshot: built at a cache's first step and
    read by that cache only): ``position`` (block, n_embd), the sum of every
    position term (learned embedding, grid, theta-gamma, sinusoids) at each position, or None
    when there is at most the learned one; ``time`` (max_lag · vocab, n_embd), row
    lag · vocab + token: what that token contributes through the time cells from that lag (its
    embedding included at lag 0), or None when off or too large."""

    position: torch.Tensor | None
    time: torch.Tensor | None
    time_rows: torch.Tensor | None  # (max_lag,) row offset of each token of a window, oldest first
    # prosody: (vocab, 6 + layers·heads) per token: whether it is not a space, newline,
    # sentence end (3), its characters where not (3), the log gain of its static rhythm flags
    # with the bias; and the log-counts' weights (3, layers·heads), transposed, over log 65
    prosody: torch.Tensor | None = None
    gain_dynamic: torch.Tensor | None = None
    place: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # PlaceCells.folded


@dataclass(frozen=True)
class LMOutput:
    """One forward pass: logits (B, T, vocab), mean cross-entropy against the targets (or
    None) and the final normalised hidden states (B, T, n_embd)."""

    logits: torch.Tensor
    loss: torch.Tensor | None
    hidden: torch.Tensor


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to the block size.

    It also keeps the token history, which the history-dependent codes (time cells, the grid
    path) read, and the running rhythm counts, so that cached and uncached forward passes agree.
    """

    def __init__(
        self,
        config: HippocampalTransformerConfig,
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
    ):
        head = config.n_embd // config.n_head
        shape = (batch, config.n_head, config.block_size, head)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [
            torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)
        ]
        self.tokens = torch.zeros(batch, 0, dtype=torch.long, device=device)
        self.rhythm: torch.Tensor | None = None  # (batch, 3) counts, see RhythmFeatures
        # the model's folded decoding tables, read at the cache's first step under no_grad: a
        # cache decodes with the weights it started with (make a new one after training)
        self.tables: DecodingTables | None = None
        self.length = 0

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    def select(self, index: torch.Tensor) -> KVCache:
        """A cache holding rows ``index`` of this one (beam reordering, candidate fan-out)."""
        new = object.__new__(KVCache)
        new.keys = [k.index_select(0, index) for k in self.keys]
        new.values = [v.index_select(0, index) for v in self.values]
        new.tokens = self.tokens.index_select(0, index)
        new.rhythm = None if self.rhythm is None else self.rhythm.index_select(0, index)
        new.tables = self.tables
        new.length = self.length
        return new


def _dropout(p: float) -> nn.Module:
    # without dropout, skip the module call: it is a measurable part of a decoding step
    return nn.Dropout(p) if p > 0 else nn.Identity()


class CausalSelfAttention(nn.Module):
    def __init__(self, config: HippocampalTransformerConfig):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = _dropout(config.dropout)
        self.dropout = config.dropout

    def forward(
        self,
        x: torch.Tensor,
        gain: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        positions: AttentionPositions | None = None,
    ) -> torch.Tensor:
        """``gain`` (B, n_head, T, 1): the prosody gain of each head's queries, or None;
        ``positions``: the rotary angles and/or ALiBi bias of the new tokens, or None."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if gain is not None:
            # a gain on the query is a per-head, per-token attention temperature
            q = q * (gain if gain.dtype == q.dtype else gain.to(q.dtype))
        bias = None
        if positions is not None:
            if positions.rotary is not None:  # keys are cached rotated, at their own positions
                q, k = rotate(q, *positions.rotary), rotate(k, *positions.rotary)
            bias = positions.bias
        start = 0
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start : start + T] = k
            cache.values[layer][:, :, start : start + T] = v
            k = cache.keys[layer][:, :, : start + T]
            v = cache.values[layer][:, :, : start + T]
        dropout = self.dropout if self.training else 0.0
        if bias is not None:  # ALiBi: the bias carries the causal mask (−inf above the diagonal)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout
            )
        elif start == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            rows = torch.arange(start, start + T, device=x.device)[:, None]
            mask = torch.arange(start + T, device=x.device)[None] <= rows
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: HippocampalTransformerConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_width, bias=config.bias)
        self.c_proj = nn.Linear(config.mlp_width, config.n_embd, bias=config.bias)
        self.dropout = _dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """A pre-norm transformer block."""

    def __init__(self, config: HippocampalTransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        gain: torch.Tensor | None,
        cache: KVCache | None,
        layer: int,
        positions: AttentionPositions | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), gain, cache, layer, positions)
        return x + self.mlp(self.ln_2(x))


class HippocampalTransformer(nn.Module):
    """The decoder with the hippocampal parts its config switches on; with none on
    (``HippocampalTransformerConfig.plain_gpt``) it is the plain GPT baseline.

    ``token_strings`` (the tokenizer's vocabulary as text) is required when ``prosody`` is
    on: rhythm features are read from the text of each token.
    """

    def __init__(self, config: HippocampalTransformerConfig, token_strings: list[str] | None = None):
        super().__init__()
        self.config = config
        c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        learned_position = c.position_codes == "join" or not any(
            map(c.has, POSITION_PARTS + POSITION_CONTROLS)
        )
        self.wpe = nn.Embedding(c.block_size, c.n_embd) if learned_position else None
        self.drop = _dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        self.place = (
            PlaceCells(c.n_embd, c.place_cells, c.place_level, bias=c.bias)
            if c.has("place")
            else None
        )
        self.grid = (
            GridCells(
                c.n_embd,
                c.grid_modules,
                c.grid_cells_per_module,
                source=c.grid_source,
                bias=c.bias,
                n_positions=c.block_size,
            )
            if c.has("grid")
            else None
        )
        self.time = (
            TimeCells(
                c.n_embd,
                c.time_cells,
                c.time_dim,
                c.time_max_lag,
                bias=c.bias,
                n_positions=c.block_size,
            )
            if c.has("time")
            else None
        )
        self.theta_gamma = (
            ThetaGammaCode(
                c.n_embd, c.gamma_per_theta, c.theta_scales, bias=c.bias, n_positions=c.block_size
            )
            if c.has("theta_gamma")
            else None
        )
        # controls: each sinusoid as wide as its code, given as the code is
        self.sinusoids = nn.ModuleDict(
            {
                name: SinusoidCode(
                    c.n_embd,
                    c.code_width(name.removeprefix("sin_")),
                    c.sinusoid_max_period,
                    bias=c.bias,
                    n_positions=c.block_size,
                )
                for name in c.controls
                if name.startswith("sin_")
            }
        )
        head = c.n_embd // c.n_head
        self.rotary = (
            Rotary(head, c.rope_base, n_positions=c.block_size) if c.has("rope") else None
        )
        if c.has("alibi"):
            self.register_buffer("alibi_slopes", alibi_slopes(c.n_head), persistent=False)
        else:
            self.alibi_slopes = None
        self.conv = (
            CausalConv(c.n_embd, c.time_cells, c.time_dim, c.conv_kernel, bias=c.bias)
            if c.has("conv")
            else None
        )
        self.rhythm = RhythmFeatures(c.vocab_size) if c.has("prosody") else None
        # prosody: log attention gain of every head of every layer, linear in the rhythm
        self.prosody = nn.Linear(N_RHYTHM, c.n_layer * c.n_head) if self.rhythm else None
        if self.rhythm is not None:
            if token_strings is None:
                raise ValueError("token_strings: required when the 'prosody' part is on")
            self.rhythm.set_vocabulary(token_strings)
        # KV-cached inference reads folded tables (``DecodingTables``); False = the step-by-step
        # path, which computes the same to rounding
        self.fused_decoding = True
        # KV-cached inference steps through torch.compile (``compile_decoding``), or None: eager
        self._compiled_step: Callable[..., LMOutput] | None = None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Trainable parameters (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    def _position_modules(self) -> list[nn.Module]:
        """The modules whose output depends on the position alone, in the forward's order."""
        modules: list[nn.Module] = []
        if self.grid is not None and self.grid.source == "position":
            modules.append(self.grid)
        if self.theta_gamma is not None:
            modules.append(self.theta_gamma)
        return modules + list(self.sinusoids.values())

    def decoding_tables(self) -> DecodingTables:
        """The folded tables of the current weights (built anew on every call: a KV cache
        reads them once, at its first step, since no version counter is reliable — the fused
        AdamW step, for one, updates weights in place without bumping it)."""
        c = self.config
        with torch.inference_mode(False), torch.no_grad():
            position = None
            codes = self._position_modules()
            if codes:
                terms = [self.wpe.weight] if self.wpe is not None else []
                terms += [m(0, c.block_size) if m is not self.grid else m.position_code(
                    0, c.block_size) for m in codes]
                position = sum(terms)
            time = time_rows = None
            cells = self.time
            if (
                cells is not None
                and cells.readout.bias is None
                and cells.max_lag * c.vocab_size * c.n_embd <= MAX_TIME_TABLE
            ):
                z = cells.project(self.wte.weight)  # (vocab, dim): each token projected
                readout = cells.readout.weight.view(c.n_embd, cells.dim, cells.n_cells)
                per_lag = torch.einsum("eds,sl->lde", readout, cells.fields())  # (L, dim, C)
                time = torch.einsum("vd,lde->lve", z, per_lag).reshape(-1, c.n_embd)
                time[: c.vocab_size] += self.wte.weight  # lag 0: the token's own embedding
                lags = torch.arange(cells.max_lag - 1, -1, -1, device=time.device)
                time_rows = lags * c.vocab_size
            prosody = gain_dynamic = None
            if self.rhythm is not None:
                static = self.rhythm.table.shape[1]
                weight = self.prosody.weight
                gain = self.rhythm.table @ weight[:, :static].T
                if self.prosody.bias is not None:
                    gain = gain + self.prosody.bias
                keep = (self.rhythm.table.index_select(1, self.rhythm.boundaries) == 0).float()
                added = self.rhythm.chars[:, None] * keep
                prosody = torch.cat([keep, added, gain], 1)
                gain_dynamic = (weight[:, static:].T / math.log(65.0)).contiguous()
            place = self.place.folded() if self.place is not None else None
        return DecodingTables(position, time, time_rows, prosody, gain_dynamic, place)

    def _time_from_table(
        self, tables: DecodingTables, history: torch.Tensor, start: int, T: int
    ) -> torch.Tensor:
        """Token embeddings and time cells of the T new positions, summed from the folded
        token table."""
        table = tables.time
        if T == 1:  # one step: the window of the last max_lag tokens, oldest first, one bag
            window = history[:, max(0, start + 1 - self.time.max_lag) :]
            rows = window + tables.time_rows[self.time.max_lag - window.shape[1] :]
            return F.embedding_bag(rows, table, mode="sum")[:, None]
        lag = torch.arange(self.time.max_lag, device=history.device)
        at = torch.arange(start, start + T, device=history.device)[:, None] - lag  # (T, L)
        rows = history[:, at.clamp_min(0)] + lag * self.config.vocab_size  # (B, T, L)
        terms = table[rows]  # (B, T, L, C)
        if start < self.time.max_lag - 1:  # lags reaching before the first token count 0
            terms = terms * (at >= 0)[..., None].to(terms.dtype)
        return terms.sum(2)

    def _prosody_step(
        self, tables: DecodingTables, token: torch.Tensor, cache: KVCache
    ) -> tuple[torch.Tensor, ...]:
        """One decoding step's per-layer query gains (B, head, 1, 1) from the folded tables,
        carrying the rhythm counts in ``cache`` as ``RhythmFeatures`` does: the characters
        since each boundary grow by the token's and restart at 0 where it is one, (d + c)·keep
        in one ``addcmul`` (whole numbers: exact)."""
        c, row = self.config, F.embedding(token, tables.prosody)
        since = torch.addcmul(row[:, 3:6], cache.rhythm, row[:, :3])
        cache.rhythm = since
        log_gain = torch.addmm(row[:, 6:], torch.log1p(since), tables.gain_dynamic)
        return torch.exp(log_gain).view(-1, c.n_layer, c.n_head, 1, 1).unbind(1)

    def new_cache(self, batch: int) -> KVCache:
        p = self.wte.weight
        return KVCache(self.config, batch, p.device, p.dtype)

    def compile_decoding(
        self,
        backend: str | Callable[..., Any] | None = "inductor",
        options: dict[str, Any] | None = None,
    ) -> None:
        """Run KV-cached decoding steps (one new token after the first call, gradients off, no
        targets) through ``torch.compile`` with dynamic shapes, one graph per step; a cache's
        first call (the prompt) stays eager, and ``backend=None`` makes every step eager again.

        Compilation is lazy: the first steps at each new kind of position pay it (8–14 s of
        CPU per 0.8M-parameter model, two graphs, in ``benchmarks/lm_decode.py``). When it
        fails, the step is run eagerly, with a warning, and so are the later ones. ``options``
        go to the backend (inductor's ``{"cpp_wrapper": True}``: each step's wrapper in C++)."""
        if backend is None:
            self._compiled_step = None
            return
        if not callable(backend) and (not isinstance(backend, str) or not backend):
            raise ValueError(
                f"backend: expected a torch.compile backend (a name or a callable) or None, "
                f"got {backend!r}"
            )
        # every model's steps are graphs of the one ``_forward`` code object, two each (before
        # and after the time cells' window fills): past dynamo's limit per code object (8)
        # the later models would silently run eagerly
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        self._compiled_step = torch.compile(
            self._forward, backend=backend, dynamic=True, fullgraph=True, options=options
        )

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> LMOutput:
        """idx: (B, T) token ids; with ``cache`` they continue the cached sequence.

        Returns logits (B, T, vocab), the mean cross-entropy against ``targets`` (or None) and
        the final normalised hidden states (B, T, n_embd) that the episodic memory keys on.
        """
        c = self.config
        if idx.dim() != 2:
            raise ValueError(f"idx: expected a (batch, time) tensor, got shape {tuple(idx.shape)}")
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > c.block_size:
            raise ValueError(
                f"idx: sequence length {start + T} exceeds the model's block_size {c.block_size}"
            )
        if cache is not None and cache.batch != B:
            if cache.length:
                raise ValueError(f"cache: holds batch {cache.batch}, got input batch {B}")
            cache.tokens = cache.tokens.new_zeros(B, 0)
        inference = cache is not None and not torch.is_grad_enabled()
        if inference and self.fused_decoding and cache.tables is None:
            cache.tables = self.decoding_tables()
        if inference and T == 1 and start and targets is None and self._compiled_step is not None:
            try:  # one graph (fullgraph): a failed compile has not touched the cache
                # a fresh token tensor: a view's offset and strides would be guarded on; the
                # history's length is dynamic from the first graph on, not after a recompile
                torch._dynamo.maybe_mark_dynamic(cache.tokens, 1)
                return self._compiled_step(idx.clone(), None, cache)
            except torch._dynamo.exc.TorchDynamoException as error:
                warnings.warn(
                    f"compile_decoding: torch.compile failed ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); decoding eagerly",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._compiled_step = None
        return self._forward(idx, targets, cache)

    def _forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None, cache: KVCache | None
    ) -> LMOutput:
        """The forward pass of checked inputs (``forward``), the body ``compile_decoding``
        compiles."""
        c = self.config
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        history = torch.cat([cache.tokens, idx], 1) if cache is not None else idx
        tables = None
        if cache is not None and self.fused_decoding and not torch.is_grad_enabled():
            tables = cache.tables
        fused_time = tables is not None and tables.time is not None
        # the folded time table holds each token's embedding at lag 0: a decoding step gathers
        # the embedding and the time cells in one embedding_bag
        tok = None if fused_time and start else self.wte(idx)
        x = self._time_from_table(tables, history, start, T) if fused_time else tok
        if tables is not None and tables.position is not None:
            # one row by index, not a slice: a compiled step need not guard on the block's end
            x = x + (tables.position[start] if T == 1 else tables.position[start : start + T])
        else:
            # codes of the position alone are summed at (T, C) and broadcast over the batch once
            positions = torch.arange(start, start + T, device=idx.device)
            position_terms = []
            if self.wpe is not None:
                position_terms.append(self.wpe(positions))
            if self.grid is not None and self.grid.source == "position":
                position_terms.append(self.grid.position_code(start, start + T))
            if self.theta_gamma is not None:
                position_terms.append(self.theta_gamma(start, start + T))
            for sinusoid in self.sinusoids.values():
                position_terms.append(sinusoid(start, start + T))
            x = x + sum(position_terms) if position_terms else x
        if self.grid is not None and self.grid.source == "path":  # integrates the whole history
            x = x + self.grid(self.wte(history) if start else tok, start)
        if self.time is not None and not fused_time:  # reads the last time_max_lag − 1 tokens
            first = max(0, start - self.time.max_lag + 1)
            x = x + self.time(self.wte(history[:, first:]) if start else tok, start - first)
        if self.conv is not None:  # sees only the last conv_kernel − 1 tokens of the history
            first = max(0, start - self.conv.max_lag + 1)
            x = x + self.conv(self.wte(history[:, first:]) if start else tok, start - first)
        relative = None
        if self.rotary is not None or self.alibi_slopes is not None:
            relative = AttentionPositions(
                rotary=self.rotary(start, start + T) if self.rotary is not None else None,
                bias=alibi_bias(self.alibi_slopes, start, T)
                if self.alibi_slopes is not None
                else None,
            )
        gains = None
        if tables is not None and tables.prosody is not None and T == 1 and start:
            gains = self._prosody_step(tables, idx[:, 0], cache)
        elif self.rhythm is not None:
            features, rhythm_state = self.rhythm(idx, cache.rhythm if cache is not None else None)
            if cache is not None:
                cache.rhythm = rhythm_state
            log_gain = self.prosody(features.to(x.dtype))
            # laid out once as (layer, B, head, T, 1) and unbound (one backward node, not a
            # zero-filled gradient per layer): each layer's view broadcasts straight onto its
            # (B, head, T, head_dim) queries
            gains = torch.exp(log_gain).view(B, T, c.n_layer, c.n_head).permute(2, 0, 3, 1)
            gains = gains[..., None].unbind(0)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            if self.place is not None and i == c.place_layer:
                x = x + self.place(x, tables.place if tables is not None else None)
            gain = gains[i] if gains is not None else None
            if c.gradient_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, gain, None, i, relative, use_reentrant=False)
            else:
                x = block(x, gain, cache, i, relative)
        if cache is not None:
            cache.tokens = history
            cache.length = start + T
        hidden = self.ln_f(x)
        logits = self.lm_head(hidden)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return LMOutput(logits, loss, hidden)

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: decoupled weight decay on matrices (dim ≥ 2) only, never on
        gains, biases, or the place cells' coding level."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (6N plus attention), as in the PaLM appendix."""
        c = self.config
        T = seq_len or c.block_size
        return 6 * self.num_params() + 12 * c.n_layer * c.n_embd * T

    def estimate_mfu(self, tokens_per_second: float, peak_flops: float) -> float:
        """Model FLOPs utilisation: achieved training FLOPs over the device's peak."""
        return self.flops_per_token() * tokens_per_second / peak_flops


@dataclass(frozen=True)
class MatchedWidth:
    """The MLP width of a plain GPT matched to a parameter count, and how close it came."""

    mlp_hidden: int
    params: int
    residual: int  # params - target


def matched_mlp_hidden(config: HippocampalTransformerConfig, target: int) -> MatchedWidth:
    """The MLP hidden width at which the plain GPT of ``config`` (parts off) has the parameter
    count closest to ``target``, for comparing a model with parts against a baseline of equal
    size. Parameters are linear in the width, so two counts fix the line."""
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise ValueError(f"target: expected a positive parameter count, got {target!r}")
    plain = dataclasses.replace(config.without_parts(), mlp_hidden=1, gradient_checkpointing=False)
    smallest = HippocampalTransformer(plain).num_params()
    # each hidden unit adds a row of c_fc, a column of c_proj and, with biases, one c_fc bias
    per_unit = config.n_layer * (2 * config.n_embd + int(config.bias))
    if target < smallest:
        raise ValueError(
            f"target: a plain GPT of this config has at least {smallest} parameters "
            f"(MLP width 1), got {target}"
        )
    low = 1 + (target - smallest) // per_unit
    best = min((low, low + 1), key=lambda h: abs(smallest + (h - 1) * per_unit - target))
    params = HippocampalTransformer(dataclasses.replace(plain, mlp_hidden=best)).num_params()
    return MatchedWidth(best, params, params - target)
