# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The torch pin only drives this install; the package itself asks for torch>=2.4.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= all
DELTARNN_DATA ?= $(abspath ../shared/data)
export DELTARNN_DATA

BIN := $(VENV)/bin
LINT_PATHS := $(wildcard src tests benchmarks experiments examples docs)
STAMP := $(VENV)/.installed

.PHONY: demo test lint format docs bench gpu-compile clean

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
	$(MAKE) --no-print-directory docs

# The documentation site (equations, API reference, tutorial) into build/docs; any Sphinx
# warning (a broken docstring, a dangling reference) fails the build. Offline: no intersphinx.
docs: $(STAMP)
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs build/docs

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

format: $(STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

# CPU timing sweep (minutes, not a test); writes benchmarks/results/
bench: $(STAMP)
	$(BIN)/python benchmarks/cpu_occupancy_sweep.py --out benchmarks/results/cpu_occupancy_sweep --real

# Every Triton kernel variant the GPU paths launch, compiled for sm_90 without a GPU: with the
# installed Triton, then with triton==3.6.0 (the GPU machine's version) in its own cached venv.
TRITON_OLD ?= 3.6.0
VENV_TRITON_OLD := .venv-triton$(TRITON_OLD)
$(VENV_TRITON_OLD)/.installed:
	test -x $(VENV_TRITON_OLD)/bin/python || $(PYTHON) -m venv $(VENV_TRITON_OLD)
	$(VENV_TRITON_OLD)/bin/python -m pip install -q "triton==$(TRITON_OLD)"
	touch $@

gpu-compile: $(STAMP) $(VENV_TRITON_OLD)/.installed
	TRITON_INTERPRET=1 $(BIN)/python benchmarks/gpu_compile_check.py --record-only build/gpu_launches.json
	$(BIN)/python benchmarks/gpu_compile_check.py --launches build/gpu_launches.json --out build/gpu_compile
	$(VENV_TRITON_OLD)/bin/python benchmarks/gpu_compile_check.py --launches build/gpu_launches.json --out build/gpu_compile_triton$(TRITON_OLD)

clean:
	rm -rf $(VENV) $(VENV_TRITON_OLD) build src/*.egg-info .pytest_cache
