# Two front doors: `make run` serves on the embedded default (./data + SQLite),
# `make test` runs lint, type checks and the whole test suite. Each creates .venv itself.
# `make run` installs only what the server needs; the test tools come with `make test`.
# Both pin every version to constraints.txt (refresh it with `make constraints`).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := constraints.txt
PIP_INSTALL := $(BIN)/pip install -q -c $(CONSTRAINTS)
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# Real-client interop tests run tus-js-client in Node: npm dependencies pinned by the lock file.
INTEROP := tests/interop
NODE_STAMP := $(INTEROP)/node_modules/.installed
# `make constraints` resolves in a throwaway venv, so nothing stray in .venv gets pinned.
SCRATCH := $(or $(TMPDIR),/tmp)/tusserver-constraints-venv

.PHONY: run test lint venv clean interop-deps constraints services

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP_INSTALL) -e '.[test]'
	touch $@

venv: $(TEST_STAMP)

$(NODE_STAMP): $(INTEROP)/package.json $(INTEROP)/package-lock.json
	cd $(INTEROP) && npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

interop-deps: $(NODE_STAMP)

# Debian's PostgreSQL and Chromium for the tests that start them; installed only when missing.
services:
	sh tests/install-services.sh

run: $(RUN_STAMP)
	$(BIN)/tusserver $(ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check tusserver tests conformance hooks
	$(BIN)/ruff format --check tusserver tests conformance hooks
	$(BIN)/mypy tusserver

# --durations: the slowest tests are listed in every run, so a suite that grows slow shows.
test: lint services $(NODE_STAMP)
	$(BIN)/pytest -q --durations=15 tests

# Re-pin: the newest versions pyproject.toml allows (runtime and test), keeping the header.
constraints:
	rm -rf $(SCRATCH)
	$(PY) -m venv $(SCRATCH)
	$(SCRATCH)/bin/pip install -q --upgrade pip
	$(SCRATCH)/bin/pip install -q '.[test]'
	{ grep '^#' $(CONSTRAINTS); $(SCRATCH)/bin/pip freeze --exclude tusserver; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(SCRATCH)

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache $(INTEROP)/node_modules
