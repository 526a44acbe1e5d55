"""The storage backends behind ``StorageBackend``, and the one rule that picks one for a location.

A ``postgresql://`` (or ``postgres://``) URL opens PostgreSQL with pgvector (the optional extra
``engram[postgres]``); anything else is a store directory for SQLite. ``MemoryBackend`` keeps
everything in this process, for tests of the layers above.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engram.store.backend import StorageBackend
from engram.store.backends.memory import MemoryBackend
from engram.store.backends.sqlite import DATABASE, SQLiteBackend

_URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: Any) -> bool:
    """True for a PostgreSQL connection URL (the only kind of URL a store can be)."""
    return isinstance(location, str) and location.startswith(_URL_SCHEMES)


def open_backend(location: str | os.PathLike[str], dim: int | None = None,
                 durable: bool = True) -> StorageBackend:
    """The backend for ``location``: PostgreSQL for a ``postgresql://`` URL, else a SQLite directory."""
    if is_url(location):
        from engram.store.backends.postgres import PostgresBackend

        return PostgresBackend(str(location), dim=dim, durable=durable)
    if not isinstance(location, str | os.PathLike):
        raise TypeError(
            f"path: expected a store directory or a postgresql:// URL, got {type(location).__name__} "
            f"{location!r}"
        )
    return SQLiteBackend(location, dim=dim, durable=durable)


def store_exists(location: str | os.PathLike[str]) -> bool:
    """Whether a store is already at ``location`` (a directory holding its database, or a
    PostgreSQL database holding Engram's schema): commands that only read must not create one."""
    if is_url(location):
        from engram.store.backends.postgres import holds_store

        return holds_store(str(location))
    return (Path(location) / DATABASE).is_file()


__all__ = ["MemoryBackend", "SQLiteBackend", "is_url", "open_backend", "store_exists"]
