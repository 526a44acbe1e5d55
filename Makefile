# Two entry points for a fresh clone: `make demo` (the core only) and `make test` (everything, with dev tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the CPU wheel every machine has; the library itself accepts a range (pyproject.toml)
TORCH := torch==2.13.0

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)

$(VENV)/.core: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.core

.PHONY: install demo test lint bench
install: $(VENV)/.dev

demo: $(VENV)/.core
	$(BIN)/engram demo

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/pytest -n auto  # one worker per core (pytest-xdist)

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/run_all.py
