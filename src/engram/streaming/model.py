"""A small streaming transformer for recall tasks: 2 layers, a short causal convolution,
sliding-window attention with sinks, and an eviction memory read in every attention layer.

``forward`` is the parallel (training) form; ``stream`` runs the same weights token by token
with a real KV cache that evicts, and calls an optional hook with every evicted token.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engram.streaming.linear import MIXERS, RecurrentAttention
from engram.streaming.memories import MEMORY_KINDS, MemoryOptions, ParallelInputs, memory_for
from engram.streaming.window import Evicted, check_window, evicted_mask, visible_mask

EvictionHook = Callable[[Evicted], None]


@dataclass
class StreamingConfig:
    """Sizes and parts of a :class:`StreamingTransformer`; ``window=None`` is full attention.

    ``mixer`` is the attention layer: ``"softmax"`` (windowed, with sinks and an eviction
    memory), or ``"linear"`` / ``"delta"`` (:class:`~engram.streaming.linear.RecurrentAttention`
    over the whole sequence through one matrix per head; they take ``window=None``, no memory).
    """

    vocab_size: int
    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    conv_kernel: int = 4
    window: int | None = 16
    n_sink: int = 1
    memory: str = "none"
    knn_top_k: int = 4
    knn_capacity: int | None = None
    projection_rate: float = 1e-2
    projection_trainable: bool = False
    mixer: str = "softmax"
    chunk: int = 64
    mlp: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "conv_kernel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model: expected a multiple of n_heads={self.n_heads}, got {self.d_model}")
        check_window(self.window, self.n_sink)
        if self.memory not in MEMORY_KINDS:
            raise ValueError(f"memory: expected one of {MEMORY_KINDS}, got {self.memory!r}")
        if self.memory != "none" and self.window is None:
            raise ValueError("memory: full attention (window=None) evicts nothing; use 'none'")
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer: expected one of {MIXERS}, got {self.mixer!r}")
        if self.mixer != "softmax" and (self.window is not None or self.memory != "none"):
            raise ValueError(
                f"mixer: {self.mixer!r} attends to the whole sequence through its own state; "
                f"expected window=None and memory='none', got window={self.window!r}, "
                f"memory={self.memory!r}"
            )

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def equal_state_capacity(self) -> int:
        """kNN entries per head whose bytes match the importance-weighted matrix (M and z)."""
        return max(1, (self.d_head * self.d_head + self.d_head) // (2 * self.d_head))


class CausalConv(nn.Module):
    """Depthwise causal convolution over the last ``kernel`` tokens (as in H3 / Based)."""

    def __init__(self, d_model: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model, padding=kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2)

    def step(self, x_t: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: x_t (B, D), buffer (B, D, kernel−1) of the previous inputs."""
        window = torch.cat([buffer, x_t[..., None]], -1)  # (B, D, kernel)
        out = (window * self.conv.weight[:, 0, :]).sum(-1) + self.conv.bias
        return out, window[..., 1:]


