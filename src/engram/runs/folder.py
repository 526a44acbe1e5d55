"""Run folders: one directory per experiment run holding its config, seed, environment,
results (JSON/CSV), plots (PNG) and a short Markdown report, all written atomically
(``engram.io``)."""

from __future__ import annotations

import csv
import datetime as _dt
import importlib.metadata
import io
import os
import platform
import random
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engram.io import jsonable, atomic_write_bytes, atomic_write_text, to_json

_TRACKED_PACKAGES = (
    "engram",
    "numpy",
    "torch",
    "scipy",
    "statsmodels",
    "scikit-learn",
    "matplotlib",
    "safetensors",
)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, numpy and torch; return a numpy Generator for explicit use."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    import torch

    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    return np.random.default_rng(int(seed))


def environment() -> dict[str, Any]:
    """Versions of Python, the platform and the packages a result depends on."""
    versions: dict[str, str | None] = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "git_commit": commit or None,
    }


class RunFolder:
    """A folder for one run: ``config.json`` on creation, then results, plots and a report.

    Example:
        >>> run = RunFolder.create("runs", "demo", config={"n": 64}, seed=0)  # doctest: +SKIP
        >>> run.write_json("results.json", {"recall": 0.98})                   # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"run folder: {self.path} does not exist")

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        name: str,
        config: Any,
        seed: int,
    ) -> RunFolder:
        """Make ``root/<name>-<UTC timestamp>`` and write config, seed and environment into it."""
        if not name or any(c in name for c in "/\\"):
            raise ValueError(f"name: expected a plain folder name, got {name!r}")
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        path = Path(root) / f"{name}-{stamp}"
        path.mkdir(parents=True, exist_ok=False)
        run = cls(path)
        run.write_json(
            "config.json",
            {"name": name, "seed": seed, "config": config, "environment": environment()},
        )
        return run

    def file(self, name: str) -> Path:
        """Path of a file inside the run folder."""
        return self.path / name

    def write_json(self, name: str, data: Any) -> Path:
        return atomic_write_text(self.file(name), to_json(data))

    def write_csv(self, name: str, rows: Sequence[Mapping[str, Any]]) -> Path:
        """Write a list of dicts as CSV; columns are the union of keys in first-seen order."""
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: jsonable(v) for k, v in row.items()})
        return atomic_write_text(self.file(name), buffer.getvalue())

    def save_figure(self, name: str, figure: Any, dpi: int = 120) -> Path:
        """Save a matplotlib figure as PNG atomically and close it."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(figure)
        return atomic_write_bytes(self.file(name), buffer.getvalue())

    def write_report(self, markdown: str) -> Path:
        return atomic_write_text(self.file("report.md"), markdown)


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Render rows of dicts as a GitHub Markdown table."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col, "")
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def progress(iterable: Iterable[Any], description: str, total: int | None = None, **kwargs: Any):
    """A tqdm progress bar on stderr, silent when ``ENGRAM_QUIET`` is set."""
    from tqdm.auto import tqdm

    disable = bool(os.environ.get("ENGRAM_QUIET"))
    return tqdm(iterable, desc=description, total=total, disable=disable, leave=False, **kwargs)
