# One command sets up and runs the pipeline (`make repro`), one sets up and runs the tests
# (`make test`). Setup is a virtual environment in .venv, rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup repro test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

repro: setup
	dvc repro
	dvc metrics show

test: setup
	pytest

bench: setup
	python -m benchmarks

lint: setup
	ruff check .
	ruff format --check .

clean:
	rm -rf $(VENV)
