"""Every named config under configs/ loads through the registry, says exactly what its
experiment's constructor says, and its quick form runs (seconds)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engram.runs import experiment, from_mapping, quick_config, read_config_file, resolve, start
from engram.runs.config import field_types

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("**/*.toml"))


def test_the_lab_runs_have_their_configs():
    names = {p.relative_to(p.parents[1]).as_posix() for p in CONFIGS}
    for name in ("capacity", "noise", "structure", "dynamics", "modularity", "journal",
                 "validation", "baseline", "demo"):
        assert f"ca3/{name}.toml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_config_loads_and_its_quick_form_runs(path, tmp_path):
    spec = read_config_file(path)
    assert path.parent.name == spec.experiment.split(".")[0]  # configs/<part>/ holds that part's
    exp = experiment(spec.experiment)
    _, cfg = resolve(spec.experiment, config_file=path)
    assert cfg == from_mapping(exp.config, spec.config)
    declared = field_types(exp.config)
    for key, value in spec.config.items():  # every value in the file is the one the run uses
        if not isinstance(value, dict) or not dataclasses.is_dataclass(getattr(cfg, key)):
            assert getattr(cfg, key) == (tuple(value) if isinstance(value, list) and
                                         str(declared[key]).startswith("tuple") else value), key
    _, quick = quick_config(path)
    assert quick != cfg
    folder, result = start(exp, quick, tmp_path)
    assert result.claims, f"{path}: the quick form made no claims"
    assert (folder.path / "report.md").is_file()
