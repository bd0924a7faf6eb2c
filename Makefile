# mcp-session-mw — `make` alone lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
CLUSTER_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run test lint format typecheck check docs bench conformance cluster-demo clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

venv: $(BIN)/.installed ## create .venv and install the package with its test extras

run: $(BIN)/.installed ## serve examples/01_sdk_server.py on SQLite at http://$(HOST):$(PORT)/mcp
	$(BIN)/python examples/01_sdk_server.py --host $(HOST) --port $(PORT)

test: $(BIN)/.installed ## run the whole test suite (services that are down are skipped, with the reason)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

conformance: $(BIN)/.installed ## the official MCP conformance suite through the middleware (needs npm)
	$(BIN)/python -m pytest tests/e2e/test_conformance.py $(PYTEST_ARGS)

lint: $(BIN)/.installed ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(BIN)/.installed ## mypy --strict over the package and the tests
	$(BIN)/mypy --strict

check: test lint typecheck docs ## everything CI runs

docs: $(BIN)/.installed ## build the documentation site into site/ (mkdocs --strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(BIN)/.installed ## run the benchmark suite (bench/suite.py, ~10 min; needs the local services) and update docs/benchmarks.md
	$(BIN)/python bench/suite.py

cluster-demo: $(BIN)/.installed ## three instances behind nginx: crash, rolling restart, store outage (CLUSTER_ARGS=--write)
	$(BIN)/python -m cluster $(CLUSTER_ARGS)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mcp_sessions.db site
