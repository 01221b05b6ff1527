PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help install test test-all lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install:  ## create .venv and install nwtrain with its dev and sweep extras
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev,sweep]'

test:  ## run the default test suite (slow tests excluded)
	$(BIN)/pytest -q

test-all:  ## run every test, slow ones included
	$(BIN)/pytest -q -m ''

bench:  ## training speed against snnTorch and SpikingJelly (installs the bench extra)
	$(BIN)/pip install -e '.[bench]'
	$(BIN)/python bench/train_speed.py

lint:  ## ruff check
	$(BIN)/ruff check nwtrain tests

clean:  ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
