# One entry point for developers and CI. Everything installs from pyproject.toml into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint typecheck dev bench soak sam-validate sam-build clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	# each handler is its own module named app: check them one at a time
	for f in functions/*/app.py; do $(BIN)/mypy --strict --ignore-missing-imports --follow-imports=silent $$f || exit 1; done

## make test: lint, type-check and run the whole suite (end-to-end included).
test: lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadfile

## make test-fast: the suite without the slower end-to-end tests, for iterating.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m 'not e2e and not slow'

dev: $(STAMP)
	$(BIN)/python -m engine.local

bench: $(STAMP)
	$(BIN)/python bench/bulk.py

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
