"""The claims and report writer: claims table (Markdown), results JSON, tables CSV and report.md.

Everything a report shows is in ``results.json``, so ``engram report RUN_DIR`` rebuilds the
Markdown from a finished run without running anything again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from engram.io import atomic_write_text
from engram.runs.folder import RunFolder, markdown_table
from engram.runs.result import Claim, Result

CLAIM_COLUMNS = ("claim", "source", "measured", "theory / target", "verdict", "conditions")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def claims_markdown(claims: Sequence[Claim], commands: Sequence[str] | None = None) -> str:
    """The claims table in Markdown; with ``commands`` (one per claim) a column reproducing each."""
    if commands is not None and len(commands) != len(claims):
        raise ValueError(f"commands: expected one per claim ({len(claims)}), got {len(commands)}")
    columns = [*CLAIM_COLUMNS, *(["reproduce"] if commands is not None else [])]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for i, c in enumerate(claims):
        cells = [c.statement, c.source, c.measured, c.target, c.verdict, c.conditions]
        if commands is not None:
            cells.append(f"`{commands[i]}`")
        lines.append("| " + " | ".join(_cell(s) for s in cells) + " |")
    return "\n".join(lines) + "\n"


def result_record(result: Result, experiment: str, seconds: float | None = None) -> dict[str, Any]:
    """What results.json holds: the whole result, named by experiment."""
    return {
        "experiment": experiment,
        "title": result.title,
        "intro": result.intro,
        "claims": list(result.claims),
        "tables": {name: list(rows) for name, rows in result.tables.items()},
        "figures": list(result.figures),
        "sections": list(result.sections),
        "seconds": seconds,
    }


def read_result(folder: RunFolder) -> tuple[str, Result]:
    """(experiment name, Result) of a finished run folder, from its results.json."""
    path = folder.file("results.json")
    if not path.is_file():
        from engram.errors import ConfigError

        raise ConfigError(f"run folder: {folder.path} has no results.json (the run did not finish)")
    data = json.loads(path.read_text(encoding="utf-8"))
    claims = tuple(Claim(**c) for c in data["claims"])
    result = Result(claims, data["tables"], tuple(data["figures"]), data.get("title", ""),
                    data.get("intro", ""), tuple(data.get("sections", ())))
    return data["experiment"], result


def render_report(result: Result, experiment: str, config: Mapping[str, Any] | None = None,
                  command: str | None = None) -> str:
    """report.md: title, intro, the claims, figures, the tables' files, further sections."""
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
    """Write results.json, one CSV per table, claims.md and report.md into the run folder."""
    folder.write_json("results.json", result_record(result, experiment, seconds))
    for name, rows in result.tables.items():
        folder.write_csv(f"{name}.csv", list(rows))
    atomic_write_text(folder.file("claims.md"), claims_markdown(result.claims))
    write_report(folder, result, experiment, command)


def write_report(folder: RunFolder, result: Result, experiment: str,
                 command: str | None = None) -> None:
    config_path = folder.file("config.json")
    config = json.loads(config_path.read_text())["config"] if config_path.is_file() else None
    folder.write_report(render_report(result, experiment, config, command))
