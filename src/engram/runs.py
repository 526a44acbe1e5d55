"""Run folders: one directory per experiment run holding its config, seed, environment,
results (JSON/CSV), plots (PNG) and a short Markdown report.

Every write is atomic (temporary file + rename), so an interrupted run never leaves a
half-written result behind, and a checkpoint either loads whole or not at all. Results JSON is
strict JSON: a number that is not finite (NaN, ±∞) is written as ``null``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import glob
import hashlib
import importlib.metadata
import io
import json
import math
import os
import platform
import random
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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


_TEMP_SUFFIX = ".engram-tmp"
# ".<target name>.<writer pid>-<random>.engram-tmp"; the random part never holds a dot, so the
# target name is exactly what precedes the last dot before the pid
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)-[a-z0-9_]+" + re.escape(_TEMP_SUFFIX))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename.

    A symlink is written through: its target is replaced and the link kept. The temporary
    file is named ``.<name>.<pid>-<random>.engram-tmp``; one left by a writer that was killed
    (its process is gone) is removed by the next write to the same file. Returns ``path``.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temp_files(target)
    fd, tmp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.{os.getpid()}-", suffix=_TEMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)
    return path


def _remove_dead_temp_files(target: Path) -> None:
    """Delete the temporary files of ``target`` whose writing process no longer exists."""
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.*{_TEMP_SUFFIX}"):
        match = _TEMP_NAME.fullmatch(candidate.name)
        if match and match["target"] == target.name and not _process_alive(int(match["pid"])):
            candidate.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write text (UTF-8) atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


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


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _to_jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(value: Any) -> str:
    """Serialise dataclasses, numpy values and paths to indented, strict JSON.

    JSON has no NaN or infinity: a number that is not finite becomes ``null`` (undefined).
    """
    return json.dumps(_to_jsonable(value), indent=2, sort_keys=False, allow_nan=False) + "\n"


def number(value: float | None) -> float:
    """A number read back from results JSON: ``null`` (what ``to_json`` writes for NaN and ±∞)
    comes back as NaN."""
    return math.nan if value is None else float(value)


def content_digest(value: Any) -> str:
    """SHA-256 of nested dicts, lists, tensors, arrays and scalars in a canonical byte form.

    The checksum saved files carry and their loaders verify, so a flipped bit is an error,
    not a silently different model or memory. Mapping order counts (pickle and JSON keep it).
    """
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    import torch

    if isinstance(value, Mapping):
        digest.update(b"{%d" % len(value))
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(b"[%d" % len(value))
        for item in value:
            _feed(digest, item)
    elif isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor {flat.dtype} {tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        digest.update(f"array {value.dtype.str} {value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    else:
        digest.update(f"{type(value).__name__} {value!r}".encode())


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
            writer.writerow({k: _to_jsonable(v) for k, v in row.items()})
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
