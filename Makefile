# One entry point for developers and CI. Everything installs from pyproject.toml into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint typecheck dev bench bench-instructions bench-layer soak mutants sam-validate sam-build clean

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
	$(BIN)/python -m pytest -n 2 --dist worksteal

## make test-fast: the suite without the slower end-to-end tests, for iterating.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal -m 'not e2e and not slow'

dev: $(STAMP)
	$(BIN)/python -m engine.entrypoints.local

bench: $(STAMP)
	$(BIN)/python bench/bulk.py

## make bench-instructions: instructions per evaluation (quiet, entry, exit) and per handler
## import (against a bare numpy + pydantic import), counted by
## valgrind, which the machine's load does not move; BENCH_ROOT=../other-checkout measures
## another commit's engine. The last line is JSON. Needs valgrind (apt-get install valgrind).
BENCH_ROOT ?= .
bench-instructions: $(STAMP)
	$(BIN)/python bench/instructions.py --root $(BENCH_ROOT)

## make soak: the randomized idempotency trials of tests/integration/test_idempotency.py for
## longer (SOAK_TRIALS, SOAK_SECONDS: whichever comes first); the last line is JSON, and
## duplicates and mismatches must be 0 (the exit status is 1 otherwise).
SOAK_TRIALS ?= 20000
SOAK_SECONDS ?= 3600
soak: $(STAMP)
	$(BIN)/python bench/soak.py --trials $(SOAK_TRIALS) --seconds $(SOAK_SECONDS)

## make mutants: the mutation check (bench/mutants.py): each named wrong change of
## bench/mutants.toml, applied alone to a temporary copy of the tree, must fail its tests.
## The last line is JSON; the exit status is 1 unless every mutant was killed.
## MUTANTS=name-part runs only those.
MUTANTS ?=
mutants: $(STAMP)
	$(BIN)/python bench/mutants.py $(if $(MUTANTS),--only $(MUTANTS))

clean:
	rm -rf $(VENV) .venv-yardstick .aws-sam .pytest_cache .mypy_cache .ruff_cache

## make sam-validate / sam-build: the SAM CLI in its own virtualenv, .venv-sam, made from a
## Python 3.12: sam build checks that the functions' runtime (python3.12) is on PATH, and the
## layer's Makefile compiles bytecode with it. SAM_PYTHON=/path/to/python3.12 picks one.
SAM_VENV := .venv-sam
SAM_CLI_VERSION := 1.170.0
SAM_STAMP := $(SAM_VENV)/.installed-$(SAM_CLI_VERSION)
SAM_PYTHON ?= $(shell for p in python3.12 $$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12; do "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
SAM_ENV := PATH="$(CURDIR)/$(SAM_VENV)/bin:$$PATH" SAM_CLI_TELEMETRY=0
# Lambda's limit on a function with all its layers, unzipped: 250 MB (MiB) in bytes.
LAMBDA_UNZIPPED_LIMIT := 262144000

$(SAM_STAMP):
	@test -n "$(SAM_PYTHON)" || { echo "sam needs a Python 3.12 (the Lambda runtime); set SAM_PYTHON=/path/to/python3.12" >&2; exit 1; }
	rm -rf $(SAM_VENV)
	$(SAM_PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	touch $@

sam-validate: $(SAM_STAMP)
	$(SAM_ENV) $(SAM_VENV)/bin/sam validate --lint

## make sam-build: build into .aws-sam/build, then report each function's unzipped size with the
## engine layer and fail if one is over Lambda's limit.
sam-build: $(SAM_STAMP)
	$(SAM_ENV) $(SAM_VENV)/bin/sam build

## make bench-layer: handler import time against the built layer on Python 3.12 (after sam-build).
bench-layer: sam-build
	$(SAM_VENV)/bin/python bench/layer_import.py
	@cd .aws-sam/build && layer=$$(du -sb EngineLayer | cut -f1) && status=0 && \
	echo "unzipped sizes (limit for a function with its layers: 250 MiB):" && \
	for d in */; do d=$${d%/}; size=$$(du -sb "$$d" | cut -f1); \
		if [ "$$d" = EngineLayer ]; then total=$$size; else total=$$((size + layer)); fi; \
		awk -v n="$$d" -v s="$$size" -v t="$$total" \
			'BEGIN { printf "  %-26s %8.2f MiB   with the layer %8.2f MiB\n", n, s / 1048576, t / 1048576 }'; \
		[ "$$total" -le $(LAMBDA_UNZIPPED_LIMIT) ] || { echo "  $$d is over Lambda's limit" >&2; status=1; }; \
	done; exit $$status