class WindowedAttention(nn.Module):
    """Multi-head causal attention over sinks + a sliding window, plus an eviction memory."""

    def __init__(self, cfg: StreamingConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        options = MemoryOptions(
            top_k=cfg.knn_top_k,
            capacity=cfg.knn_capacity if cfg.knn_capacity else cfg.equal_state_capacity(),
            rate=cfg.projection_rate,
            trainable_rate=cfg.projection_trainable,
        )
        self.memory = memory_for(cfg.memory, options)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) → (B, H, T, d)
        B, T, _ = x.shape
        return x.view(B, T, self.cfg.n_heads, self.cfg.d_head).transpose(1, 2)

    def forward(self, h: torch.Tensor, hook: EvictionHook | None = None) -> torch.Tensor:
        """Parallel form over a whole sequence h (B, T, D)."""
        cfg = self.cfg
        B, T, D = h.shape
        q, k, v = (self._heads(part) for part in self.qkv(h).split(D, dim=-1))
        visible = visible_mask(T, cfg.window, cfg.n_sink, h.device)
        evicted = evicted_mask(T, cfg.window, cfg.n_sink, h.device)
        k = self.memory.parallel_keys(h, k, evicted)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(cfg.d_head)
        probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        importance = probs.sum(-2)  # attention received, summed over the rows that saw it
        v = self.memory.parallel_values(h, v, importance, evicted)
        assoc_keys = probs @ k
        read = self.memory.parallel_read(ParallelInputs(q, k, v, importance, assoc_keys, evicted))
        y = probs @ v + read
        if hook is not None:
            for j in range(T):
                t = j + cfg.window if cfg.window is not None else T
                if j >= cfg.n_sink and t < T:
                    hook(
                        Evicted(
                            self.layer,
                            j,
                            k[:, :, j],
                            v[:, :, j],
                            h[:, j],
                            importance[:, :, j],
                            assoc_keys[:, :, j],
                        )
                    )
        return self.out(y.transpose(1, 2).reshape(B, T, D))

    def init_cache(self, batch: int, device=None) -> dict:
        cfg = self.cfg
        H, d = cfg.n_heads, cfg.d_head
        cache = {
            "positions": [],
            "k": torch.zeros(batch, H, 0, d, device=device),
            "v": torch.zeros(batch, H, 0, d, device=device),
            "h": torch.zeros(batch, 0, cfg.d_model, device=device),
            "importance": torch.zeros(batch, H, 0, device=device),
            "assoc": torch.zeros(batch, H, 0, d, device=device),
            "n_evicted": 0,
        }
        cache["memory"] = self.memory.init_state(batch, H, d, cfg.d_model, device)
        return cache

    def step(
        self, h_t: torch.Tensor, position: int, cache: dict, hook: EvictionHook | None = None
    ) -> torch.Tensor:
        """Streaming form: one token h_t (B, D) at ``position``; updates ``cache`` in place."""
        cfg = self.cfg
        B, D = h_t.shape
        self._evict(position, cache, hook)
        q, k, v = (part.view(B, cfg.n_heads, cfg.d_head) for part in self.qkv(h_t).split(D, -1))
        k, v = self.memory.adjust(cache["memory"], h_t, k, v)
        cache["positions"].append(position)
        cache["k"] = torch.cat([cache["k"], k[:, :, None]], 2)
        cache["v"] = torch.cat([cache["v"], v[:, :, None]], 2)
        cache["h"] = torch.cat([cache["h"], h_t[:, None]], 1)
        cache["importance"] = torch.cat([cache["importance"], k.new_zeros(B, cfg.n_heads, 1)], 2)
        scores = (cache["k"] @ q[..., None])[..., 0] / math.sqrt(cfg.d_head)  # (B, H, n)
        probs = torch.softmax(scores, dim=-1)
        cache["importance"] = cache["importance"] + probs
        y = (probs[..., None] * cache["v"]).sum(2)
        assoc = (probs[..., None] * cache["k"]).sum(2)
        cache["assoc"] = torch.cat([cache["assoc"], assoc[:, :, None]], 2)
        y = y + self.memory.read(cache["memory"], q)
        return self.out(y.reshape(B, D))

    def _evict(self, position: int, cache: dict, hook: EvictionHook | None) -> None:
        """When token ``position`` arrives, the token at ``position − window`` leaves the window."""
        cfg = self.cfg
        if cfg.window is None:
            return
        leaving = position - cfg.window
        if leaving < cfg.n_sink or leaving not in cache["positions"]:
            return
        i = cache["positions"].index(leaving)
        ev = Evicted(
            self.layer,
            leaving,
            cache["k"][:, :, i],
            cache["v"][:, :, i],
            cache["h"][:, i],
            cache["importance"][:, :, i],
            cache["assoc"][:, :, i],
        )
        keep = [n for n in range(len(cache["positions"])) if n != i]
        del cache["positions"][i]
        for name in ("k", "v", "importance", "assoc"):
            cache[name] = cache[name][:, :, keep]
        cache["h"] = cache["h"][:, keep]
        cache["n_evicted"] += 1
        if hook is not None:
            hook(ev)
        cache["memory"] = self.memory.write(cache["memory"], ev)

    def state_bytes(self, cache: dict) -> int:
        """Bytes held after a stream: the KV cache in the window plus the memory's state."""
        cfg = self.cfg
        kv = 2 * len(cache["positions"]) * cfg.d_model * 4
        memory = self.memory.state_bytes(cfg.n_heads, cfg.d_head, cfg.d_model, cache["n_evicted"])
        return kv + memory


