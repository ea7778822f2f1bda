# The two commands: `make demo` and `make test`. Both bootstrap whatever is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

export QT_QPA_PLATFORM ?= offscreen
export QTWEBENGINE_DISABLE_SANDBOX ?= 1

.PHONY: setup test lint typecheck pytest demo bench clean

setup:
	@bash scripts/bootstrap.sh

lint: setup
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m scripts.demo $(if $(HEADLESS),--headless,)

bench: setup
	$(PY) -m bench.storage_bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
