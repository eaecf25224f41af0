# One command sets up and runs the pipeline (`make repro`), one sets up and runs the tests
# (`make test`). Setup is a virtual environment in .venv, rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup repro repro-check test lint bench clean

setup: $(VENV)/.installed

# constraints.txt pins the exact versions dvc.lock was made with (see its header).
# GPU=1: TensorFlow's CUDA build (the gpu extra) instead of tensorflow-cpu. Both wheels install
# the same `tensorflow` folder, so both are removed and the CUDA build alone put back; to switch
# an existing environment, `make clean setup GPU=1`.
GPU ?= 0
$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) tools/check_python.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifeq ($(GPU),1)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,gpu]"
	$(BIN)/python -m pip uninstall --quiet -y tensorflow-cpu tensorflow
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt tensorflow
	$(BIN)/python -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))"
else
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
endif
	touch $@

# validate first outside DVC as well: DVC expands params.yaml's YAML aliases whole when it
# reads dvc.yaml, before any stage runs, so only this way does an alias bomb fail fast.
repro: setup
	python -m stages.validate
	dvc repro
	@python -c "import json; m = json.load(open('reports/metrics.json')); \
	print(f\"test accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f} (reports/metrics.json)\")"

# Rerun everything and compare with dvc.lock and the committed metrics (what CI checks).
repro-check: setup
	python -m imgpipe.repro_check

# One worker process per core; a test file's tests stay in one worker, so the fixtures they
# share (a trained model, a copy of the project) are built once per file.
test: setup
	pytest -n auto --dist loadfile

bench: setup
	python -m benchmarks

lint: setup
	ruff check .
	ruff format --check .

clean:
	rm -rf $(VENV)
