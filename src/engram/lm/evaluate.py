"""Evaluation: validation loss (nats per token), perplexity (per token) and bits per character,
generation speed, generation diversity, and place-cell activation maps.

Units are always named: a loss is in nats per token; bits per character convert it with the
number of characters the tokens span, so character and BPE models compare on the same scale.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from engram.lm.memory import EpisodicMemory
from engram.lm.model import HippocampalTransformer
from engram.lm.sample import SamplingConfig, generate


@dataclass(frozen=True)
class LossReport:
    """Validation loss over every token of a split, in three units."""

    nats_per_token: float
    perplexity_per_token: float
    bits_per_char: float
    tokens: int
    chars: int


def _scored_loss(
    model: HippocampalTransformer, tokens: np.ndarray, n_chars: int, batch: int, nll
) -> LossReport:
    """Sum ``nll(x, y)`` over consecutive, non-overlapping windows of the block size (each
    token predicted once) and report it per token and per character."""
    model.eval()
    block = model.config.block_size
    data = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    n_windows = (len(data) - 1) // block
    if n_windows < 1:
        raise ValueError(f"tokens: {len(data)} tokens are fewer than one block of {block}")
    x_all = data[: n_windows * block].view(n_windows, block)
    y_all = data[1 : n_windows * block + 1].view(n_windows, block)
    device = model.wte.weight.device
    total = 0.0
    for i in range(0, n_windows, batch):
        total += nll(x_all[i : i + batch].to(device), y_all[i : i + batch].to(device))
    count = n_windows * block
    nats = total / count
    chars = round(n_chars * count / len(data))  # characters covered by the scored tokens
    return LossReport(nats, math.exp(nats), total / math.log(2) / chars, count, chars)


@torch.no_grad()
def validation_loss(
    model: HippocampalTransformer, tokens: np.ndarray, n_chars: int, batch: int = 32
) -> LossReport:
    """Cross-entropy over all of ``tokens``, deterministic and comparable across models."""
    return _scored_loss(
        model, tokens, n_chars, batch, lambda x, y: float(model(x, y).loss) * x.numel()
    )


@torch.no_grad()
def memory_validation_loss(
    model: HippocampalTransformer, memory: EpisodicMemory, tokens: np.ndarray, n_chars: int, batch: int = 16
) -> LossReport:
    """Validation loss of the kNN-LM: the model's distribution interpolated with the episodic
    memory's at every position, over the same windows as ``validation_loss``."""

    def nll(x: torch.Tensor, y: torch.Tensor) -> float:
        out = model(x)
        logp = memory.interpolate(out.logits.flatten(0, 1), out.hidden.flatten(0, 1))
        return -float(logp.gather(1, y.reshape(-1, 1)).sum())

    return _scored_loss(model, tokens, n_chars, batch, nll)


@torch.no_grad()
def generation_speed(
    model: HippocampalTransformer,
    prompt: torch.Tensor,
    new_tokens: int,
    use_cache: bool = True,
    repeats: int = 1,
) -> float:
    """Greedy generation throughput in new tokens per second (best of ``repeats``)."""
    best = 0.0
    for _ in range(repeats):
        tic = time.perf_counter()
        for _token in generate(
            model, prompt, new_tokens, SamplingConfig("greedy"), use_cache=use_cache
        ):
            pass
        best = max(best, new_tokens * prompt.shape[0] / (time.perf_counter() - tic))
    return best


def distinct_n(tokens: list[int], n: int) -> float:
    """Distinct n-grams over all n-grams (Li et al., 2016); 1 means no n-gram repeats."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repetition_rate(tokens: list[int], n: int = 4) -> float:
    """Fraction of n-grams that already occurred earlier in the same text."""
    seen: Counter[tuple[int, ...]] = Counter()
    repeats = total = 0
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        repeats += seen[gram] > 0
        seen[gram] += 1
        total += 1
    return repeats / total if total else float("nan")


@torch.no_grad()
def next_token_entropy(model: HippocampalTransformer, sequence: torch.Tensor) -> float:
    """Mean entropy (nats) of the model's next-token distribution along ``sequence`` (1, T);
    a collapse towards 0 is the entropy collapse behind repetitive generation."""
    model.eval()
    logits = model(sequence[:, -model.config.block_size :]).logits.float()
    logp = torch.log_softmax(logits, -1)
    return float(-(logp.exp() * logp).sum(-1).mean())


def diversity(model: HippocampalTransformer, sequence: torch.Tensor, prompt_length: int) -> dict[str, float]:
    """distinct-1/2/3, 4-gram repetition rate and mean next-token entropy of a generation."""
    generated = sequence[0, prompt_length:].tolist()
    return {
        "distinct_1": distinct_n(generated, 1),
        "distinct_2": distinct_n(generated, 2),
        "distinct_3": distinct_n(generated, 3),
        "repetition_rate_4": repetition_rate(generated, 4),
        "next_token_entropy_nats": next_token_entropy(model, sequence),
    }


@torch.no_grad()
def place_cell_activity(model: HippocampalTransformer, ids: torch.Tensor) -> torch.Tensor:
    """Place-cell code (T, n_cells) of one sequence (1, T) at the place-cell layer."""
    if model.place is None:
        raise ValueError("model: the 'place' part is off; there are no place cells to map")
    model.eval()
    model.place.record = True
    try:
        model(ids[:, -model.config.block_size :])
        return model.place.last_code[0].cpu()
    finally:
        model.place.record = False


def place_cell_figure(activity: torch.Tensor, labels: list[str], max_cells: int = 48):
    """A heat map of the most active place cells (rows) over the tokens (``labels``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    act = activity.abs().numpy()
    order = np.argsort(-(act > 0).sum(0))[:max_cells]
    fig, ax = plt.subplots(figsize=(max(6, len(labels) * 0.14), 4))
    ax.imshow(act[:, order].T, aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(
        [s if s.strip() else s.replace(" ", "␣").replace("\n", "⏎") for s in labels], fontsize=6
    )
    ax.set_ylabel("place cell (most active first)")
    level = (act > 0).mean()
    ax.set_title(f"place-cell activity |code| (measured coding level {level:.3f})")
    return fig
