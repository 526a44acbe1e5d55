"""Running a registered experiment into a run folder: the config it gets, fresh or resumed.

``resolve`` builds the config from the experiment's default or quick config, a config file,
a seed and ``--set`` overrides (in that order); ``start`` creates ``<out>/<name>-<time>`` and
runs there; ``resume`` reruns a folder's saved config in that folder, so the job runner's
cache (``jobs/``) skips every job already done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engram.errors import ConfigError
from engram.runs.config import from_mapping, merge, override, read_config_file, to_mapping
from engram.runs.folder import RunFolder
from engram.runs.registry import Experiment, experiment
from engram.runs.report import write_result
from engram.runs.result import Result


def resolve(
    name: str,
    quick: bool = False,
    config_file: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    overrides: Sequence[str] = (),
) -> tuple[Experiment, Any]:
    """The experiment and its config: default (or QUICK), or a file (with its [quick] changes),
    then ``seed``, then the overrides — each value read as its declared type."""
    if config_file is not None:
        spec = read_config_file(config_file)
        if name and spec.experiment != name:
            raise ConfigError(f"--config: {config_file} is a config of {spec.experiment}, not {name}")
        exp = experiment(spec.experiment)
        cfg = from_mapping(exp.config, spec.config)
        if quick:
            cfg = merge(cfg, spec.quick)
    else:
        exp = experiment(name)
        cfg = exp.quick if quick else exp.config()
    if seed is not None:
        cfg = merge(cfg, {"seed": seed})
    return exp, override(cfg, overrides)


def quick_config(path: str | os.PathLike[str]) -> tuple[Experiment, Any]:
    """A config file's quick form (what the tests run for every file under configs/)."""
    return resolve("", quick=True, config_file=path)


def run_in(exp: Experiment, cfg: Any, folder: RunFolder, command: str | None = None) -> Result:
    """Run ``exp`` with ``cfg`` in an existing folder and write its result files there."""
    started = time.perf_counter()
    result = exp.run(cfg, folder)
    if not isinstance(result, Result):
        raise TypeError(f"{exp.module}.run: expected a Result, got {type(result).__name__}")
    write_result(folder, result, exp.name, round(time.perf_counter() - started, 1), command)
    return result


def start(exp: Experiment, cfg: Any, out: str | os.PathLike[str],
          command: str | None = None) -> tuple[RunFolder, Result]:
    """Create ``out/<name>-<UTC time>`` (config.json with seed and environment) and run there."""
    folder = RunFolder.create(out, exp.name, to_mapping(cfg), seed=cfg.seed, command=command)
    return folder, run_in(exp, cfg, folder, command)


def _record(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume: {folder} has no config.json (not a run folder)")
    return json.loads(path.read_text(encoding="utf-8"))


def saved(folder: str | os.PathLike[str]) -> tuple[Experiment, Any]:
    """The experiment and config a run folder was started with (its config.json)."""
    record = _record(folder)
    exp = experiment(record["name"])
    return exp, from_mapping(exp.config, record["config"])


def resume(folder: str | os.PathLike[str], cfg: Any | None = None,
           command: str | None = None) -> tuple[RunFolder, Result]:
    """Finish the run in ``folder`` with its saved config (``cfg``, if given, must equal it);
    its report keeps the command that started it unless ``command`` is given."""
    exp, saved_cfg = saved(folder)
    command = command or _record(folder).get("command")
    if cfg is not None and cfg != saved_cfg:
        changed = [f.name for f in dataclasses.fields(saved_cfg)
                   if getattr(cfg, f.name) != getattr(saved_cfg, f.name)]
        raise ConfigError(f"--resume: {folder} was started with another config "
                          f"(differs in {', '.join(changed)}); resume it without changes")
    run_folder = RunFolder(folder)
    return run_folder, run_in(exp, saved_cfg, run_folder, command)