class Block(nn.Module):
    """Pre-norm residual block: causal convolution, windowed attention, MLP."""

    def __init__(self, cfg: StreamingConfig, layer: int):
        super().__init__()
        self.norm_conv = nn.LayerNorm(cfg.d_model)
        self.conv = CausalConv(cfg.d_model, cfg.conv_kernel)
        self.norm_attn = nn.LayerNorm(cfg.d_model)
        self.attn: WindowedAttention | RecurrentAttention = (
            WindowedAttention(cfg, layer)
            if cfg.mixer == "softmax"
            else RecurrentAttention(cfg.d_model, cfg.n_heads, cfg.mixer, layer, cfg.chunk)
        )
        # Zoology's MQAR models have no MLP (its "state mixer" is the identity): mlp=False.
        self.norm_mlp = nn.LayerNorm(cfg.d_model) if cfg.mlp else nn.Identity()
        self.mlp = (
            nn.Sequential(
                nn.Linear(cfg.d_model, 4 * cfg.d_model),
                nn.GELU(),
                nn.Linear(4 * cfg.d_model, cfg.d_model),
            )
            if cfg.mlp
            else None
        )

    def forward(self, x: torch.Tensor, hook: EvictionHook | None = None) -> torch.Tensor:
        x = x + self.conv(self.norm_conv(x))
        x = x + self.attn(self.norm_attn(x), hook)
        return x if self.mlp is None else x + self.mlp(self.norm_mlp(x))

    def step(
        self, x_t: torch.Tensor, position: int, cache: dict, hook: EvictionHook | None = None
    ) -> torch.Tensor:
        conv_out, cache["conv"] = self.conv.step(self.norm_conv(x_t), cache["conv"])
        x_t = x_t + conv_out
        x_t = x_t + self.attn.step(self.norm_attn(x_t), position, cache["attn"], hook)
        return x_t if self.mlp is None else x_t + self.mlp(self.norm_mlp(x_t))


class StreamingTransformer(nn.Module):
    """Token embedding (no positional embedding: the convolution carries local order), blocks,
    a final norm and a tied output head."""

    def __init__(self, cfg: StreamingConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"tokens: expected an integer tensor (batch, length), got "
                f"{tuple(tokens.shape)} {tokens.dtype}"
            )
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.cfg.vocab_size):
            raise ValueError(
                f"tokens: expected ids in [0, {self.cfg.vocab_size}), got "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )

    def features(self, tokens: torch.Tensor, hook: EvictionHook | None = None) -> torch.Tensor:
        """The final normed hidden states (B, T, D), all positions at once."""
        self._check_tokens(tokens)
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, hook)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor, hook: EvictionHook | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for tokens (B, T), all positions at once."""
        return self.features(tokens, hook) @ self.embed.weight.T

    def scored_logits(self, tokens: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """Logits (n, vocab) at the n positions where ``where`` (B, T) is True, in row order:
        the output head only where a task scores, which is most of the cost at a large vocabulary."""
        if where.shape != tokens.shape or where.dtype != torch.bool:
            raise ValueError(
                f"where: expected a boolean mask of shape {tuple(tokens.shape)}, got "
                f"{tuple(where.shape)} {where.dtype}"
            )
        return self.features(tokens)[where] @ self.embed.weight.T

    def init_caches(self, batch: int) -> list[dict]:
        device = self.embed.weight.device
        k = self.cfg.conv_kernel - 1
        return [
            {
                "conv": torch.zeros(batch, self.cfg.d_model, k, device=device),
                "attn": block.attn.init_cache(batch, device),
            }
            for block in self.blocks
        ]

    def stream(
        self,
        tokens: torch.Tensor,
        hook: EvictionHook | None = None,
        caches: list[dict] | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) computed one token at a time with an evicting KV cache."""
        self._check_tokens(tokens)
        B, T = tokens.shape
        caches = self.init_caches(B) if caches is None else caches
        out = []
        for t in range(T):
            x = self.embed(tokens[:, t])
            for block, cache in zip(self.blocks, caches, strict=True):
                x = block.step(x, t, cache, hook)
            out.append(self.norm(x) @ self.embed.weight.T)
        return torch.stack(out, 1)

    def state_bytes(self, caches: list[dict]) -> int:
        """Bytes of inference state after a stream: KV caches, memories, convolution buffers."""
        conv = sum(c["conv"].numel() for c in caches) * 4 // max(1, caches[0]["conv"].shape[0])
        return conv + sum(b.attn.state_bytes(c["attn"]) for b, c in zip(self.blocks, caches, strict=True))

    def cross_entropy(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the positions whose target is not −100."""
        logits = self(tokens)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
