PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help install test test-all lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install:  ## create .venv and install nwtrain with its dev extras
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'

test:  ## run the default test suite (slow tests excluded)
	$(BIN)/pytest -q

test-all:  ## run every test, slow ones included
	$(BIN)/pytest -q -m ''

lint:  ## ruff check
	$(BIN)/ruff check nwtrain tests

clean:  ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
