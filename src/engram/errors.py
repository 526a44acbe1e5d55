"""Engram's own error type: what the ``engram`` command prints in one line instead of a traceback."""

from __future__ import annotations


class EngramError(Exception):
    """Base of Engram's own errors: something the user can fix (an argument, a config, a file)."""
