# Two commands set up everything on a fresh machine:
#   make run    -> .venv + packages (every extra: workflow, tracking, learned), then the default workflow
#   make test   -> .venv + packages (every extra + dev), then the whole test suite (slow integration tests included)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is a local CPU wheel on our machines; a bare `torch` would pull a multi-GB CUDA build. It is
# installed first, so the `learned` extra's torch range is already met and pip keeps it.
TORCH_SPEC ?= torch==2.13.0
CORES ?= $(shell nproc 2>/dev/null || echo 2)
STAMP := $(VENV)/.mibench-installed
PYTEST_ARGS ?=

.PHONY: run test test-fast lint install profiles clean-results bench

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[all,dev]"
	@touch $@

install: $(STAMP)

# MIBENCH_PROGRESS=console: jobs' progress lines (cells done, training steps) on the console while they run
run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" MIBENCH_PROGRESS=console $(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mibench where

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/snakemake --lint --configfile config/config.yaml

clean-results:
	rm -rf results .snakemake

# SLURM (docs/cluster.md): `snakemake --profile slurm` from any directory, and a single-node test cluster (root).
.PHONY: slurm-profile local-slurm local-slurm-stop
slurm-profile: $(STAMP)
	$(BIN)/mibench install-profile --name slurm

local-slurm:
	bash scripts/local-slurm.sh start

local-slurm-stop:
	bash scripts/local-slurm.sh stop
