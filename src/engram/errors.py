"""Engram's own error type: what the ``engram`` command prints in one line instead of a traceback."""


class EngramError(Exception):
    """A failure Engram explains itself (a damaged or unreachable store, a bad run folder)."""
