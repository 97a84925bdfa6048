# Touchpoint: `make run` runs the whole pipeline once on the embedded default; `make test` runs the suite.
# Both set up the virtualenv first (Python 3.11, pinned by constraints.txt); nothing else is needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CUSTOMERS ?= 10000
DAYS ?= 730
# Two workers, one test file each at a time (module fixtures stay in one process): most of a test's time is
# subprocesses (Airflow, dbt) waiting or on one core, so two files at once fit the 2-core budget machine.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup run airflow docs test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/touchpoint generate --if-absent --customers $(CUSTOMERS) --days $(DAYS)
	$(BIN)/touchpoint run

# A local Airflow (api-server, scheduler, dag-processor, triggerer) on the embedded default, until Ctrl-C:
# prints the UI's URL and login. PORT=8081 make airflow to move it; AIRFLOW_ARGS="--unpause" to schedule daily.
PORT ?= 8080
AIRFLOW_ARGS ?=
airflow: $(STAMP)
	$(BIN)/touchpoint airflow --port $(PORT) $(AIRFLOW_ARGS)

# dbt's docs as one static page for the latest run: <home>/artifacts/<as-of>/docs/index.html
docs: $(STAMP)
	$(BIN)/touchpoint docs

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	cd dbt_project && ../$(BIN)/sqlfluff lint models

# The whole pipeline at one scale, full refresh and +1 day, per stage (bench/harness.py): S 10k, M 100k, L 1M.
SCALE ?= S
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python bench/harness.py --scale $(SCALE) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache dbt_project/target
