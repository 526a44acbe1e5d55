"""Decoding with a KV cache: greedy, temperature, top-k, nucleus, typical, repetition penalty,
contrastive search and beam search, optionally through the episodic memory.

The filters are pure functions on logits (B, V) → logits (B, V), with removed tokens at −inf;
they compare against thresholds rather than scatter, so they run on any backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engram.lm.memory import EpisodicMemory
from engram.lm.model import HippocampalTransformer, KVCache

STRATEGIES = ("greedy", "sample", "contrastive", "beam")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0 (use greedy for 0), got {temperature}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties at the k-th value are kept)."""
    if k < 1:
        raise ValueError(f"top_k: expected ≥ 1, got {k}")
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest set of most probable tokens whose mass reaches p."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p: expected a value in (0, 1], got {p}")
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, -1)
    before = torch.cumsum(probs, -1) - probs  # mass strictly above each sorted token
    keep = before < p
    cutoff = sorted_logits.masked_fill(~keep, float("inf")).amin(-1, keepdim=True)
    return logits.masked_fill(logits < cutoff, float("-inf"))


def typical_filter(logits: torch.Tensor, mass: float) -> torch.Tensor:
    """Locally typical sampling (Meister et al., 2023): keep the tokens whose surprisal is
    closest to the distribution's entropy, until their mass reaches ``mass``."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"typical_p: expected a value in (0, 1], got {mass}")
    logp = torch.log_softmax(logits.float(), -1)
    p = logp.exp()
    entropy = -(p * torch.nan_to_num(logp, neginf=0.0)).sum(-1, keepdim=True)
    deviation = (-logp - entropy).abs()
    sorted_dev, order = torch.sort(deviation, dim=-1)
    sorted_p = p.gather(-1, order)
    before = torch.cumsum(sorted_p, -1) - sorted_p
    cutoff = sorted_dev.masked_fill(before >= mass, float("-inf")).amax(-1, keepdim=True)
    return logits.masked_fill(deviation > cutoff, float("-inf"))


def repetition_penalty(
    logits: torch.Tensor, previous: torch.Tensor, penalty: float
) -> torch.Tensor:
    """CTRL's penalty: logits of tokens already in ``previous`` (B, T) are divided by
    ``penalty`` when positive and multiplied by it when negative."""
    if penalty <= 0:
        raise ValueError(f"repetition_penalty: expected > 0, got {penalty}")
    if penalty == 1.0 or previous.numel() == 0:
        return logits
    seen = F.one_hot(previous, logits.shape[-1]).amax(1).bool()
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


@dataclass
class SamplingConfig:
    """How to pick each next token."""

    strategy: str = "sample"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float = 1.0
    penalty_alpha: float = 0.6
    contrastive_k: int = 4
    beams: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: expected one of {STRATEGIES}, got {self.strategy!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")

    def filter(self, logits: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        logits = repetition_penalty(logits, previous, self.repetition_penalty)
        logits = apply_temperature(logits, self.temperature)
        if self.top_k is not None:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p is not None:
            logits = top_p_filter(logits, self.top_p)
        if self.typical_p is not None:
            logits = typical_filter(logits, self.typical_p)
        return logits


def _check_prompt(model: HippocampalTransformer, idx: torch.Tensor) -> torch.Tensor:
    idx = torch.as_tensor(idx, dtype=torch.long)
    if idx.dim() == 1:
        idx = idx[None]
    if idx.numel() == 0:
        raise ValueError("prompt: expected at least one token")
    if idx.shape[1] > model.config.block_size:
        raise ValueError(
            f"prompt: {idx.shape[1]} tokens exceed the model's block_size {model.config.block_size}"
        )
    return idx.to(model.wte.weight.device)


class _Stepper:
    """Runs the model one step at a time, with or without the KV cache; when the context
    reaches the block size, the cache is rebuilt from the last half block of tokens."""

    def __init__(self, model: HippocampalTransformer, use_cache: bool):
        self.model, self.use_cache = model, use_cache
        self.cache: KVCache | None = None

    def __call__(self, seq: torch.Tensor, new: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and hidden state at the last position of ``seq`` (B, T); ``new`` = tokens
        appended since the last call."""
        block = self.model.config.block_size
        if not self.use_cache:
            out = self.model(seq[:, -block:])
            return out.logits[:, -1], out.hidden[:, -1]
        if self.cache is None or self.cache.length + new > block:
            old, self.cache = self.cache, self.model.new_cache(seq.shape[0])
            if old is not None:  # the weights cannot change within one generation
                self.cache.tables = old.tables
            context = seq[:, -(block // 2) :] if seq.shape[1] > block else seq
            out = self.model(context, cache=self.cache)
        else:
            out = self.model(seq[:, -new:], cache=self.cache)
        return out.logits[:, -1], out.hidden[:, -1]


@torch.inference_mode()
def generate(
    model: HippocampalTransformer,
    prompt: torch.Tensor,
    max_new_tokens: int,
    config: SamplingConfig | None = None,
    use_cache: bool = True,
    memory: EpisodicMemory | None = None,
    store_context: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield each new token (B,) as soon as it is chosen (greedy or sampling strategies).

    With ``memory``, next-token probabilities are interpolated with its kNN distribution; with
    ``store_context`` as well, the prompt's and the generated (hidden, next token) pairs are
    stored as the text unfolds.
    """
    config = config or SamplingConfig()
    if config.strategy not in ("greedy", "sample"):
        raise ValueError(f"strategy: generate() streams greedy or sample, got {config.strategy!r}")
    model.eval()
    seq = _check_prompt(model, prompt)
    generator = torch.Generator(device=seq.device).manual_seed(config.seed)
    step = _Stepper(model, use_cache)
    if memory is not None and store_context and seq.shape[1] > 1:
        context = seq[:, -model.config.block_size :]
        memory.store(model(context).hidden[:, :-1].flatten(0, 1), context[:, 1:].flatten())
    new = seq.shape[1]
    for _ in range(max_new_tokens):
        logits, hidden = step(seq, new)
        if memory is not None and len(memory):
            logits = memory.interpolate(logits, hidden)
        if config.strategy == "greedy":
            token = torch.argmax(logits, -1)
        else:
            probs = torch.softmax(config.filter(logits.float(), seq), -1)
            token = torch.multinomial(probs, 1, generator=generator)[:, 0]
        if memory is not None and store_context:
            memory.store(hidden, token)
        seq = torch.cat([seq, token[:, None]], 1)
        new = 1
        yield token


@torch.no_grad()
def contrastive_search(
    model: HippocampalTransformer, prompt: torch.Tensor, max_new_tokens: int, k: int = 4, alpha: float = 0.6
) -> torch.Tensor:
    """Contrastive search (Su et al., 2022): among the top-k tokens, pick the one maximising
    (1 − α)·p(v) − α·max cos(h_v, h_context), which penalises degenerate repetition."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"penalty_alpha: expected a value in [0, 1], got {alpha}")
    model.eval()
    seq = _check_prompt(model, prompt)
    if seq.shape[0] != 1:
        raise ValueError(f"prompt: contrastive search takes one sequence, got {seq.shape[0]}")
    block = model.config.block_size
    cache = model.new_cache(1)
    out = model(seq[:, -block:], cache=cache)
    context_h = F.normalize(out.hidden[0], dim=-1)
    logits = out.logits[:, -1]
    for _ in range(max_new_tokens):
        if cache.length + 1 > block:
            cache, tables = model.new_cache(1), cache.tables
            cache.tables = tables  # the weights cannot change within one search
            out = model(seq[:, -(block // 2) :], cache=cache)
            logits = out.logits[:, -1]
        probs = torch.softmax(logits.float(), -1)[0]
        top_p, top_v = torch.topk(probs, k)
        fan = cache.select(torch.zeros(k, dtype=torch.long, device=seq.device))
        cand = model(top_v[:, None], cache=fan)
        cand_h = F.normalize(cand.hidden[:, -1], dim=-1)  # (k, C)
        degeneration = (cand_h @ context_h.T).amax(-1)
        best = int(torch.argmax((1 - alpha) * top_p - alpha * degeneration))
        cache = fan.select(torch.tensor([best], device=seq.device))
        context_h = torch.cat([context_h, cand_h[best : best + 1]], 0)
        logits = cand.logits[best : best + 1, -1]
        seq = torch.cat([seq, top_v[best].view(1, 1)], 1)
    return seq


@dataclass(frozen=True)
class Beam:
    """The best beam: the whole sequence (1, T + new) and its summed log-probability."""

    tokens: torch.Tensor
    score: float


@torch.no_grad()
def beam_search(
    model: HippocampalTransformer, prompt: torch.Tensor, max_new_tokens: int, beams: int = 4
) -> Beam:
    """Beam search over summed log-probabilities; returns the best sequence and its score.

    The new tokens must fit in the block: beams reorder the KV cache and cannot slide it.
    """
    model.eval()
    seq = _check_prompt(model, prompt)
    if seq.shape[0] != 1:
        raise ValueError(f"prompt: beam search takes one sequence, got {seq.shape[0]}")
    if beams < 1:
        raise ValueError(f"beams: expected ≥ 1, got {beams}")
    if seq.shape[1] + max_new_tokens > model.config.block_size:
        raise ValueError(
            f"max_new_tokens: prompt + {max_new_tokens} new tokens exceed block_size "
            f"{model.config.block_size} (beam search does not slide its cache)"
        )
    cache = model.new_cache(1)
    logp = torch.log_softmax(model(seq, cache=cache).logits[:, -1].float(), -1)
    scores = torch.zeros(1, device=seq.device)
    vocab = logp.shape[-1]
    for step in range(max_new_tokens):
        total = (scores[:, None] + logp).flatten()
        scores, flat = torch.topk(total, min(beams, total.numel()))
        parent, token = flat // vocab, flat % vocab
        seq = torch.cat([seq.index_select(0, parent), token[:, None]], 1)
        cache = cache.select(parent)
        if step + 1 < max_new_tokens:
            logp = torch.log_softmax(model(token[:, None], cache=cache).logits[:, -1].float(), -1)
    best = int(torch.argmax(scores))
    return Beam(seq[best : best + 1], float(scores[best]))


def complete(
    model: HippocampalTransformer,
    prompt: torch.Tensor,
    max_new_tokens: int,
    config: SamplingConfig,
    memory: EpisodicMemory | None = None,
) -> torch.Tensor:
    """The whole continued sequence (B, T + new) under any strategy."""
    if config.strategy == "contrastive":
        return contrastive_search(
            model, prompt, max_new_tokens, config.contrastive_k, config.penalty_alpha
        )
    if config.strategy == "beam":
        return beam_search(model, prompt, max_new_tokens, config.beams).tokens
    seq = _check_prompt(model, prompt)
    tokens = list(generate(model, seq, max_new_tokens, config, memory=memory))
    return torch.cat([seq, torch.stack(tokens, 1)], 1) if tokens else seq
