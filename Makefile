# The two commands: `make demo` and `make test`. Both bootstrap whatever is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

# Tests run Qt offscreen; `make demo` must not, or the desktop app would open where no one sees it.
test pytest bundle: export QT_QPA_PLATFORM ?= offscreen
export QTWEBENGINE_DISABLE_SANDBOX ?= 1

.PHONY: setup test lint typecheck pytest demo bench bundle lock upgrade clean

setup:
	@bash scripts/bootstrap.sh

lint: setup
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# Line and branch coverage of the whole suite; the floor in pyproject.toml ([tool.coverage.report]
# fail_under) only ever rises (docs/coverage.md).
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

# The demo server runs with WEBHOST_ENV=development (a generated secret, no WEBHOST_SECRET_KEY needed).
demo: setup
	WEBHOST_ENV=development $(PY) -m scripts.demo $(if $(HEADLESS),--headless,)

# One-folder desktop bundle in dist/webhost-desktop/ (run dist/webhost-desktop/webhost-desktop).
bundle: setup
	$(VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/webhost-desktop.spec
	@echo "bundle: dist/webhost-desktop/webhost-desktop (try --self-test)"

bench: setup
	$(PY) -m bench.storage_bench

# Refresh uv.lock and requirements/*.txt after changing dependencies in pyproject.toml;
# `make upgrade` moves every pin to its newest allowed release (docs/dependencies.md).
lock:
	bash scripts/lock.sh

upgrade:
	bash scripts/lock.sh --upgrade

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
