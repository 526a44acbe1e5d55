"""``engram lm train|sample|eval|sleep``: train a HippocampalTransformer (or the plain GPT), stream
samples from a run, evaluate it, and consolidate a folder of conversation logs into it overnight.
The ablation against the baseline is an experiment: ``engram run lm.ablation`` (configs under
``configs/lm/``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from engram.lm.model import PARTS, HippocampalTransformerConfig
from engram.runs import RunFolder


def _parts(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip()) if text else ()


def _set_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model into a run folder")
    p.add_argument("--data", default=None, help="text file (default: shared tiny shakespeare)")
    p.add_argument("--tokenizer", choices=("char", "bpe"), default="char")
    p.add_argument("--bpe-vocab", type=int, default=512)
    p.add_argument("--parts", default="", help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--position-codes", choices=("join", "replace"), default="join")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--model-json", default=None, help="extra HippocampalTransformerConfig fields as JSON")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--eval-interval", type=int, default=250)
    p.add_argument("--eval-batches", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--compile", action="store_true", help="torch.compile, eager on failure")
    p.add_argument("--grad-checkpoint", action="store_true", help="gradient checkpointing")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", default="runs", help="root folder for the run folder")
    p.add_argument("--resume", default=None, help="run folder to resume to --steps")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    _set_threads(args)
    import torch.distributed as dist

    from engram.lm.train import TrainConfig, distributed_rank, train

    model = {
        "n_layer": args.n_layer,
        "n_head": args.n_head,
        "n_embd": args.n_embd,
        "block_size": args.block_size,
        "dropout": args.dropout,
        "parts": _parts(args.parts),
        "position_codes": args.position_codes,
        "gradient_checkpointing": args.grad_checkpoint,
    }
    if args.model_json:
        model.update(json.loads(args.model_json))
    HippocampalTransformerConfig.from_dict({**model, "vocab_size": 1})  # fail on a bad config before any work
    cfg = TrainConfig(
        model=model,
        tokenizer=args.tokenizer,
        bpe_vocab_size=args.bpe_vocab,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_steps=args.steps,
        learning_rate=args.lr,
        min_lr=args.min_lr,
        warmup_steps=min(args.warmup, args.steps),
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        eval_interval=args.eval_interval,
        eval_batches=args.eval_batches,
        checkpoint_interval=args.eval_interval,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        compile=args.compile,
        **({"data": args.data} if args.data else {}),
    )
    if not Path(cfg.data).is_file():
        raise FileNotFoundError(f"data: text file {cfg.data} does not exist")
    rank, _, world = distributed_rank()
    if world > 1 and not dist.is_initialized():  # under torchrun: one run folder for all ranks
        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
    if args.resume:
        folder = RunFolder(args.resume).path
    else:
        name = "lm-" + ("-".join(cfg.model["parts"]) or "baseline")
        shared = [str(RunFolder.create(args.out, name, cfg, args.seed).path) if rank == 0 else ""]
        if world > 1:
            dist.broadcast_object_list(shared, src=0)
        folder = Path(shared[0])
    result = train(cfg, folder, resume=bool(args.resume))
    if rank:
        return 0
    print(f"run folder: {folder}")
    print(
        f"validation loss {result.final_val_loss:.4f} nats/token "
        f"({len(result.history)} rows in metrics.csv), {result.params:,} parameters, "
        f"{result.tokens_per_second:,.0f} training tokens/s, {result.compile_note}"
    )
    return 0


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="stream a continuation from a trained run")
    p.add_argument("run", help="run folder (or checkpoint file)")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--tokens", type=int, default=300)
    p.add_argument(
        "--strategy", choices=("greedy", "sample", "contrastive", "beam"), default="sample"
    )
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--typical-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--penalty-alpha", type=float, default=0.6)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument(
        "--memory-tokens",
        type=int,
        default=0,
        help="store this many training tokens in the episodic memory (kNN-LM)",
    )
    p.add_argument("--memory-lambda", type=float, default=0.25)
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_sample)


def _sample(args: argparse.Namespace) -> int:
    _set_threads(args)
    import torch

    from engram.lm.memory import EpisodicMemory
    from engram.lm.sample import SamplingConfig, complete, generate
    from engram.lm.train import model_from_checkpoint

    model, tok, _ = model_from_checkpoint(args.run, args.device)
    prompt = torch.tensor([tok.encode(args.prompt)], device=args.device)
    cfg = SamplingConfig(
        strategy=args.strategy,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        typical_p=args.typical_p,
        repetition_penalty=args.repetition_penalty,
        penalty_alpha=args.penalty_alpha,
        beams=args.beams,
        seed=args.seed,
    )
    memory = None
    if args.memory_tokens:
        from engram.data.text import TextCorpus

        corpus = TextCorpus.open(Path(args.run) / "corpus")
        memory = EpisodicMemory(model.config.n_embd, interpolation=args.memory_lambda)
        memory.store_text(
            model, torch.from_numpy(corpus.train[: args.memory_tokens].astype("int64"))
        )
    sys.stdout.write(args.prompt)
    if args.strategy in ("greedy", "sample"):
        for token in generate(
            model, prompt, args.tokens, cfg, use_cache=not args.no_cache, memory=memory
        ):
            sys.stdout.write(tok.decode([int(token[0])]))
            sys.stdout.flush()
    else:
        seq = complete(model, prompt, args.tokens, cfg)
        sys.stdout.write(tok.decode(seq[0, prompt.shape[1] :].tolist()))
    sys.stdout.write("\n")
    if memory is not None and memory.log:
        queries = sum(len(found.indices) for found in memory.log)
        used = sum(found.indices.size for found in memory.log)
        print(
            f"[episodic memory: {len(memory)} entries ({memory.backend} search), "
            f"{queries} retrievals, {used} neighbours used]",
            file=sys.stderr,
        )
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="validation loss, speed, diversity, place-cell map")
    p.add_argument("run", help="run folder")
    p.add_argument("--tokens", type=int, default=200, help="tokens generated for speed/diversity")
    p.add_argument("--prompt", default="ROMEO:\n")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--memory-tokens",
        type=int,
        default=0,
        help="also score the kNN-LM with this many training tokens in memory",
    )
    p.add_argument("--memory-lambda", type=float, default=0.25)
    p.add_argument("--memory-k", type=int, default=8)
    p.add_argument(
        "--val-tokens",
        type=int,
        default=0,
        help="score only the first N validation tokens (0: all)",
    )
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    _set_threads(args)
    import torch

    from engram.data.text import TextCorpus
    from engram.lm.evaluate import (
        diversity,
        generation_speed,
        place_cell_activity,
        place_cell_figure,
        validation_loss,
    )
    from engram.lm.sample import SamplingConfig, complete
    from engram.lm.train import model_from_checkpoint

    run = RunFolder(args.run)
    model, tok, _ = model_from_checkpoint(run.path, args.device)
    corpus = TextCorpus.open(run.file("corpus"))
    val = corpus.val[: args.val_tokens] if args.val_tokens else corpus.val
    val_chars = round(corpus.n_val_chars * len(val) / len(corpus.val))
    loss = validation_loss(model, val, val_chars)
    prompt = torch.tensor([tok.encode(args.prompt)], device=args.device)
    seq = complete(model, prompt, args.tokens, SamplingConfig("sample", 0.8, top_k=40))
    results = {
        "val_loss_nats_per_token": loss.nats_per_token,
        "val_perplexity_per_token": loss.perplexity_per_token,
        "val_bits_per_char": loss.bits_per_char,
        "val_tokens_scored": loss.tokens,
        "generation_tokens_per_s_cached": generation_speed(model, prompt, args.tokens),
        "generation_tokens_per_s_uncached": generation_speed(
            model, prompt, args.tokens, use_cache=False
        ),
        "diversity_sample_t0.8_k40": diversity(model, seq, prompt.shape[1]),
        "params": model.num_params(),
        "parts": list(model.config.parts),
    }
    if args.memory_tokens:
        from engram.lm.evaluate import memory_validation_loss
        from engram.lm.memory import EpisodicMemory

        memory = EpisodicMemory(
            model.config.n_embd, k=args.memory_k, interpolation=args.memory_lambda, keep_log=False
        )
        train_ids = corpus.train[: args.memory_tokens].astype("int64")
        memory.store_text(model, torch.from_numpy(train_ids))
        knn = memory_validation_loss(model, memory, val, val_chars)
        results["knn_lm"] = {
            "memory_entries": len(memory),
            "search": memory.backend,
            "k": args.memory_k,
            "lambda": args.memory_lambda,
            "val_loss_nats_per_token": knn.nats_per_token,
            "val_bits_per_char": knn.bits_per_char,
        }
    if model.place is not None:
        text_ids = torch.from_numpy(corpus.val[: min(96, model.config.block_size)].astype("int64"))[
            None
        ]
        activity = place_cell_activity(model, text_ids)
        labels = [tok.decode([int(i)]) for i in text_ids[0]]
        run.save_figure("place_cells.png", place_cell_figure(activity, labels))
        results["place_coding_level"] = float(model.place.coding_level.detach())
    run.write_json("eval.json", results)
    for key, value in results.items():
        shown = f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else value
        print(f"{key}: {shown}")
    return 0


def _add_sleep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sleep", help="consolidate conversation logs into a trained run overnight")
    p.add_argument("--run", required=True, help="run folder (from `engram lm train` or a sleep)")
    p.add_argument("--logs", required=True, help="folder of engram.conversations/1 .jsonl logs")
    p.add_argument("--out", default=None, help="new run folder (default: RUN-sleep-dayNN beside RUN)")
    p.add_argument("--steps", type=int, default=100, help="the night budget in optimizer steps")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--mode", choices=("frozen", "decision", "all"), default="frozen",
                   help="decision tokens with the context frozen, with it live, or every token")
    p.add_argument("--optimizer", choices=("adamw", "apollo"), default="adamw")
    p.add_argument("--ewc", type=float, default=0.0, help="online EWC strength (0: off)")
    p.add_argument("--old", type=float, default=0.25, help="batch share of earlier days")
    p.add_argument("--base", type=float, default=0.25, help="batch share of the base corpus")
    p.add_argument("--dream", type=float, default=0.25, help="batch share of dreams")
    p.add_argument("--uniform", action="store_true", help="replay uniformly, not by priority")
    p.add_argument("--decision-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_sleep)


def _sleep(args: argparse.Namespace) -> int:
    _set_threads(args)
    from engram.lm.sleep.night import NightConfig
    from engram.lm.sleep.run import sleep_on_logs

    config = NightConfig(steps=args.steps, batch=args.batch, lr=args.lr, mode=args.mode,
                         optimizer=args.optimizer, ewc=args.ewc, old=args.old, base=args.base,
                         dream=args.dream, seed=args.seed)
    result = sleep_on_logs(args.run, args.logs, args.out, config, args.decision_tokens,
                           priorities=not args.uniform)
    p = result["probe"]
    print(f"run folder: {result['out']}")
    print(f"slept on day {result['day']}: {result['night']['steps']} steps, "
          f"{result['tokens_forward']:,} tokens forward, {result['seconds']:.1f} s; closed-book "
          f"probe {p['before']:.3f} -> {p['after']:.3f} ({p['questions']} questions)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    lm = subparsers.add_parser("lm", help="HippocampalTransformer language model")
    lm.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (1 is fastest on a shared machine)",
    )
    sub = lm.add_subparsers(dest="lm_command", metavar="ACTION")
    sub.required = True
    _add_train(sub)
    _add_sample(sub)
    _add_eval(sub)
    _add_sleep(sub)
