# Two commands do everything: `make demo` and `make test`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The interpreter for .venv: Python 3.11 (pyproject's requires-python). uv finds any 3.11 it knows
# of, or fetches one; without uv, python3.11 must be on PATH. Override: make PYTHON=/path/to/python.
PYTHON ?= 3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
UV := $(shell command -v uv 2>/dev/null)

# Airflow runs from this checkout: metadata DB, logs and config live in git-ignored .airflow/.
export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)

.PHONY: help venv lint format test demo up schema-sql bench lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv with the pinned requirements (uv when available, else venv + pip)

$(STAMP): requirements.txt requirements-dev.txt
ifneq ($(UV),)
	@test -x $(BIN)/python || $(UV) venv --quiet --python $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(UV) pip sync --quiet requirements.txt requirements-dev.txt
else
	@test -x $(BIN)/python || $(if $(filter 3.%,$(PYTHON)),python$(PYTHON),$(PYTHON)) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
endif
	@touch $(STAMP)

lint: $(STAMP) ## ruff (with the Airflow AIR rules) over the whole tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint ## lint, then the whole test suite (starts its own servers; two workers)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

demo: $(STAMP) ## one nightly run end to end on the local AWS stand-in and a SQLite warehouse (DEMO_ARGS="--day ... --count ...")
	$(BIN)/python -m scripts.demo $(DEMO_ARGS)

up: $(STAMP) ## the full stack: local AWS + Airflow UI/REST API on 127.0.0.1:8080 (Ctrl-C stops it)
	$(BIN)/python -m scripts.up

schema-sql: $(STAMP) ## print the SQL a DBA runs to create a pipeline's tables (PIPELINE=summarize_calls [AFTER=version])
	@$(BIN)/python -m scripts.schema_sql $(PIPELINE) $(if $(AFTER),--after $(AFTER))

bench: $(STAMP) ## benchmarks next to naive baselines at 10k/100k/1M records (10-12 min; see docs/performance.md)
	$(BIN)/python -m bench

lock: $(if $(UV),,$(STAMP)) ## re-resolve requirements.in into the fully pinned requirements*.txt
	$(if $(UV),$(UV),$(BIN)/uv) pip compile --quiet --python-version 3.11 --upgrade requirements.in -o requirements.txt
	$(if $(UV),$(UV),$(BIN)/uv) pip compile --quiet --python-version 3.11 --upgrade requirements-dev.in -o requirements-dev.txt

clean: ## remove the venv and the local Airflow home
	rm -rf $(VENV) .airflow
