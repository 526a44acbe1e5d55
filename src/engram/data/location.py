"""Where the shared data folder is: ``$ENGRAM_DATA`` or ``../shared/data`` from the checkout."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """The shared data folder (it may not exist on a user's clone)."""
    env = os.environ.get("ENGRAM_DATA")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[3]
    return checkout.parent / "shared" / "data"
