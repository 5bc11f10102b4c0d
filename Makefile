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

.PHONY: setup demo test test-slow test-cluster cluster-packages bench lint clean

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

# Sweeps on a real single-node Slurm (and PostgreSQL): the fixtures start and stop the daemons,
# these packages must be installed first (Debian / Ubuntu, as root).
CLUSTER_PACKAGES ?= slurm-wlm munge postgresql
cluster-packages:
	@missing=""; for p in $(CLUSTER_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } \
	    || echo "could not install$$missing: the Slurm tests will be skipped with the reason"; \
	fi

test-cluster: setup cluster-packages
	$(BIN)/python -m pytest -m slurm -p no:cacheprovider $(PYTEST_ARGS) tests/sweeps/test_slurm.py

bench: setup
	$(BIN)/python benchmarks/run_all.py

lint: setup
	$(BIN)/ruff check hcc_exp tests benchmarks

clean:
	rm -rf runs data/preprocessed .pytest_cache
