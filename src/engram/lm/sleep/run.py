"""One night on a trained run: ``engram lm sleep --run RUN --logs DIR`` as a function.

The run's checkpoint (from ``engram lm train`` or an earlier sleep) and a folder of conversation
logs become a new run folder: ``checkpoint.pt`` (the same format, so ``engram lm sample|eval``
read it), the run's ``corpus`` (so the next night can sleep on it), ``night.pt`` (the resumable
night: running the same command again resumes it) and ``report.json`` / ``report.md`` (what was
replayed and why, the closed-book probe before and after). The latest day in the logs is the
one consolidated; earlier days are replayed as old knowledge.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import torch

from engram.data.facts import Conversation, probe_questions, read_logs, standing_facts
from engram.data.text import TextCorpus
from engram.io import atomic_write_text, to_json
from engram.lm.sleep.episodes import Hippocampus, Layout
from engram.lm.sleep.night import NightConfig, Sleep, load_night
from engram.lm.sleep.probe import probe
from engram.lm.sleep.signals import Scorer
from engram.replay.priority import PrioritySignals


def check_tokenizer(expected: dict[str, Any], got: dict[str, Any], what: str) -> None:
    """Refuse to mix a checkpoint with data or a night tokenized by another tokenizer."""
    if expected != got:
        kinds = f"{expected.get('kind')} ({len(expected.get('chars', '')) or '?'} symbols)"
        other = f"{got.get('kind')} ({len(got.get('chars', '')) or '?'} symbols)"
        raise ValueError(f"checkpoint: {what} was made with another tokenizer; expected the "
                         f"checkpoint's {kinds}, got {other}")


def _encodable(conversations: list[Conversation], tokenizer) -> None:
    for c in conversations:
        try:
            tokenizer.encode(c.text())
        except ValueError as error:
            raise ValueError(f"logs: conversation {c.id} cannot be read by the checkpoint's "
                             f"tokenizer ({error})") from error


def sleep_on_logs(
    run: str | Path, logs: str | Path, out: str | Path | None = None,
    config: NightConfig | None = None, decision_tokens: int = 16, priorities: bool = True,
) -> dict[str, Any]:
    """Consolidate the latest day of ``logs`` into the model of ``run``; returns the report."""
    from engram.lm.train import CHECKPOINT, model_from_checkpoint, save_checkpoint

    config = config if config is not None else NightConfig()
    conversations = read_logs(logs)
    model, tokenizer, ckpt = model_from_checkpoint(run)
    run = Path(run)
    folder = run if run.is_dir() else run.parent
    base = None
    if (folder / "corpus" / "corpus.json").is_file():
        corpus = TextCorpus.open(folder / "corpus")
        check_tokenizer(ckpt["tokenizer"], corpus.tokenizer.to_dict(), f"the corpus of {folder}")
        base = corpus.train
    _encodable(conversations, tokenizer)
    day = max(c.day for c in conversations)
    out = Path(out) if out is not None else folder.parent / f"{folder.name}-sleep-day{day:02d}"
    night_file = out / "night.pt"
    if night_file.is_file():
        check_tokenizer(ckpt["tokenizer"], load_night(night_file)["tokenizer"], str(night_file))
    layout = Layout(model.config.block_size, decision_tokens)
    hippocampus = Hippocampus(tokenizer, layout, capacity=max(16, 2 * len(conversations) + 16),
                              seed=config.seed)
    for d in sorted({c.day for c in conversations}):
        hippocampus.add([c for c in conversations if c.day == d], model=model)
    facts = list(standing_facts(conversations).values())
    questions = probe_questions(facts, "test", config.seed)
    before = probe(model, tokenizer, questions, width=layout.context)
    scorer = Scorer(PrioritySignals() if priorities else None, config.seed)
    sleep = Sleep(model, hippocampus, dataclasses.replace(config, prioritized=priorities),
                  base=base, scorer=scorer)
    report = sleep.night(day, checkpoint=night_file)
    after = probe(model, tokenizer, questions, width=layout.context)
    history = [*ckpt["history"], {"sleep_day": day, "steps": config.steps,
                                  "mean_loss": report.mean_loss}]
    save_checkpoint(out / CHECKPOINT, {
        "model": model.state_dict(), "optimizer": {}, "step": int(ckpt["step"]),
        "model_config": ckpt["model_config"], "train_config": ckpt["train_config"],
        "tokenizer": ckpt["tokenizer"], "history": history, "torch_rng": torch.get_rng_state(),
    })
    if base is not None and not (out / "corpus").exists():
        shutil.copytree(folder / "corpus", out / "corpus")
    result = {
        "run": str(run), "logs": str(logs), "out": str(out), "day": day,
        "conversations": len(conversations), "episodes": len(hippocampus),
        "night": dataclasses.asdict(config) | {"prioritized": priorities},
        "drawn": report.drawn, "tokens_forward": report.tokens_forward,
        "tokens_gradient": report.tokens_gradient, "seconds": report.seconds,
        "mean_loss": report.mean_loss, "replayed": report.replayed,
        "probe": {"questions": len(questions), "forms": "test (held out)",
                  "before": before.accuracy, "after": after.accuracy,
                  "chance": float(sum(1 / len(q.candidates) for q in questions) / max(1, len(questions)))},
    }
    atomic_write_text(out / "report.json", to_json(result))
    atomic_write_text(out / "report.md", report_markdown(result))
    return result


def report_markdown(result: dict[str, Any]) -> str:
    """The night's report as a page: the probe before and after, then what was replayed and why."""
    p = result["probe"]
    lines = [
        f"# Sleep on day {result['day']}", "",
        f"Run `{result['run']}`, logs `{result['logs']}`: {result['conversations']} conversations, "
        f"{result['episodes']} episodes.", "",
        f"Closed-book probe ({p['questions']} questions, held-out forms, chance {p['chance']:.2f}): "
        f"**{p['before']:.3f} before → {p['after']:.3f} after**.", "",
        f"Budget: {result['night']['steps']} steps × {result['night']['batch']}; drawn "
        f"{result['drawn']}; {result['tokens_forward']:,} tokens forward, "
        f"{result['tokens_gradient']:,} with gradients, {result['seconds']:.1f} s.", "",
        "## What was replayed and why", "",
        "| episode | day | times | fact | priority | reward | novelty | salience | unfinished |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["replayed"]:
        lines.append(f"| {r['conversation']} | {r['day']} | {r['times']} | {r['fact']} | "
                     f"{r['priority']:.2f} | {r['reward']:.1f} | {r['novelty']:.2f} | "
                     f"{r['salience']:.2f} | {r['unfinished']} |")
    return "\n".join(lines) + "\n"
