"""Engram's own error types: what the ``engram`` command prints in one line instead of a traceback.

An ``EngramError`` means the user can fix it (an argument, a config, a store that cannot be
used); anything else is a bug and keeps its traceback. Subclasses keep a builtin second base
(``ValueError``, ``TypeError``, ``OSError``) so callers catching those still work.
"""

from __future__ import annotations


class EngramError(Exception):
    """Base of Engram's own errors; ``exit_status`` is what the ``engram`` command returns."""

    exit_status: int = 2


class ConfigError(EngramError, ValueError):
    """A config, a config file or a ``--set`` override that cannot be applied as given."""

