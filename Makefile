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
JAEGER := $(CACHE)/bin/jaeger
PROMTOOL := $(CACHE)/bin/promtool
HYDRA := $(CACHE)/bin/hydra
HELM := $(CACHE)/bin/helm
KUBECHECK := $(CACHE)/bin/kubecheck
# The AsyncAPI specification's JSON Schema, from the @asyncapi/specs npm package (static tests).
ASYNCAPI_SPECS_VERSION := 6.11.1
ASYNCAPI_SPECS := $(CACHE)/asyncapi-specs
PACKAGES := -e libs/contract -e libs/runtime -e libs/readmodel -e libs/kafka -e libs/web -e services/api -e services/processor -e services/query -e tools/stack -e tools/bench -e examples/notifier
CHROMIUM ?= /usr/bin/chromium
# Where `make up` (orders_stack) keeps its data; every process logs to a file under logs/.
STACK_LOGS := .data/stack/logs

# Debian's packages a goal needs, as command=package: each is installed only when its command is
# missing; Maven only until Kafka's jars are fetched, Go only until the compose loader is built.
UP_PACKAGES := redis-server=redis-server nginx=nginx-light java=default-jre-headless $(if $(wildcard $(KAFKA_LIBS)/.fetched),,mvn=maven)
TEST_PACKAGES := $(UP_PACKAGES) $(if $(and $(wildcard $(COMPOSE_SPEC)),$(wildcard $(HYDRA)),$(wildcard $(JAEGER)),$(wildcard $(PROMTOOL))),,go=golang-go) \
  $(if $(wildcard $(HYDRA)),,gcc=gcc) $(CHROMIUM)=chromium \
  $(if $(wildcard $(ASYNCAPI_SPECS)/.fetched-$(ASYNCAPI_SPECS_VERSION)),,npm=npm)

# $(call debian-packages,command=package ...): installs the missing ones from Debian's packages
# when run as root; otherwise stops, naming the one command that installs them all.
define debian-packages
@missing=""; for need in $(1); do command -v "$${need%=*}" >/dev/null || missing="$$missing $${need##*=}"; done; \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
    echo "installing from Debian's packages:$$missing (apt-get, a minute or two)"; \
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
  else \
    echo "missing Debian's packages:$$missing (make installs them when run as root). Run:"; \
    echo "  sudo apt-get install -y$$missing"; \
    exit 1; \
  fi; \
fi
endef
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: constraints.txt requirements-dev.txt libs/*/pyproject.toml services/*/pyproject.toml tools/stack/pyproject.toml tools/bench/pyproject.toml examples/notifier/pyproject.toml
	@echo "creating $(VENV): pip installs the pinned packages and ours (a few minutes the first time)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-dev.txt $(PACKAGES)
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create .venv with the services, the stack runner and the dev tools (pinned)

$(KAFKA_LIBS)/.fetched: infra/kafka/pom.xml
	$(call debian-packages,mvn=maven)
	@echo "fetching Apache Kafka's jars from Maven Central into $(KAFKA_LIBS) with Maven (once, about 30 s)"
	rm -rf $(KAFKA_LIBS)
	mvn -q -B -Dstyle.color=never -f infra/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS) -DincludeScope=runtime
	touch $@

.PHONY: kafka-jars
kafka-jars: $(KAFKA_LIBS)/.fetched ## Fetch Apache Kafka's jars from Maven Central into .cache (once)

.PHONY: up-packages
up-packages: ## Install what `make up` needs from Debian's packages if missing: redis-server, nginx, Java, Maven (root; else names the command)
	$(call debian-packages,$(UP_PACKAGES))

.PHONY: test-packages
test-packages: ## The same for `make test`: also Go (builds the compose loader) and Chromium (browser tests)
	$(call debian-packages,$(TEST_PACKAGES))

$(COMPOSE_SPEC):
	$(call debian-packages,go=golang-go)
	@echo "building the Compose Specification's loader (compose-go $(COMPOSE_GO_VERSION)) from the Go module proxy (once, a minute or two)"
	mkdir -p $(CACHE)/gobin $(CACHE)/bin
	GOBIN=$(CURDIR)/$(CACHE)/gobin go install github.com/compose-spec/compose-go/v2/cmd@$(COMPOSE_GO_VERSION)
	mv $(CACHE)/gobin/cmd $@

# Go tools with a module of their own under infra/ (go.mod pins the version, go.sum the hashes).
$(JAEGER): infra/jaeger/go.mod infra/jaeger/go.sum
	$(call debian-packages,go=golang-go)
	@echo "building Jaeger from the Go module proxy into $@ (once, about 4 minutes on 2 cores)"
	mkdir -p $(CACHE)/bin
	cd infra/jaeger && go build -mod=mod -o $(CURDIR)/$@ github.com/jaegertracing/jaeger/cmd/jaeger

