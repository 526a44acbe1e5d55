"""Shared fixtures: the data folder (``$ENGRAM_DATA`` or ``../shared/data``), seeded RNGs, and one torch
thread for the parts that train tiny models."""

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


# The parts whose tests train tiny torch models: on a shared 2-core machine two intra-op threads
# contend with other processes and those models run tens of times slower.
_ONE_THREAD_PARTS = ("lm", "replay")


@pytest.fixture(autouse=True)
def one_thread(request: pytest.FixtureRequest):
    """torch on one intra-op thread for the tests of those parts, restored after each."""
    here = Path(__file__).parent
    path = Path(request.path)
    if not (path.is_relative_to(here) and path.relative_to(here).parts[0] in _ONE_THREAD_PARTS):
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
