"""Configs: a file and a --set override say exactly what the dataclass constructor says, each
value read as its declared type; a bad key, type or value is named in the error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from engram.errors import ConfigError, EngramError
from engram.runs import from_mapping, merge, override, parse_overrides, read_config_file
from engram.runs.config import check_config_class


@dataclass(frozen=True)
class Inner:
    units: int = 64
    rate: float = 0.5


@dataclass(frozen=True)
class Toy:
    sizes: tuple[int, ...] = (128, 256)
    alpha: float = 0.05
    rule: Literal["hebbian", "storkey"] = "hebbian"
    quick: bool = False
    path: str | None = None
    inner: Inner = field(default_factory=Inner)
    model: dict[str, Any] = field(default_factory=lambda: {"n_layer": 2, "bias": False})
    seed: int = 0

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ConfigError(f"alpha: expected a positive load, got {self.alpha}")


def test_overrides_are_read_as_each_fields_declared_type():
    cfg = override(Toy(), ["sizes=512,1024", "alpha=1", "rule=storkey", "quick=true",
                           "path=data/x.npz", "inner.units=32", "model.n_layer=4", "seed=7"])
    assert cfg == Toy(sizes=(512, 1024), alpha=1.0, rule="storkey", quick=True, path="data/x.npz",
                      inner=Inner(units=32), model={"n_layer": 4, "bias": False}, seed=7)
    assert isinstance(cfg.alpha, float) and isinstance(cfg.model["n_layer"], int)
    assert override(Toy(), ["sizes=[8, 16]", "path=none"]) == Toy(sizes=(8, 16))


@pytest.mark.parametrize(("pair", "message"), [
    ("sizes=128,abc", r"sizes\[1\]: expected int, got 'abc'"),
    ("alpha=fast", "alpha: expected float, got 'fast'"),
    ("rule=oja", r"rule: expected one of \['hebbian', 'storkey'\], got 'oja'"),
    ("quick=maybe", "quick: expected bool, got 'maybe'"),
    ("inner.units=1.5", "inner.units: expected int, got 1.5"),
    ("sizez=1", "sizez: unknown key for Toy; expected one of sizes, alpha"),
    ("inner.size=1", "inner.size: unknown key for Inner"),
    ("alpha", "--set: expected key=value"),
    ("alpha=-1", "alpha: expected a positive load"),  # the dataclass's own check runs too
])
def test_a_bad_override_names_the_key_the_type_and_the_value(pair, message):
    with pytest.raises(ConfigError, match=message) as caught:
        override(Toy(), [pair])
    assert isinstance(caught.value, EngramError) and isinstance(caught.value, ValueError)


def test_a_file_table_builds_the_same_config_as_the_constructor():
    data = {"sizes": [512], "alpha": 0.1, "inner": {"rate": 1}, "model": {"n_layer": 3}}
    assert from_mapping(Toy, data) == Toy(sizes=(512,), alpha=0.1, inner=Inner(rate=1.0),
                                          model={"n_layer": 3})
    with pytest.raises(ConfigError, match="sizes: expected tuple"):
        from_mapping(Toy, {"sizes": 512})


def test_merge_changes_nested_fields_and_keeps_the_rest():
    cfg = merge(Toy(inner=Inner(units=8)), {"inner": {"rate": 0.25}, "model": {"bias": True}})
    assert cfg.inner == Inner(units=8, rate=0.25) and cfg.model == {"n_layer": 2, "bias": True}


def test_nested_override_keys_cannot_also_be_values():
    assert parse_overrides(["inner.units=1", "alpha=2"]) == {"inner": {"units": "1"}, "alpha": "2"}
    with pytest.raises(ConfigError, match="also set to a value"):
        parse_overrides(["inner=1", "inner.units=2"])


def test_config_files_name_their_experiment_and_their_quick_form(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('experiment = "ca3.toy"\n[config]\nsizes = [1, 2]\n[quick]\nsizes = [1]\n')
    spec = read_config_file(good)
    assert spec.experiment == "ca3.toy" and spec.config == {"sizes": [1, 2]}
    for text, message in (
        ('[config]\n[quick]\n', "experiment: expected '<part>.<experiment>'"),
        ('experiment = "ca3.toy"\n[config]\n', r"\[quick\]: every config file"),
        ('experiment = "ca3.toy"\nsizes = 1\n[quick]\n', "unknown top-level key 'sizes'"),
        ('experiment = "ca3.toy\n', "is not valid TOML"),
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_config_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "none.toml")


def test_only_frozen_dataclasses_are_configs():
    @dataclass
    class Loose:
        n: int = 1

    with pytest.raises(TypeError, match="must be a frozen dataclass"):
        check_config_class(Loose)
    check_config_class(Toy)
