# Two commands for a new user: `make demo` (main job on the embedded synthetic cohort)
# and `make test` (the test suite). Both create .venv and install on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hcc-exp-installed
# A CPU wheel on this machine; elsewhere pip picks the matching build of this version.
TORCH_PIN ?= torch==2.13.0
PYTEST_ARGS ?=

export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: setup demo test test-slow bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/hcc-exp demo

test: setup
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -n 2 -m slow $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/run_all.py

lint: setup
	$(BIN)/ruff check hcc_exp tests benchmarks

clean:
	rm -rf runs data/preprocessed .pytest_cache
