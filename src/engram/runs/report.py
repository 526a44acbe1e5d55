"""The claims and report writer: claims table (Markdown), results JSON, tables CSV and report.md.

Everything a report shows is in ``results.json``, so ``engram report RUN_DIR`` rebuilds the
Markdown from a finished run without running anything again.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engram.errors import ConfigError
from engram.io import atomic_write_bytes, atomic_write_text
from engram.runs.folder import RunFolder, markdown_table
from engram.runs.result import Claim, Result

CLAIM_COLUMNS = ("claim", "source", "measured", "theory / target", "verdict", "conditions")
FRONT_COLUMNS = ("claim", "measured", "theory / target", "verdict", "reproduce")
BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"  # the generated part of a front page


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def claims_markdown(claims: Sequence[Claim], commands: Sequence[str] | None = None) -> str:
    """A claims table in Markdown, every field of every claim (``details`` where any claim has
    them); with ``commands`` (one per claim) a last column with the command reproducing each."""
    if commands is not None and len(commands) != len(claims):
        raise ValueError(f"commands: expected one per claim ({len(claims)}), got {len(commands)}")
    detailed = any(c.details for c in claims)
    columns = [*CLAIM_COLUMNS, *(["details"] if detailed else []),
               *(["reproduce"] if commands is not None else [])]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for i, c in enumerate(claims):
        cells = [c.statement, c.source, c.measured, c.target, c.verdict, c.conditions]
        cells += [c.details] if detailed else []
        cells += [f"`{commands[i]}`"] if commands is not None else []
        lines.append("| " + " | ".join(_cell(s) for s in cells) + " |")
    return "\n".join(lines) + "\n"


def front_page_table(claims: Sequence[Claim], commands: Sequence[str]) -> str:
    """The one-screen table of a docs front page: claim, headline, target, verdict, command."""
    if len(commands) != len(claims):
        raise ValueError(f"commands: expected one per claim ({len(claims)}), got {len(commands)}")
    lines = ["| " + " | ".join(FRONT_COLUMNS) + " |", "|" + "---|" * len(FRONT_COLUMNS)]
    for c, command in zip(claims, commands, strict=True):
        cells = (c.statement, c.measured, c.target, c.verdict, f"`{command}`")
        lines.append("| " + " | ".join(_cell(s) for s in cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class FinishedRun:
    """A finished run folder read back: which experiment, its result, how it was started."""

    folder: RunFolder
    experiment: str
    result: Result
    command: str | None
    seconds: float | None


def result_record(result: Result, experiment: str, seconds: float | None = None,
                  command: str | None = None) -> dict[str, Any]:
    """What results.json holds: the whole result, named by experiment, and its command."""
    return {
        "experiment": experiment,
        "command": command,
        "seconds": seconds,
        "title": result.title,
        "intro": result.intro,
        "claims": list(result.claims),
        "tables": {name: list(rows) for name, rows in result.tables.items()},
        "figures": list(result.figures),
        "sections": list(result.sections),
    }


def read_result(folder: RunFolder) -> FinishedRun:
    """A finished run folder's result, from its results.json."""
    path = folder.file("results.json")
    if not path.is_file():
        raise ConfigError(f"run folder: {folder.path} has no results.json (the run did not finish)")
    data = json.loads(path.read_text(encoding="utf-8"))
    claims = tuple(Claim(**c) for c in data["claims"])
    result = Result(claims, data["tables"], tuple(data["figures"]), data["title"], data["intro"],
                    tuple(data["sections"]))
    return FinishedRun(folder, data["experiment"], result, data["command"], data["seconds"])


def render_report(result: Result, experiment: str, config: Mapping[str, Any] | None = None,
                  command: str | None = None) -> str:
    """report.md: title, intro, the command, the claims, figures, further sections, tables."""
    parts = [f"# {result.title or experiment}\n"]
    if result.intro:
        parts.append(result.intro.strip() + "\n")
    if command:
        parts.append(f"Reproduce: `{command}`\n")
    if result.claims:
        parts += ["## Claims\n", claims_markdown(result.claims)]
    if result.figures:
        parts += ["## Figures\n", "\n".join(f"![{f}]({f})" for f in result.figures) + "\n"]
    parts.extend(s.strip() + "\n" for s in result.sections)
    if result.tables:
        listing = [{"table": f"{name}.csv", "rows": len(rows)} for name, rows in result.tables.items()]
        parts += ["## Tables\n", markdown_table(listing)]
    if config is not None:
        parts += ["## Config\n", "```json\n" + json.dumps(config, indent=2) + "\n```\n"]
    return "\n".join(parts)


def write_result(folder: RunFolder, result: Result, experiment: str,
                 seconds: float | None = None, command: str | None = None) -> None:
    """Write results.json, claims.csv and claims.md, one CSV per table and report.md."""
    folder.write_json("results.json", result_record(result, experiment, seconds, command))
    folder.write_csv("claims.csv", [dataclasses.asdict(c) for c in result.claims])
    for name, rows in result.tables.items():
        folder.write_csv(f"{name}.csv", list(rows))
    atomic_write_text(folder.file("claims.md"), claims_markdown(result.claims))
    write_report(folder, result, experiment, command)


def write_report(folder: RunFolder, result: Result, experiment: str,
                 command: str | None = None) -> None:
    """(Re)write report.md of a run folder from its result and its config.json."""
    config_path = folder.file("config.json")
    config = json.loads(config_path.read_text())["config"] if config_path.is_file() else None
    folder.write_report(render_report(result, experiment, config, command))


def _compact_png(source: Path, target: Path) -> None:
    """Copy a plot as a 64-colour palette PNG: a docs page's plots stay a few hundred KB."""
    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(source) as image:
        image.convert("RGB").quantize(colors=64).save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(target, buffer.getvalue())


def write_front_page(page: str | os.PathLike[str], runs: Sequence[FinishedRun]) -> Path:
    """Put the runs' claims table between the page's claims markers and copy each run's
    report (as ``<experiment>.md``) and figures beside the page; the rest of the page —
    how it works, written by hand — is kept as it is."""
    page = Path(page)
    if not page.is_file():
        raise ConfigError(f"--front-page: {page} does not exist")
    text = page.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ConfigError(f"--front-page: {page} needs one {BEGIN} line before one {END} line")
    claims, commands = [], []
    for run in runs:
        command = run.command or f"engram run {run.experiment}"
        claims += run.result.claims
        commands += [command] * len(run.result.claims)
        name = run.experiment.rsplit(".", 1)[-1]
        for figure in run.result.figures:
            _compact_png(run.folder.file(figure), page.parent / figure)
        atomic_write_text(page.parent / f"{name}.md", run.folder.file("report.md").read_text())
    links = ", ".join(f"[{r.experiment}]({r.experiment.rsplit('.', 1)[-1]}.md)" for r in runs)
    block = (f"{BEGIN}\n{front_page_table(claims, commands)}\nFull reports: {links}. "
             f"Generated by `engram report --front-page {page.name} RUN_DIR…`.\n{END}")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return atomic_write_text(page, head + block + tail)
