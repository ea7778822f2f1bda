# The two commands: `make demo` and `make test`. Both bootstrap whatever is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

# Tests run Qt offscreen; `make demo` must not, or the desktop app would open where no one sees it.
test pytest bundle: export QT_QPA_PLATFORM ?= offscreen
export QTWEBENGINE_DISABLE_SANDBOX ?= 1

.PHONY: setup test lint typecheck pytest demo bench bundle clean

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

# One-folder desktop bundle in dist/webhost-desktop/ (run dist/webhost-desktop/webhost-desktop).
bundle: setup
	$(VENV)/bin/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/webhost-desktop.spec
	@echo "bundle: dist/webhost-desktop/webhost-desktop (try --self-test)"

bench: setup
	$(PY) -m bench.storage_bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist *.egg-info
