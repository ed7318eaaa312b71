# One task runner: CI calls these targets, and so do people.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODES  ?= 3
DCS    ?= 1
WAN_MS ?= 0
JITTER_MS ?= 0
DC     ?= dc3
PYTEST_ARGS ?=

.PHONY: install system-deps jaeger-fetch run test test-fast lint format bench cassandra-fetch cassandra-up cassandra-down cassandra-status \
	cassandra-wan cassandra-partition cassandra-heal kafka-fetch kafka-up kafka-down kafka-status clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,cassandra,kafka,bench,eventsourcing]'
	touch $(STAMP)

run: install
	$(BIN)/downloads serve

# Debian packages some tests use: faketime (a server whose clock is an hour off), chromium (the
# real browser the admin page is tested in) and prometheus (the server and promtool the alerting
# rules and the dashboard are tested with). Installed when missing and allowed (root with apt-get).
SYSTEM_PACKAGES := faketime chromium prometheus
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && apt-get install -y -qq $$missing; \
		else echo "some tests need Debian packages:$$missing (apt-get install$$missing)" >&2; fi; \
	fi

# Jaeger, the OTLP receiver the trace tests send spans to: built once with the Go toolchain from the
# versions pinned in tools/jaeger/module, into .cache/jaeger (minutes the first time, then nothing).
jaeger-fetch: install
	$(BIN)/python -m tools.jaeger fetch

test: install system-deps
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

# With DCS=3, every connection between regions passes a Toxiproxy proxy: WAN_MS is the round trip
# between two regions (half of it each way), JITTER_MS its jitter.
cassandra-up: install
	$(BIN)/python -m tools.cassandra_cluster up --nodes $(NODES) --dcs $(DCS) --wan-ms $(WAN_MS) --jitter-ms $(JITTER_MS)

cassandra-wan: install
	$(BIN)/python -m tools.cassandra_cluster wan --ms $(WAN_MS) --jitter-ms $(JITTER_MS)

cassandra-partition: install
	$(BIN)/python -m tools.cassandra_cluster partition --dc $(DC)

cassandra-heal: install
	$(BIN)/python -m tools.cassandra_cluster heal

# down and status act on the running cluster(s) unless NODES (and DCS) are given.
SHAPE = $(if $(filter command line environment,$(origin NODES)),--nodes $(NODES) --dcs $(DCS))

cassandra-down: install
	$(BIN)/python -m tools.cassandra_cluster down $(SHAPE)

cassandra-status: install
	$(BIN)/python -m tools.cassandra_cluster status $(SHAPE)

# A local one-node Kafka 4 broker (KRaft) on 127.0.0.1:19092 for the relay; its jars come from Maven
# Central once, into .cache/kafka (the tests fetch and start it themselves when they need it).
kafka-fetch: install
	$(BIN)/python -m tools.kafka_broker fetch

kafka-up: install
	$(BIN)/python -m tools.kafka_broker up

kafka-down: install
	$(BIN)/python -m tools.kafka_broker down

kafka-status: install
	$(BIN)/python -m tools.kafka_broker status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
