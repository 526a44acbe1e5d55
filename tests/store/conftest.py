"""A real PostgreSQL with pgvector for the store tests: one server per test session, one fresh
database per test. ``ENGRAM_TEST_POSTGRES_URL`` points the tests at a server one already runs
(its user must be allowed to create databases); otherwise ``pgserver`` (in the ``dev`` extra,
it ships PostgreSQL and pgvector) starts one in the session's temporary folder."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (host, user and options kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[tuple[str, Path | None]]:
    """(URL of the server's maintenance database, its data folder when this session started it)."""
    given = os.environ.get("ENGRAM_TEST_POSTGRES_URL")
    if given:
        yield given, None
        return
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg: pip install -e '.[dev]'")
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        pgserver = pytest.importorskip("pgserver", reason="PostgreSQL tests need pgserver: "
                                       "pip install -e '.[dev]' (or set ENGRAM_TEST_POSTGRES_URL)")
        # not under pytest's numbered temporary folders: another session starting on this
        # machine may remove those while this one's server still runs from them
        folder = Path(tempfile.mkdtemp(prefix="engram-pg-"))
        server = pgserver.get_server(folder, cleanup_mode="stop")
    try:
        yield server.get_uri(), folder
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: tuple[str, Path | None]) -> Iterator[str]:
    """A URL of a new, empty database on the session's server, dropped after the test."""
    import psycopg

    url, _ = postgres_server
    name = f"engram_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
