"""The ``engram`` command: ``demo``, ``list``, ``run <part>.<experiment>``, ``report`` and the
tools ``lm …`` and ``store …``.

Only Engram's own errors (``EngramError``: a bad argument or config, exit 2; a store that
cannot be used, exit 1) become a one-line message; anything else is a bug and keeps its
traceback. Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
subcommand(s) with ``func`` set to a callable taking the parsed arguments.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engram.errors import ConfigError, EngramError
from engram.store.backend import StoreError

COMMAND_MODULES: tuple[str, ...] = (
    "engram.ca3.experiments.demo",
    "engram.store.cli",
    "engram.lm.cli",
)

# Until their owners raise EngramError for bad input, these older commands still print a
# ValueError/TypeError in one line (exit 2) and a StoreError (exit 1); each name leaves this
# set when its module moves onto `engram run` or onto Engram's error types.
BUILTIN_ERRORS_AS_USAGE: frozenset[str] = frozenset(
    {"store", "lm"}
)


def _list(args: argparse.Namespace) -> int:
    from engram.runs import experiment, names

    for name in names():
        print(f"{name:28s} {experiment(name).summary}" if args.describe else name)
    return 0


def _run(args: argparse.Namespace) -> int:
    from engram.runs import Runner, claims_markdown, launch, using

    runner = Runner(args.backend, args.workers)
    with using(runner):
        if args.resume:
            cfg = None
            if args.name or args.config or args.seed is not None or args.set or args.quick:
                _, cfg = launch.resolve(args.name or launch.saved(args.resume)[0].name,
                                        args.quick, args.config, args.seed, args.set)
            folder, result = launch.resume(args.resume, cfg)
        else:
            if not args.name and not args.config:
                raise ConfigError("run: expected an experiment name or --config FILE (see `engram list`)")
            exp, cfg = launch.resolve(args.name or "", args.quick, args.config, args.seed, args.set)
            folder, result = launch.start(exp, cfg, args.out, _reproduce(args))
    print(claims_markdown(result.claims), end="")
    print(f"Run folder: {folder.path}")
    return 0


def _reproduce(args: argparse.Namespace) -> str:
    """The command that reruns this config (where its folder goes and how many workers run it
    do not change a result, so they are left out)."""
    words = ["engram", "run"] + ([args.name] if args.name else [])
    words += ["--config", args.config] if args.config else []
    words += ["--quick"] if args.quick else []
    words += ["--seed", str(args.seed)] if args.seed is not None else []
    for pair in args.set:
        words += ["--set", pair]
    return shlex.join(words)


def _report(args: argparse.Namespace) -> int:
    from engram.runs import RunFolder, read_result
    from engram.runs.report import write_front_page, write_report

    runs = []
    for path in args.run_dirs:
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"report: {path} is not a run folder (no config.json)")
        run = read_result(RunFolder(path))
        write_report(run.folder, run.result, run.experiment, run.command)
        print(run.folder.file("report.md"))
        runs.append(run)
    if args.front_page:
        print(write_front_page(args.front_page, runs))
    return 0


def _register_toolkit(subparsers: Any) -> None:
    listing = subparsers.add_parser("list", help="the registered experiments (<part>.<experiment>)")
    listing.add_argument("--describe", action="store_true", help="with each one's summary")
    listing.set_defaults(func=_list)

    run = subparsers.add_parser(
        "run", help="run an experiment into a run folder",
        description="Config: the experiment's default (or --quick one), or --config FILE (with "
        "its [quick] changes under --quick), then --seed, then each --set key=value, read as "
        "the field's declared type (dotted keys for nested fields).",
    )
    run.add_argument("name", nargs="?", default="", help="<part>.<experiment> (see `engram list`)")
    run.add_argument("--quick", action="store_true", help="the seconds-long form of the config")
    run.add_argument("--seed", type=int, default=None, help="the config's seed")
    run.add_argument("--config", default=None, help="a config file (TOML, see configs/)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config field (repeatable)")
    run.add_argument("--resume", default=None, metavar="DIR",
                     help="finish the run in this folder (finished jobs are not rerun)")
    run.add_argument("--out", default="runs", help="root of the run folders (default runs/)")
    run.add_argument("--workers", type=int, default=1, help="processes (or Ray tasks) for jobs")
    run.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="where jobs run: local processes, or a Ray cluster")
    run.set_defaults(func=_run)

    report = subparsers.add_parser("report", help="rebuild report.md of finished run folders")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--front-page", default=None, metavar="README",
                        help="put the runs' claims table into this page (between its "
                        "<!-- claims:begin --> and <!-- claims:end --> lines), their reports "
                        "and figures beside it")
    report.set_defaults(func=_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engram", description="Hippocampus-inspired memory for AI."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _register_toolkit(subparsers)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the chosen subcommand; Engram's errors become one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except EngramError as error:
        print(f"engram {args.command}: error: {error}", file=sys.stderr)
        return error.exit_status
    except (ValueError, TypeError, FileNotFoundError, StoreError) as error:
        if args.command not in BUILTIN_ERRORS_AS_USAGE:
            raise
        print(f"engram {args.command}: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, StoreError) else 2
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
