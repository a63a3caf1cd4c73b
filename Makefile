# The README's first commands. Each creates the environment if missing.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/demo.yaml
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint bench clean-demo

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/emotalker demo --config $(CONFIG)

test:
	@WITH_BROWSER=1 bash scripts/setup.sh
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(PY) -m benchmarks.run

clean-demo:
	rm -rf data/demo
