# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The torch pin only drives this install; the package itself asks for torch>=2.4.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all
DELTARNN_DATA ?= $(abspath ../shared/data)
export DELTARNN_DATA

BIN := $(VENV)/bin
LINT_PATHS := $(wildcard src tests benchmarks experiments examples)
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m deltarnn demo

test: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

format: $(STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

# CPU timing sweep (minutes, not a test); writes benchmarks/results/
bench: $(STAMP)
	$(BIN)/python benchmarks/cpu_occupancy_sweep.py --out benchmarks/results/cpu_occupancy_sweep --real

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
