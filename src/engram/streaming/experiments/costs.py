"""What each condition costs: tokens/s of both forms, inference state in bytes, and perplexity
of a briefly trained character LM of the same architecture (tinyshakespeare)."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from engram.data.location import data_root
from engram.data.recall_tasks import make_batch
from engram.streaming import StreamingTransformer
from engram.streaming.experiments.design import Config
from engram.streaming.experiments.training import with_projection_writes


def throughput(cfg: Config, condition: str, repeats: int = 3) -> dict[str, float]:
    """Tokens/s of the parallel and streaming forms and the state bytes after one sequence."""
    task = cfg.task()
    torch.manual_seed(0)
    model = StreamingTransformer(
        cfg.model(
            "window_sinks" if condition == "projection_frozen" else condition, task.vocab_size
        )
    ).eval()
    if condition == "projection_frozen":
        model = with_projection_writes(model, 1e-2)
    batch = make_batch(task, cfg.cost_batch, torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(batch.tokens)
        start = time.perf_counter()
        for _ in range(repeats):
            model(batch.tokens)
        parallel = repeats * batch.tokens.numel() / (time.perf_counter() - start)
        caches = model.init_caches(min(4, cfg.cost_batch))
        start = time.perf_counter()
        model.stream(batch.tokens[: min(4, cfg.cost_batch)], caches=caches)
        streaming = batch.tokens[: min(4, cfg.cost_batch)].numel() / (time.perf_counter() - start)
    return {
        "condition": condition,
        "parallel_tokens_per_s": parallel,
        "stream_tokens_per_s": streaming,
        "state_bytes": model.state_bytes(caches),
        "sequence_length": task.length,
    }


def _shakespeare() -> tuple[torch.Tensor, torch.Tensor, int]:
    path = data_root() / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        raise FileNotFoundError(f"tinyshakespeare: expected {path} (set ENGRAM_DATA)")
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(data))
    return data[:split], data[split:], len(chars)


def perplexity(cfg: Config, condition: str) -> dict[str, Any]:
    """Train a character LM of the condition's architecture briefly; validation perplexity."""
    torch.set_num_threads(1)
    train, valid, vocab = _shakespeare()
    torch.manual_seed(cfg.seed)
    model = StreamingTransformer(cfg.model(condition, vocab))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(cfg.seed)
    L = cfg.lm_length
    for _ in range(cfg.lm_steps):
        starts = torch.randint(len(train) - L - 1, (16,), generator=gen)
        x = torch.stack([train[s : s + L + 1] for s in starts.tolist()])
        loss = model.cross_entropy(x[:, :-1], x[:, 1:])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    model.eval()
    n = (len(valid) - 1) // L
    chunks = valid[: n * L + 1]
    xs = torch.stack([chunks[i * L : i * L + L + 1] for i in range(min(n, 256))])
    with torch.no_grad():
        loss = model.cross_entropy(xs[:, :-1], xs[:, 1:])
        late = torch.nn.functional.cross_entropy(
            model(xs[:, :-1])[:, cfg.window + cfg.n_sink :].flatten(0, 1),
            xs[:, 1 + cfg.window + cfg.n_sink :].flatten(),
        )
    return {
        "condition": condition,
        "val_perplexity": math.exp(float(loss)),
        "val_perplexity_after_first_eviction": math.exp(float(late)),
        "lm_steps": cfg.lm_steps,
        "lm_length": L,
    }