$(PROMTOOL): infra/promtool/go.mod infra/promtool/go.sum
	$(call debian-packages,go=golang-go)
	@echo "building promtool from the Go module proxy into $@ (once, about 4 minutes on 2 cores)"
	mkdir -p $(CACHE)/bin
	cd infra/promtool && go build -mod=mod -o $(CURDIR)/$@ github.com/prometheus/prometheus/cmd/promtool

.PHONY: jaeger
jaeger: $(JAEGER) ## Build Jaeger (all-in-one, for TRACING=1) from the Go module proxy into .cache/bin (minutes, once)

.PHONY: promtool
promtool: $(PROMTOOL) ## Build promtool (checks the alert rules) into .cache/bin (minutes, once)

# Ory Hydra, the OpenID Connect provider of AUTH_MODE=oidc: its own Go module (infra/hydra, pinned in go.sum),
# with its in-memory store (sqlite tags, cgo).
$(HYDRA): infra/hydra/go.mod infra/hydra/go.sum
	$(call debian-packages,go=golang-go gcc=gcc)
	@echo "building Ory Hydra from the Go module proxy into $@ (once, about 2 minutes on 2 cores)"
	mkdir -p $(CACHE)/bin
	cd infra/hydra && go build -mod=mod -tags sqlite,sqlite_omit_load_extension -o $(CURDIR)/$@ github.com/ory/hydra/v2

.PHONY: hydra
hydra: $(HYDRA) ## Build Ory Hydra (the local OpenID Connect provider) into .cache/bin

# Helm (lints and renders deploy/helm/orders) and kubecheck (decodes the render strictly into the
# Kubernetes API types): Go modules of their own, infra/helm and infra/kubecheck.
$(HELM): infra/helm/go.mod infra/helm/go.sum
	$(call debian-packages,go=golang-go)
	mkdir -p $(CACHE)/bin
	@echo "building Helm (helm.sh/helm/v4/cmd/helm, pinned in infra/helm) into $@: about 2 minutes, once"
	cd infra/helm && go build -mod=mod -o $(CURDIR)/$@ helm.sh/helm/v4/cmd/helm

$(KUBECHECK): infra/kubecheck/go.mod infra/kubecheck/go.sum infra/kubecheck/main.go
	$(call debian-packages,go=golang-go)
	mkdir -p $(CACHE)/bin
	cd infra/kubecheck && go build -mod=mod -o $(CURDIR)/$@ .

.PHONY: helm
helm: $(HELM) ## Build Helm (lints and renders the chart under deploy/helm) into .cache/bin (about 2 min, once)

.PHONY: kubecheck
kubecheck: $(KUBECHECK) ## Build kubecheck (decodes rendered manifests strictly into the Kubernetes API types) into .cache/bin

$(ASYNCAPI_SPECS)/.fetched-$(ASYNCAPI_SPECS_VERSION):
	$(call debian-packages,npm=npm)
	@echo "fetching the AsyncAPI specification's JSON Schema (@asyncapi/specs) with npm into $(ASYNCAPI_SPECS) (once, seconds)"
	rm -rf $(ASYNCAPI_SPECS) && mkdir -p $(ASYNCAPI_SPECS)
	npm install --prefix $(ASYNCAPI_SPECS) --no-save --no-audit --no-fund --ignore-scripts @asyncapi/specs@$(ASYNCAPI_SPECS_VERSION)
	touch $@

.PHONY: asyncapi-specs
asyncapi-specs: $(ASYNCAPI_SPECS)/.fetched-$(ASYNCAPI_SPECS_VERSION) ## Fetch the AsyncAPI specification's JSON Schema (npm @asyncapi/specs) into .cache, once

.PHONY: tools
tools: $(COMPOSE_SPEC) $(JAEGER) $(PROMTOOL) $(HYDRA) $(HELM) $(KUBECHECK) asyncapi-specs ## Build the Compose loader, Jaeger, promtool, Ory Hydra, Helm and kubecheck, fetch the AsyncAPI schema: for the tests

.PHONY: deps
deps: up-packages install kafka-jars ## Everything `up` needs (and `test`, with test-packages and tools)

.PHONY: up
up: deps $(if $(filter-out 0,$(TRACING)),$(JAEGER)) $(if $(filter oidc,$(AUTH_MODE)),$(HYDRA)) ## Run Kafka, Redis, api, processor, query and the gateway (nginx, :5000) as local processes (TRACING=1: and Jaeger; AUTH_MODE=oidc: and Ory Hydra; KAFKA_BROKERS=3: a three-node Kafka cluster; REDIS_CLUSTER=1: a six-node Redis Cluster; Ctrl-C stops all)
	TRACING=$(TRACING) KAFKA_BROKERS=$(or $(KAFKA_BROKERS),1) REDIS_CLUSTER=$(or $(REDIS_CLUSTER),0) $(BIN)/python -m orders_stack

