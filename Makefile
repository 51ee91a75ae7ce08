# The one front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE := .cache
KAFKA_LIBS := $(CACHE)/kafka/libs
COMPOSE_SPEC := $(CACHE)/bin/compose-spec
COMPOSE_GO_VERSION := v2.16.2
PACKAGES := -e libs/common -e services/api -e services/processor -e services/query -e tools/stack -e tools/bench
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: constraints.txt requirements-dev.txt libs/common/pyproject.toml services/*/pyproject.toml tools/stack/pyproject.toml tools/bench/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-dev.txt $(PACKAGES)
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv with the services, the stack runner and the dev tools (pinned)

$(KAFKA_LIBS)/.fetched: infra/kafka/pom.xml
	@command -v mvn >/dev/null || { echo "Maven is needed once to fetch Kafka's jars: apt-get install maven"; exit 1; }
	rm -rf $(KAFKA_LIBS)
	mvn -q -B -Dstyle.color=never -f infra/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS) -DincludeScope=runtime
	touch $@

.PHONY: kafka-jars
kafka-jars: $(KAFKA_LIBS)/.fetched ## Fetch Apache Kafka's jars from Maven Central into .cache (once)

.PHONY: redis-server
redis-server: ## Install Debian's redis-server if it is missing (needs root)
	@if ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing redis-server from Debian's packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else echo "redis-server is missing: install Debian's package with 'sudo apt-get install redis-server'"; exit 1; fi; \
	fi
	@command -v java >/dev/null || { echo "java is missing: install a Java 17+ runtime (apt-get install openjdk-17-jre-headless)"; exit 1; }

$(COMPOSE_SPEC):
	@command -v go >/dev/null || { echo "go is needed to build the Compose Specification's loader"; exit 1; }
	mkdir -p $(CACHE)/gobin $(CACHE)/bin
	GOBIN=$(CURDIR)/$(CACHE)/gobin go install github.com/compose-spec/compose-go/v2/cmd@$(COMPOSE_GO_VERSION)
	mv $(CACHE)/gobin/cmd $@

.PHONY: tools
tools: $(COMPOSE_SPEC) ## Build the Compose Specification's loader for the static checks

.PHONY: deps
deps: install kafka-jars redis-server ## Everything `up` and `test` need

.PHONY: up
up: deps ## Run Kafka, Redis, api, processor and query as local processes (Ctrl-C stops all)
	$(BIN)/python -m orders_stack

.PHONY: bench-tools
bench-tools: ## Install wrk and redis-benchmark (Debian's wrk, redis-tools) if missing (needs root)
	@missing=""; command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v redis-benchmark >/dev/null || missing="$$missing redis-tools"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing from Debian's packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "make bench needs Debian's packages:$$missing (sudo apt-get install$$missing)"; exit 1; fi; \
	fi

.PHONY: bench
bench: deps bench-tools ## Benchmark the whole pipeline against the machine's ceilings (ARGS=--quick: under 2 min); report in .reports/bench
	$(BIN)/python -m orders_bench $(ARGS)

.PHONY: bench-quick
bench-quick: ## make bench ARGS=--quick
	$(MAKE) bench ARGS="--quick $(ARGS)"

.PHONY: watch-orders
watch-orders: kafka-jars ## Print every event on the orders topic: time, key, value (Ctrl-C stops)
	java -Dlog4j2.level=warn -cp '$(KAFKA_LIBS)/*' org.apache.kafka.tools.consumer.ConsoleConsumer \
	  --bootstrap-server $${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$${KAFKA_PORT:-9092}} --topic $${KAFKA_ORDERS_TOPIC:-orders} \
	  --from-beginning --property print.key=true --property print.timestamp=true

.PHONY: lint
lint: install ## ruff (lint and format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs/common/src services/api/src services/processor/src services/query/src tools/stack/src tools/bench/src
	$(BIN)/mypy conftest.py libs/common/tests services/api/tests services/processor/tests services/query/tests tools/bench/tests tools/stack/tests tests

.PHONY: fmt
fmt: install ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: test
test: deps tools lint ## Lint, then every test: unit, integration and e2e on real Kafka and Redis
	COMPOSE_SPEC=$(CURDIR)/$(COMPOSE_SPEC) $(BIN)/pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: install ## Only the tests that need no Kafka, Redis or linters
	$(BIN)/pytest -m "not kafka and not redis and not e2e and not static and not faults" $(PYTEST_ARGS)

.PHONY: constraints
constraints: install ## Re-pin constraints.txt from what .venv holds
	{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.tmp && mv constraints.tmp constraints.txt

.PHONY: clean
clean: ## Remove the local data (Kafka, Redis, logs); keeps the caches
	rm -rf .data
