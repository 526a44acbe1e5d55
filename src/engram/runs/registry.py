"""The experiment registry: each part declares its experiments; names are ``<part>.<experiment>``.

A part lists them in ``engram/<part>/experiments/__init__.py`` as ``EXPERIMENTS``, a mapping
of experiment name -> module path. Such a module defines ``Config`` (a frozen dataclass),
``QUICK`` (the seconds-long config of the same experiment) and ``run(cfg, folder) -> Result``;
its docstring's first line is the experiment's summary. Nothing is imported until asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engram.errors import ConfigError
from engram.runs.config import check_config_class

PARTS: tuple[str, ...] = ("ca3", "replay", "streaming", "lm")


@dataclass(frozen=True)
class Experiment:
    """One registered experiment: its config class, its quick config and its run function."""

    name: str
    config: type
    quick: Any
    run: Callable[..., Any]
    summary: str
    module: str

    def __post_init__(self) -> None:
        check_config_class(self.config)
        if "seed" not in {f.name for f in dataclasses.fields(self.config)}:
            raise TypeError(f"{self.module}.Config: a config declares its seed (`seed: int`)")
        if not isinstance(self.quick, self.config):
            raise TypeError(f"{self.module}.QUICK: expected a {self.config.__qualname__}, "
                            f"got {type(self.quick).__name__}")
        if not callable(self.run):
            raise TypeError(f"{self.module}.run: expected a function run(cfg, folder)")


def declared() -> dict[str, str]:
    """Every part's experiments, ``"<part>.<experiment>"`` -> module path, in part order."""
    out: dict[str, str] = {}
    for part in PARTS:
        package = importlib.import_module(f"engram.{part}.experiments")
        table = getattr(package, "EXPERIMENTS", {})
        for name, module in table.items():
            if not isinstance(module, str) or "." in name:
                raise TypeError(f"engram.{part}.experiments.EXPERIMENTS[{name!r}]: expected a "
                                f"plain name mapped to a module path, got {module!r}")
            out[f"{part}.{name}"] = module
    return out


def names() -> list[str]:
    return list(declared())


def experiment(name: str) -> Experiment:
    """The registered experiment called ``name`` (``"ca3.capacity"``), its module imported."""
    table = declared()
    if name not in table:
        raise ConfigError(f"experiment: expected one of {', '.join(table)}, got {name!r}")
    module = importlib.import_module(table[name])
    for attribute in ("Config", "QUICK", "run"):
        if not hasattr(module, attribute):
            raise TypeError(f"{table[name]}: an experiment module defines Config, QUICK and run; "
                            f"{attribute} is missing")
    summary = (module.__doc__ or "").strip().splitlines()
    return Experiment(name, module.Config, module.QUICK, module.run,
                      summary[0] if summary else "", table[name])
