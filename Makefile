# Conveyor's menu. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export GX_ANALYTICS_ENABLED ?= false

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# The environment: a venv with uv inside it, then the locked dependencies, compiled to bytecode
# once here: where PYTHONDONTWRITEBYTECODE is set (this machine sets it) no import can cache its
# bytecode, and every process compiled Prefect, MLflow and GX again (benchmarks/bench_imports.py).
# Then Prefect's empty database and MLflow's empty store, which every new Prefect home, stack and
# embedded store starts from a copy of (conveyor/prefect_database.py: about 5 s a first start
# saved; conveyor/mlflow_database.py: about 1 s).
$(BIN)/conveyor: pyproject.toml uv.lock Makefile
	@test -x $(UV) || ($(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --disable-pip-version-check uv)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --frozen --quiet --compile-bytecode
	$(BIN)/python -m conveyor.prefect_database
	$(BIN)/python -m conveyor.mlflow_database
	@touch $@

.PHONY: install
install: $(BIN)/conveyor ## Create .venv with the locked dependencies

data/.written: $(BIN)/conveyor conveyor/examples.py
	$(BIN)/python -c "from pathlib import Path; from conveyor.examples import write_examples; write_examples(Path('data'))"
	@touch $@

.PHONY: demo
demo: data/.written ## Train the bundled example pipelines end to end
	$(BIN)/conveyor train pipelines/*.yaml
	@for name in $$(ls pipelines/*.yaml | xargs -n1 basename | sed 's/.yaml$$//'); do $(BIN)/conveyor show $$name; echo; done

.PHONY: up
up: data/.written ## Start Prefect + MLflow servers and a worker on 127.0.0.1, deploy every flow
	$(BIN)/conveyor up

.PHONY: down
down: ## Stop exactly what `make up` started
	$(BIN)/conveyor down

.PHONY: test
# pytest-xdist: each worker takes whole modules (their module-scoped trained stores are built once),
# the real-data corpus one table at a time (`-m ""` lifts pyproject's `not realdata`);
# `make test TEST_WORKERS=1` runs them one after another.
TEST_WORKERS ?= 2
test: $(BIN)/conveyor ## Run the whole test suite, the real-data corpus included (TEST_WORKERS=2 processes)
	$(BIN)/pytest -m "" -n $(TEST_WORKERS) --dist loadfile

.PHONY: test-realdata
test-realdata: $(BIN)/conveyor ## The real-data corpus only (34 public tables, TEST_WORKERS processes, each table trained where its test runs)
	$(BIN)/pytest -m realdata -n $(TEST_WORKERS) --dist load

.PHONY: test-fast
test-fast: $(BIN)/conveyor ## Unit tests only
	$(BIN)/pytest tests/unit

.PHONY: lint
lint: $(BIN)/conveyor ## ruff and mypy
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

.PHONY: bench
bench: $(BIN)/conveyor ## Run the benchmarks (results in benchmarks/results/)
	$(BIN)/python benchmarks/run.py

.PHONY: census
census: $(BIN)/conveyor ## Where make test's CPU goes, by kind of process and by test module (psutil samples)
	$(BIN)/python benchmarks/suite_census.py -- $(MAKE) test

.PHONY: clean
clean: ## Remove the local stores (.conveyor/) and generated data
	rm -rf .conveyor data
