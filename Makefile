# Two front doors: `make run` serves on the embedded default (./data + SQLite),
# `make test` runs lint, type checks and the whole test suite. Each creates .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Real-client interop tests run tus-js-client in Node: npm dependencies pinned by the lock file.
INTEROP := tests/interop
NODE_STAMP := $(INTEROP)/node_modules/.installed

.PHONY: run test lint venv clean interop-deps

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

$(NODE_STAMP): $(INTEROP)/package.json $(INTEROP)/package-lock.json
	cd $(INTEROP) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

interop-deps: $(NODE_STAMP)

run: $(STAMP)
	$(BIN)/tusserver $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check tusserver tests conformance hooks
	$(BIN)/ruff format --check tusserver tests conformance hooks
	$(BIN)/mypy tusserver

test: lint $(NODE_STAMP)
	$(BIN)/pytest -q tests

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache $(INTEROP)/node_modules
