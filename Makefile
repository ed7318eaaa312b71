# One task runner: CI calls these targets, and so do people.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODES  ?= 3
DCS    ?= 1
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint format bench cassandra-fetch cassandra-up cassandra-down cassandra-status clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,cassandra,bench]'
	touch $(STAMP)

run: install
	$(BIN)/downloads serve

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -m "not cassandra and not slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools
	$(BIN)/mypy src tools

format: install
	$(BIN)/ruff format src tests bench tools
	$(BIN)/ruff check --fix src tests bench tools

bench: install
	$(BIN)/python -m bench

cassandra-fetch: install
	$(BIN)/python -m tools.cassandra_cluster fetch

cassandra-up: install
	$(BIN)/python -m tools.cassandra_cluster up --nodes $(NODES) --dcs $(DCS)

cassandra-down: install
	$(BIN)/python -m tools.cassandra_cluster down --nodes $(NODES) --dcs $(DCS)

cassandra-status: install
	$(BIN)/python -m tools.cassandra_cluster status --nodes $(NODES) --dcs $(DCS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
