"""The command turns only Engram's own errors into one line; a bug keeps its traceback."""

from __future__ import annotations

import pytest

from engram import cli
from engram.ca3.experiments import demo
from engram.errors import ConfigError, EngramError


def test_a_deep_type_error_is_not_swallowed(monkeypatch, tmp_path):
    def broken(cfg, folder):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(demo, "run", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        cli.main(["demo", "--out", str(tmp_path)])


def test_a_deep_value_error_is_not_swallowed(monkeypatch, tmp_path):
    def broken(cfg, folder):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(demo, "run", broken)
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["demo", "--out", str(tmp_path)])


def test_an_engram_error_is_one_line_with_its_exit_status(monkeypatch, tmp_path, capsys):
    class UnusableStoreError(EngramError):
        exit_status = 1

    def refuse(cfg, folder):
        raise UnusableStoreError("store.db: damaged; run `engram store repair`")

    monkeypatch.setattr(demo, "run", refuse)
    assert cli.main(["demo", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "engram demo: error: store.db: damaged; run `engram store repair`\n"


def test_run_without_an_experiment_is_a_usage_error(capsys):
    assert cli.main(["run"]) == 2
    assert "expected an experiment name or --config" in capsys.readouterr().err


def test_config_errors_are_value_errors_for_older_callers():
    assert issubclass(ConfigError, EngramError) and issubclass(ConfigError, ValueError)
    assert ConfigError.exit_status == 2
