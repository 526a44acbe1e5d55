"""The ``engram`` command: one subcommand per job, each defined next to its experiment.

Each module named in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommand(s) and sets ``func`` on the parser to a callable taking the parsed arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from engram.store.backend import StoreError

COMMAND_MODULES: tuple[str, ...] = (
    "engram.ca3.experiments.demo",
    "engram.store.cli",
    "engram.ca3.experiments.lab",
    "engram.streaming.experiments.eviction",
    "engram.streaming.experiments.variants",
    "engram.lm.cli",
    "engram.replay.experiments.continual",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engram", description="Hippocampus-inspired memory for AI."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the chosen subcommand; errors in arguments exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"engram {args.command}: error: {error}", file=sys.stderr)
        return 2
    except StoreError as error:
        # a store that cannot be used (damaged, full disk, read-only): its message names it
        print(f"engram {args.command}: error: {error}", file=sys.stderr)
        return 1
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
