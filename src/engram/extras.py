"""Optional dependencies: import one by name, or fail with the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise an ImportError saying ``pip install engram[extra]`` when it is absent."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        top = module.split(".")[0]
        if error.name is None or error.name.split(".")[0] != top:
            raise  # the module exists but something it imports is broken: keep that traceback
        raise ImportError(
            f"{module} is needed here but not installed: pip install 'engram[{extra}]'"
        ) from error
