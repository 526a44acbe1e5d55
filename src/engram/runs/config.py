"""Experiment configs: frozen dataclasses, built from files and ``--set`` overrides by one typed path.

Every value that reaches a config — a TOML file's table, a ``key=value`` override, a run
folder's ``config.json`` on resume — goes through :func:`coerce` to the field's declared type
and then through the dataclass's own constructor, so a file says exactly what the equivalent
``Config(...)`` call says and is checked by the same ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engram.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_NONE_WORDS = frozenset({"none", "null"})
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def check_config_class(cls: type) -> None:
    """Refuse a config class that is not a frozen dataclass (the convention every run relies on)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config: expected a dataclass type, got {cls!r}")
    if not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"config: {cls.__qualname__} must be a frozen dataclass")


def field_types(cls: type) -> dict[str, Any]:
    """Declared types of a dataclass's init fields, with string annotations resolved."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def type_name(annotation: Any) -> str:
    """How a declared type reads in an error message: ``int``, ``tuple[float, ...]``, …"""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return str(annotation).replace("typing.", "")


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` (parsed TOML/JSON data or override text) as the declared ``annotation``.

    Lists become tuples where a tuple is declared, mappings become nested dataclasses, an
    integer is accepted for a float; anything else that does not fit raises a ``ConfigError``
    naming ``key``, the expected type and the value.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return _literal(value) if isinstance(value, str) else value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, annotation, args, key)
    if origin is typing.Literal:
        choices = args
        parsed = value
        if isinstance(value, str) and value not in choices:
            parsed = _literal(value)
        if parsed in choices:
            return parsed
        raise ConfigError(f"{key}: expected one of {list(choices)!r}, got {value!r}")
    if annotation is type(None):
        if value is None or (isinstance(value, str) and value.lower() in _NONE_WORDS):
            return None
        raise _mismatch(key, annotation, value)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        if isinstance(value, str):
            value = _literal(value)
        if not isinstance(value, Mapping):
            raise _mismatch(key, annotation, value)
        return from_mapping(annotation, value, prefix=f"{key}.")
    if origin in (tuple, list, Sequence, typing.Sequence) or annotation in (tuple, list):
        return _coerce_sequence(value, annotation, origin or annotation, args, key)
    if origin in (dict, Mapping, typing.Mapping) or annotation is dict:
        return _coerce_mapping(value, args, key)
    return _coerce_scalar(value, annotation, key)


def _coerce_union(value: Any, annotation: Any, args: tuple[Any, ...], key: str) -> Any:
    if type(None) in args and (
        value is None or (isinstance(value, str) and value.lower() in _NONE_WORDS)
    ):
        return None
    for option in args:
        if option is type(None):
            continue
        try:
            return coerce(value, option, key)
        except ConfigError:
            continue
    raise _mismatch(key, annotation, value)


def _coerce_sequence(
    value: Any, annotation: Any, origin: Any, args: tuple[Any, ...], key: str
) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = _literal(text)
        else:  # the shorthand `--set sizes=256,512`
            value = [part.strip() for part in text.split(",")] if text else []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise _mismatch(key, annotation, value)
    items = list(value)
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            raise ConfigError(
                f"{key}: expected {type_name(annotation)} ({len(args)} items), got {value!r}"
            )
        return tuple(coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(items, args, strict=True)))
    element = args[0] if args else Any
    coerced = [coerce(v, element, f"{key}[{i}]") for i, v in enumerate(items)]
    return coerced if origin is list else tuple(coerced)


def _coerce_mapping(value: Any, args: tuple[Any, ...], key: str) -> dict[str, Any]:
    if isinstance(value, str):
        value = _literal(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table of values, got {value!r}")
    value_type = args[1] if len(args) == 2 else Any
    return {str(k): coerce(v, value_type, f"{key}.{k}") for k, v in value.items()}


def _coerce_scalar(value: Any, annotation: Any, key: str) -> Any:
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.lower() in _TRUE_WORDS
        raise _mismatch(key, annotation, value)
    if annotation is int:
        if isinstance(value, str):
            value = _literal(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _mismatch(key, annotation, value)
    if annotation is float:
        if isinstance(value, str):
            value = _literal(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _mismatch(key, annotation, value)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _mismatch(key, annotation, value)
    if annotation is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _mismatch(key, annotation, value)
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ConfigError(f"{key}: cannot set a value of declared type {type_name(annotation)}")


def _mismatch(key: str, annotation: Any, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {type_name(annotation)}, got {value!r}")


def _literal(text: str) -> Any:
    """A TOML value written as text (``3``, ``0.5``, ``true``, ``[1, 2]``, ``{a = 1}``, ``"s"``);
    text that is not one stays the string it is."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def from_mapping(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Construct ``cls`` from a mapping of field values (a file's table, a saved config.json)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table, got {data!r}")
    declared = field_types(cls)
    unknown = [k for k in data if k not in declared]
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown key for {cls.__qualname__}; expected one of "
            f"{', '.join(declared)}"
        )
    values = {k: coerce(v, declared[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**values)


def to_mapping(cfg: Any) -> dict[str, Any]:
    """A config as plain data (nested dataclasses as dicts), as config.json stores it."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"cfg: expected a dataclass instance, got {type(cfg).__name__}")
    return dataclasses.asdict(cfg)


def merge(cfg: Any, changes: Mapping[str, Any], prefix: str = "") -> Any:
    """``cfg`` with nested ``changes`` applied (a file's [quick] table, parsed overrides)."""
    declared = field_types(type(cfg))
    updates: dict[str, Any] = {}
    for name, change in changes.items():
        key = f"{prefix}{name}"
        if name not in declared:
            raise ConfigError(
                f"{key}: unknown key for {type(cfg).__qualname__}; expected one of "
                f"{', '.join(declared)}"
            )
        current = getattr(cfg, name)
        if isinstance(change, Mapping) and dataclasses.is_dataclass(current):
            updates[name] = merge(current, change, prefix=f"{key}.")
        elif isinstance(change, Mapping) and isinstance(current, Mapping):
            updates[name] = coerce({**current, **change}, declared[name], key)
        else:
            updates[name] = coerce(change, declared[name], key)
    return dataclasses.replace(cfg, **updates)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` as nested ``{"a": {"b": "1"}, "c": "x"}`` (values stay text for
    :func:`merge` to read as each field's declared type)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set: expected key=value (dotted keys for nested fields), got {pair!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set: {key!r} sets inside {part!r}, which is also set to a value")
            node = child
        node[parts[-1]] = text
    return out


def override(cfg: Any, pairs: Sequence[str]) -> Any:
    """``cfg`` with ``key=value`` overrides applied, each value read as its field's type."""
    return merge(cfg, parse_overrides(pairs)) if pairs else cfg


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """A named run under ``configs/``: which experiment, its config table and its [quick] changes."""

    path: Path
    experiment: str
    config: Mapping[str, Any]
    quick: Mapping[str, Any]
    description: str = ""


def read_config_file(path: str | os.PathLike[str]) -> ConfigFile:
    """Parse a TOML config file: ``experiment = "<part>.<name>"``, ``[config]``, ``[quick]``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config: {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"--config: {path} is not valid TOML: {error}") from None
    allowed = {"experiment", "description", "config", "quick"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r}; expected {sorted(allowed)}")
    experiment = data.get("experiment")
    if not isinstance(experiment, str) or "." not in experiment:
        raise ConfigError(f"{path}: experiment: expected '<part>.<experiment>', got {experiment!r}")
    for table in ("config", "quick"):
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"{path}: [{table}]: expected a table, got {data[table]!r}")
    if "quick" not in data:
        raise ConfigError(f"{path}: [quick]: every config file needs the changes that make it run in seconds")
    return ConfigFile(path, experiment, data.get("config", {}), data["quick"],
                      str(data.get("description", "")))
