"""Atomic file writes, strict JSON and content checksums: the I/O every part's saved files use.

A write goes to a temporary file in the same folder, is fsynced and renamed over the target, so an
interrupted write never leaves half a file; JSON is strict (a non-finite number becomes ``null``);
``content_digest`` is the SHA-256 that saved memories, buffers and checkpoints carry.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

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


def jsonable(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(value: Any) -> str:
    """Serialise dataclasses, numpy values and paths to indented, strict JSON.

    JSON has no NaN or infinity: a number that is not finite becomes ``null`` (undefined).
    """
    return json.dumps(jsonable(value), indent=2, sort_keys=False, allow_nan=False) + "\n"


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
