"""Shared fixtures: the data folder (``$ENGRAM_DATA`` or ``../shared/data``) and seeded RNGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engram.data import data_root

os.environ.setdefault("ENGRAM_QUIET", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; tests that need it skip only where it is absent (a user's clone)."""
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} is absent (set ENGRAM_DATA to use it)")
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
