# The two commands of the README: `make demo` runs rotd against local servers, `make test`
# runs every check. Both create the virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

lint: install
	$(BIN)/ruff format --check rotd tests
	$(BIN)/ruff check rotd tests
	$(BIN)/mypy

# The suite waits on servers far more than it computes, so four workers share the two cores;
# the fault suite runs alone afterwards, since it times real processes and prints its totals.
test: lint
	$(BIN)/pytest -n 4 --dist load --ignore=tests/faults
	$(BIN)/pytest tests/faults

demo: install
	$(BIN)/rotd demo

# The benchmark (bench/run.py): `make bench`, or `make bench BENCH_ARGS=--quick` for a smoke
# check. Figures go to bench-results/results.json.
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
