"""Module-level job functions for the runner's tests (workers import them by path)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Square:
    """A job config: square ``x``; each call is logged as one line in ``log`` when it is set."""

    x: float
    log: str = ""


def square(cfg: Square, seed: int) -> dict:
    if cfg.log:
        with open(cfg.log, "a") as handle:
            handle.write(f"{cfg.x} {seed}\n")
    return {"value": cfg.x**2 + seed, "tuple": (1, 2), "pid": os.getpid()}


def fail(cfg: Square, seed: int) -> dict:
    if cfg.x == 3:
        raise RuntimeError("job 3 failed")
    return square(cfg, seed)


def count_lines(path: str) -> int:
    return len(Path(path).read_text().splitlines()) if Path(path).exists() else 0
