# Two entry points (README quick start): `make book` builds the book on the embedded synthetic
# data; `make test` runs the test suite (it builds and checks the book too). Both set up what they
# need: a virtual environment in .venv from the pinned requirements.txt (pip, Python 3.11).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup book test test-fast test-integration test-book chromium sync-notebooks clean benchmark

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@rm -f $(VENV)/.installed-*; touch $@

# The main job: synthetic data → prepared dataset → cached tiny runs → every chapter executed →
# _build/html. Fails on any cell error or Sphinx warning.
book: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book: $(abspath _build/html/index.html)"

# Headless Chromium from Debian's packages, for the browser tests (no download at test time).
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: setup chromium
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -ra

# The tiers (tests/conftest.py sets them from what each test uses): unit, integration, book, browser.
# test-fast: the unit tier (no generated data, no training, no book, no browser).
test-fast: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -ra -m unit

test-integration: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -ra -m integration

test-book: setup chromium
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -ra -m "book or browser"

sync-notebooks: setup
	$(BIN)/python scripts/sync_setup_cells.py

benchmark: setup
	$(BIN)/python benchmarks/train_step.py --device cpu --size 64

clean:
	rm -rf _build .cache/book