.PHONY: logs
logs: ## Follow the logs of the stack `make up` runs (one file a process under .data/stack/logs; Ctrl-C stops)
	@ls $(STACK_LOGS)/*.log >/dev/null 2>&1 || { echo "no logs in $(STACK_LOGS) yet: start the stack with make up"; exit 1; }
	tail -n 20 -F $(STACK_LOGS)/*.log

.PHONY: config-doc
config-doc: install ## Write docs/configuration.md from the settings classes (a test checks it is current)
	$(BIN)/python -m orders_stack.configdoc

.PHONY: trace
trace: install ## Print an order's trace from Jaeger as a tree with durations: make trace ORDER=<orderId> (stack up with TRACING=1)
	@test -n "$(ORDER)" || { echo "usage: make trace ORDER=<orderId>"; exit 2; }
	$(BIN)/python -m orders_stack.jaeger $(ORDER)

.PHONY: dlq
dlq: install ## Dead letters: list, filter, redrive (make dlq ARGS="--help")
	$(BIN)/python -m orders_processor.commands.dlq $(ARGS)

.PHONY: token
token: install ## Print an access token of the running stack's provider (make up AUTH_MODE=oidc): USER=7 [ROLE=staff|service]
	@$(BIN)/python -m orders_stack.token $(if $(filter command line,$(origin USER)),--user $(USER)) $(if $(ROLE),--role $(ROLE))

.PHONY: rebuild
rebuild: install ## Rebuild the read model from the status topic alone into a fresh Redis or prefix: ARGS="--key-prefix rebuilt:" or ARGS="--redis-url redis://..."
	$(BIN)/python -m orders_processor.commands.rebuild $(ARGS)

.PHONY: bench-tools
bench-tools: ## Install wrk and redis-benchmark (Debian's wrk, redis-tools) if missing (root; else names the command)
	$(call debian-packages,wrk=wrk redis-benchmark=redis-tools)

.PHONY: bench
bench: deps bench-tools $(JAEGER) $(HYDRA) ## Benchmark the whole pipeline against the machine's ceilings (ARGS=--quick: under 2 min); report in .reports/bench
	$(BIN)/python -m orders_bench $(ARGS)

.PHONY: bench-cluster
bench-cluster: deps ## Only the capacity phase: CPU per order on the single-node stack and the cluster profile, and the capacity model (about 4 min; ARGS=--quick: shorter)
	$(BIN)/python -m orders_bench --capacity-only $(ARGS)

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
	$(BIN)/mypy libs/contract/src libs/runtime/src libs/readmodel/src libs/kafka/src libs/web/src services/api/src services/processor/src services/query/src tools/stack/src tools/bench/src examples/notifier/src
	$(BIN)/mypy conftest.py libs/*/tests services/api/tests services/processor/tests services/query/tests tools/bench/tests tools/stack/tests examples/notifier/tests tests

.PHONY: openapi
openapi: install ## Write the committed OpenAPI documents (docs/openapi: api, query, front-door) from the apps
	$(BIN)/python -m orders_stack.openapi_docs

.PHONY: fmt
fmt: install ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

TEST_ENV = COMPOSE_SPEC=$(CURDIR)/$(COMPOSE_SPEC) HELM=$(CURDIR)/$(HELM) KUBECHECK=$(CURDIR)/$(KUBECHECK) PROMTOOL=$(CURDIR)/$(PROMTOOL) JAEGER_BIN=$(CURDIR)/$(JAEGER) CHROMIUM=$(CHROMIUM)

.PHONY: test
test: test-packages deps tools lint ## Lint, then every test: unit, integration, e2e (browser too) on real Kafka and Redis; then the e2e suite again on the cluster profile (test-cluster)
	$(TEST_ENV) $(BIN)/pytest $(PYTEST_ARGS)
	$(TEST_ENV) TEST_PROFILE=cluster $(BIN)/pytest $(or $(CLUSTER_PYTEST_ARGS),tests/e2e)

.PHONY: test-cluster
test-cluster: test-packages deps tools ## Only the e2e suite on the cluster profile: three Kafka brokers, a Redis Cluster of six, three processors, two query instances
	$(TEST_ENV) TEST_PROFILE=cluster $(BIN)/pytest $(or $(CLUSTER_PYTEST_ARGS),tests/e2e)

.PHONY: test-unit
test-unit: install ## Only the tests that need no Kafka, Redis or linters
	$(BIN)/pytest -m "not kafka and not redis and not e2e and not static and not faults" $(PYTEST_ARGS)

.PHONY: constraints
constraints: install ## Re-pin constraints.txt from what .venv holds
	{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^-e'; } > constraints.tmp && mv constraints.tmp constraints.txt

.PHONY: clean
clean: ## Remove the local data (Kafka, Redis, logs); keeps the caches
	rm -rf .data
