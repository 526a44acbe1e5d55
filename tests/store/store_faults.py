"""Fault injection for the store's crash tests: run code in a forked child, and stop or fail the
SQLite backend at any one of its durability steps (``engram.store.backends.sqlite.FileOps``)."""

from __future__ import annotations

import errno
import os
import sqlite3
import traceback
from collections.abc import Callable
from pathlib import Path

from engram.store.backends import sqlite

CRASHED = 77  # exit status of a child stopped on purpose
STOPS = ("crash", "power")  # the process dies; "power" also drops vector data not yet fsynced
FAULTS = ("ENOSPC", "EIO", "short")  # the operation fails; "short": half a write, then a full disk


def in_child(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child (started in milliseconds: imports are done); its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            work()
        except BaseException:  # the child reports and exits, never returns into pytest
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


class Injector(sqlite.FileOps):
    """The backend's file operations, counted in ``trace``; the ``at``-th one (1-based) is where
    the process stops (a mode of ``STOPS``, right after the step) or fails (``FAULTS``, instead
    of the step).

    Power loss follows the usual model of a journaling file system: a file keeps only the data
    it had at its last fsync, and the directory only the entries it had at its last fsync
    (files in place when the injector was installed count as durable). SQLite's files are not
    modelled: in WAL mode with ``synchronous=FULL`` a commit is durable when it returns.
    """

    def __init__(self, vectors: Path, mode: str = "count", at: int = 0):
        self.vectors, self.mode, self.at = vectors, mode, at
        self.trace: list[str] = []
        self.injected = False
        self._full = False
        self._paths: dict[int, Path] = {}  # descriptor → file, for what an fsync made durable
        self._entries = {p.name: p.stat().st_ino for p in vectors.iterdir()}
        self._images = {ino: (vectors / name).read_bytes() for name, ino in self._entries.items()}

    def install(self) -> Injector:
        sqlite._io = self
        return self

    @staticmethod
    def uninstall() -> None:
        sqlite._io = sqlite.FileOps()

    # ------------------------------------------------------------------ bookkeeping

    def _enter(self, step: str) -> bool:
        """Count the step; True when it is the one to fail."""
        self.trace.append(step)
        fail = self.mode in FAULTS and len(self.trace) == self.at
        self.injected |= fail
        return fail

    def _done(self) -> None:
        if self.mode in STOPS and len(self.trace) == self.at:
            if self.mode == "power":
                self._lose_power()
            os._exit(CRASHED)

    def _error(self) -> OSError:
        if self.mode == "EIO":
            return OSError(errno.EIO, "Input/output error")
        return OSError(errno.ENOSPC, "No space left on device")

    def _lose_power(self) -> None:
        for path in self.vectors.iterdir():
            path.unlink()
        for name, ino in self._entries.items():
            (self.vectors / name).write_bytes(self._images.get(ino, b""))

    # ------------------------------------------------------------------ the steps

    def open(self, path: Path, flags: int) -> int:
        if self._enter("open"):
            raise self._error()
        fd = super().open(path, flags)
        self._paths[fd] = Path(path)
        self._done()
        return fd

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        fail = self._enter("pwrite")
        if self._full:
            raise OSError(errno.ENOSPC, "No space left on device")
        if fail and self.mode == "short":
            self._full = True
            return os.pwrite(fd, data[: len(data) // 2], offset)
        if fail:
            raise self._error()
        written = os.pwrite(fd, data, offset)
        self._done()
        return written

    def fsync(self, fd: int) -> None:
        if self._enter("fsync"):
            raise self._error()
        os.fsync(fd)
        self._images[os.fstat(fd).st_ino] = self._paths[fd].read_bytes()  # fd may be write-only
        self._done()

    def fsync_dir(self, path: Path) -> None:
        if self._enter("fsync_dir"):
            raise self._error()
        super().fsync_dir(path)
        if Path(path) == self.vectors:
            self._entries = {p.name: p.stat().st_ino for p in self.vectors.iterdir()}
        self._done()

    def replace(self, source: Path, target: Path) -> None:
        if self._enter("replace"):
            raise self._error()
        os.replace(source, target)
        self._done()

    def unlink(self, path: Path) -> None:
        if self._enter("unlink"):
            raise self._error()
        os.unlink(path)
        self._done()

    def commit(self, db: sqlite3.Connection) -> None:
        if self._enter("commit"):
            message = "disk I/O error" if self.mode == "EIO" else "database or disk is full"
            raise sqlite3.OperationalError(message)
        db.execute("COMMIT")
        self._done()
