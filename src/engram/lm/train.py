"""Training: AdamW with decay on matrices only, warm-up + cosine schedule, clipping, gradient
accumulation, bf16 autocast on CUDA, optional gradient checkpointing and ``torch.compile``,
data-parallel training under ``torchrun`` (DDP), and atomic checkpoints that resume to the
same loss curve.

Every batch is drawn from a generator seeded by (seed, step, micro-step, rank), so a resumed
run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from engram.data.text import TextCorpus, tokenizer_from_dict
from engram.io import atomic_write_bytes, content_digest
from engram.lm.model import HippocampalTransformer, HippocampalTransformerConfig
from engram.params import Interval, check
from engram.runs import progress, seed_everything

CHECKPOINT = "checkpoint.pt"
# What ``train`` writes; "checksum" (SHA-256 of the rest) is absent from checkpoints written
# before it was added, which load unverified.
_CHECKPOINT_KEYS = (
    "model", "optimizer", "step", "model_config", "train_config", "tokenizer", "history",
    "torch_rng",
)


def default_data_path() -> str:
    from engram.data import data_root

    return str(data_root() / "tinyshakespeare" / "input.txt")


@dataclass
class TrainConfig:
    """Everything a training run depends on; ``model`` holds HippocampalTransformerConfig
    fields (not vocab_size)."""

    data: str = field(default_factory=default_data_path)
    tokenizer: str = "char"
    bpe_vocab_size: int = 512
    train_fraction: float = 0.9
    model: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 12
    grad_accum: int = 1
    max_steps: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 20
    checkpoint_interval: int = 250
    seed: int = 1337
    device: str = "cpu"
    dtype: str = "bfloat16"
    compile: bool = False

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "grad_accum",
            "max_steps",
            "eval_interval",
            "eval_batches",
            "checkpoint_interval",
        ):
            check(name, getattr(self, name), Interval(int, 1, None))
        if self.dtype not in ("bfloat16", "float32"):
            raise ValueError(f"dtype: expected 'bfloat16' or 'float32', got {self.dtype!r}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(f"warmup_steps: expected 0..max_steps, got {self.warmup_steps}")
        if "vocab_size" in self.model:
            raise ValueError("model: vocab_size comes from the tokenizer; do not set it")

    def model_config(self, vocab_size: int) -> HippocampalTransformerConfig:
        return HippocampalTransformerConfig.from_dict({**self.model, "vocab_size": vocab_size})


def build_optimizer(model: HippocampalTransformer, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on matrices only; the fused kernel on CPU and CUDA
    (one pass per parameter instead of a dozen elementwise ops, which weighs in a small model)."""
    device = next(model.parameters()).device
    return torch.optim.AdamW(
        model.optimizer_groups(cfg.weight_decay),
        lr=cfg.learning_rate,
        betas=(cfg.beta1, cfg.beta2),
        fused=device.type in ("cpu", "cuda"),
    )


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``learning_rate`` then cosine decay to ``min_lr`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress_ = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress_)) * (cfg.learning_rate - cfg.min_lr)


def get_batch(
    data: np.ndarray, block: int, batch: int, seed: int, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random windows of ``block`` tokens and their next-token targets."""
    if len(data) <= block + 1:
        raise ValueError(f"data: {len(data)} tokens are too few for block_size {block}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(len(data) - block - 1, (batch,), generator=generator).numpy()
    windows = np.stack([np.asarray(data[s : s + block + 1], dtype=np.int64) for s in starts])
    xy = torch.from_numpy(windows)
    return xy[:, :-1].to(device), xy[:, 1:].to(device)


def batch_seed(seed: int, step: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + micro * 104_729 + rank * 15_485_863) % 2**63


def autocast(device: torch.device, dtype: str):
    """bf16 autocast on CUDA; a no-op on CPU (full precision there)."""
    if device.type == "cuda" and dtype == "bfloat16":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def estimate_loss(
    model: torch.nn.Module,
    data: np.ndarray,
    block: int,
    batch: int,
    n_batches: int,
    seed: int = 0,
    dtype: str = "bfloat16",
) -> float:
    """Mean cross-entropy (nats per token) over ``n_batches`` fixed random batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = []
    for i in range(n_batches):
        x, y = get_batch(data, block, batch, seed=10_000_019 * (seed + 1) + i, device=device)
        with autocast(device, dtype):
            losses.append(float(model(x, y).loss))
    model.train(was_training)
    return float(np.mean(losses))


def compile_or_eager(model: torch.nn.Module, example: torch.Tensor) -> tuple[torch.nn.Module, str]:
    """``torch.compile`` the model and run it once; on any failure, fall back to eager mode.

    Returns the model to use and a note ('compiled', or the reason for the fallback) that
    the run records.
    """
    try:
        compiled = torch.compile(model)
        with torch.no_grad():
            compiled(example)
        return compiled, "compiled"
    except Exception as error:  # a compiler missing or failing must not stop training
        torch._dynamo.reset()
        return model, f"eager (torch.compile failed: {type(error).__name__}: {error})"


@dataclass(frozen=True)
class TrainResult:
    """What a training run reached: steps, final validation loss (nats/token), history."""

    steps: int
    final_val_loss: float
    history: list[dict[str, Any]]
    params: int
    tokens_per_second: float
    compile_note: str


def distributed_rank() -> tuple[int, int, int]:
    """(rank, local rank, world size) from the environment torchrun sets; (0, 0, 1) alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` with its checksum atomically (``torch.save`` format)."""
    buffer = io.BytesIO()
    torch.save({**state, "checksum": content_digest(state)}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``train`` (a run folder or the file itself), verifying its
    checksum; anything else, or a damaged file, raises ValueError naming the path."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: {path} does not exist")
    expected = "expected a checkpoint.pt written by `engram lm train` (a torch.save zip archive)"
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"PK\x03\x04":
        raise ValueError(f"checkpoint: {path} is not an Engram LM checkpoint; {expected}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a damaged archive fails in zip, pickle or tensor code alike
        raise ValueError(
            f"checkpoint: {path} is not an Engram LM checkpoint or is damaged "
            f"({type(error).__name__}: {error}); {expected}"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: {path} holds a {type(state).__name__}; {expected}")
    missing = [key for key in _CHECKPOINT_KEYS if key not in state]
    unknown = sorted(set(state) - {*_CHECKPOINT_KEYS, "checksum"}, key=str)
    if missing or unknown:
        found = (f"lacks {', '.join(missing)}" if missing else "") + (
            f"{' and ' if missing else ''}has unknown keys {unknown}" if unknown else "")
        raise ValueError(f"checkpoint: {path} {found}; {expected}")
    stored = state.pop("checksum", None)
    if stored is not None and stored != content_digest(state):
        raise ValueError(f"checkpoint: {path} fails its checksum, so it is damaged; {expected}")
    return state


def model_from_checkpoint(path: str | os.PathLike[str], device: str = "cpu"):
    """(model in eval mode, tokenizer, checkpoint dict) from a run folder or checkpoint file."""
    ckpt = load_checkpoint(path, device)
    tokenizer = tokenizer_from_dict(ckpt["tokenizer"])
    config = HippocampalTransformerConfig.from_dict(ckpt["model_config"])
    model = HippocampalTransformer(config, tokenizer.token_strings())
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), tokenizer, ckpt


def train(
    cfg: TrainConfig,
    folder: str | os.PathLike[str],
    resume: bool = False,
    stop_at: int | None = None,
) -> TrainResult:
    """Train into ``folder`` (corpus arrays, checkpoint, metrics.csv, results.json).

    With ``resume``, continue from ``folder/checkpoint.pt`` to ``cfg.max_steps``; with
    ``stop_at``, checkpoint and return after that many steps, as an interrupted run would
    (the schedule still runs to ``max_steps``). Under
    ``torchrun`` (WORLD_SIZE > 1) each process trains on its own batches and DDP averages
    the gradients; rank 0 writes.
    """
    folder = Path(folder)
    rank, local_rank, world = distributed_rank()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
    device = torch.device(
        f"cuda:{local_rank}" if cfg.device.startswith("cuda") and world > 1 else cfg.device
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(cfg.seed + rank)
    corpus_dir = folder / "corpus"
    if (corpus_dir / "corpus.json").is_file():
        corpus = TextCorpus.open(corpus_dir)
    else:
        if rank == 0:
            TextCorpus.prepare(
                cfg.data, corpus_dir, cfg.tokenizer, cfg.bpe_vocab_size, cfg.train_fraction
            )
        if world > 1:
            dist.barrier()
        corpus = TextCorpus.open(corpus_dir)
    mcfg = cfg.model_config(corpus.tokenizer.vocab_size)
    model = HippocampalTransformer(mcfg, corpus.tokenizer.token_strings()).to(device)
    optimizer = build_optimizer(model, cfg)
    start_step, history = 0, []
    if resume:
        ckpt = load_checkpoint(folder / CHECKPOINT, str(device))
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_step = int(ckpt["step"])
        # a finished run's history ends with its final evaluation (row ``max_steps``): drop
        # it and anything else from ``start_step`` on, which this run writes again
        history = [row for row in ckpt["history"] if row["step"] < start_step]
        torch.set_rng_state(ckpt["torch_rng"])
    block = mcfg.block_size
    runner: torch.nn.Module = model
    compile_note = "eager"
    if cfg.compile:
        example = get_batch(corpus.train, block, 1, seed=0, device=device)[0]
        runner, compile_note = compile_or_eager(model, example)
    if world > 1:
        runner = torch.nn.parallel.DistributedDataParallel(
            runner, device_ids=[local_rank] if device.type == "cuda" else None
        )

    def checkpoint_state(step: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "model_config": mcfg.to_dict(),
            "train_config": dataclasses.asdict(cfg),
            "tokenizer": corpus.tokenizer.to_dict(),
            "history": history,
            "torch_rng": torch.get_rng_state(),
        }

    tokens_per_step = cfg.batch_size * cfg.grad_accum * block * world
    train_time, train_tokens = 0.0, 0
    model.train()
    end = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
    steps = range(start_step, end)
    if rank == 0:
        steps = progress(steps, "lm train", total=cfg.max_steps, initial=start_step)
    for step in steps:
        row: dict[str, Any] = {"step": step}
        if step % cfg.eval_interval == 0:
            row["val_loss"] = estimate_loss(
                model, corpus.val, block, cfg.batch_size, cfg.eval_batches, dtype=cfg.dtype
            )
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        tic = time.perf_counter()
        total = 0.0
        for micro in range(cfg.grad_accum):
            x, y = get_batch(
                corpus.train, block, cfg.batch_size, batch_seed(cfg.seed, step, micro, rank), device
            )
            sync = world == 1 or micro == cfg.grad_accum - 1
            with (
                contextlib.nullcontext() if sync else runner.no_sync(),
                autocast(device, cfg.dtype),
            ):
                loss = runner(x, y).loss / cfg.grad_accum
            loss.backward()
            total += float(loss.detach())
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - tic
        train_time += elapsed
        train_tokens += tokens_per_step
        row.update(
            train_loss=total,
            lr=lr,
            grad_norm=float(norm),
            tokens_per_second=tokens_per_step / elapsed,
        )
        if model.place is not None:
            row["place_coding_level"] = float(model.place.coding_level.detach())
        history.append(row)
        if rank == 0 and (step + 1) % cfg.checkpoint_interval == 0:
            save_checkpoint(folder / CHECKPOINT, checkpoint_state(step + 1))
    if end < cfg.max_steps:
        if rank == 0:
            save_checkpoint(folder / CHECKPOINT, checkpoint_state(end))
        if world > 1:
            dist.destroy_process_group()
        return TrainResult(
            end,
            float("nan"),
            history,
            model.num_params(),
            train_tokens / train_time if train_time else float("nan"),
            compile_note,
        )
    final = estimate_loss(
        model, corpus.val, block, cfg.batch_size, cfg.eval_batches, dtype=cfg.dtype
    )
    history.append({"step": cfg.max_steps, "val_loss": final})
    result = TrainResult(
        steps=cfg.max_steps,
        final_val_loss=final,
        history=history,
        params=model.num_params(),
        tokens_per_second=train_tokens / train_time if train_time else float("nan"),
        compile_note=compile_note,
    )
    if rank == 0:
        save_checkpoint(folder / CHECKPOINT, checkpoint_state(cfg.max_steps))
        _write_metrics(folder, result, corpus)
    if world > 1:
        dist.destroy_process_group()
    return result


def _write_metrics(folder: Path, result: TrainResult, corpus: TextCorpus) -> None:
    from engram.runs import RunFolder

    n_val_tokens = len(corpus.val)
    run = RunFolder(folder)
    run.write_csv("metrics.csv", result.history)
    summary = {
        "steps": result.steps,
        "params": result.params,
        "val_loss_nats_per_token": result.final_val_loss,
        "val_perplexity_per_token": math.exp(result.final_val_loss),
        # bits per character: nats/token → bits, times tokens per character of the val split
        "val_bits_per_char": result.final_val_loss
        / math.log(2)
        * n_val_tokens
        / corpus.n_val_chars,
        "train_tokens_per_second": result.tokens_per_second,
        "compile": result.compile_note,
    }
    run.write_json("results.json", summary)


def _ddp_gradient_worker(rank: int, world: int, config: dict, x, y, seed: int, out: str) -> None:
    torch.set_num_threads(1)
    # a file rendezvous beside the output (no TCP port to race for) and a bounded wait, so a
    # peer that never arrives is an error, not a hang
    dist.init_process_group(
        "gloo",
        init_method=f"file://{out}.rendezvous",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    torch.manual_seed(seed)
    model = torch.nn.parallel.DistributedDataParallel(
        HippocampalTransformer(HippocampalTransformerConfig.from_dict(config))
    )
    model(x.chunk(world)[rank], y.chunk(world)[rank]).loss.backward()
    if rank == 0:
        grads = {n: p.grad.clone() for n, p in model.module.named_parameters()}
        buffer = io.BytesIO()
        torch.save(grads, buffer)
        atomic_write_bytes(out, buffer.getvalue())
    # both ranks finish all traffic before either tears gloo down: a peer closing its pairs
    # while the other still holds them can abort the process (seen on CI)
    dist.barrier()
    dist.destroy_process_group()


def data_parallel_gradients(
    config: HippocampalTransformerConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    world: int = 2,
    seed: int = 0,
    timeout_s: float = 240.0,
) -> dict[str, torch.Tensor]:
    """Gradients of one batch computed by ``world`` gloo processes under DDP, each on an equal
    shard: the check that data-parallel training averages to the single-process gradient.

    The workers are spawned (forking a process whose thread pools are running can deadlock),
    talk over the loopback interface only, and are killed after ``timeout_s`` seconds.
    """
    import tempfile

    import torch.multiprocessing as mp

    if x.shape[0] % world:
        raise ValueError(f"x: batch {x.shape[0]} must split evenly over {world} processes")
    # gloo picks its interface from the host name, which a sandbox may not route: use loopback
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "grads.pt")
        context = mp.start_processes(
            _ddp_gradient_worker,
            start_method="spawn",
            args=(world, config.to_dict(), x, y, seed, out),
            nprocs=world,
            join=False,
        )
        deadline = time.monotonic() + timeout_s
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                raise TimeoutError(f"DDP gradient workers did not finish within {timeout_s:.0f} s")
        return torch.load(out, weights_only=True)
