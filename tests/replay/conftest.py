"""Replay tests run on one thread: on a shared 2-core machine two intra-op threads contend with
other processes and the tiny networks run many times slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
