"""Fault injection for the store's crash tests: run code in a forked child and stop it at a chosen step."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable

CRASHED = 77  # exit status of a child stopped on purpose


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
