# aiproxy — every target creates .venv on first use, so a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PROTO_DIR := api/proto
PROTO_FILES := $(wildcard $(PROTO_DIR)/aiproxypb/v1/*.proto)
PYTEST_ARGS ?=

.PHONY: help venv proto proto-check run test bench bench-peers bench-ab bench-logdb lint fmt clean docker-build up down logs bench-bundles

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install aiproxy with dev tools

proto: $(STAMP)  ## regenerate pkg/aiproxypb from api/proto
	$(PY) -m grpc_tools.protoc -I $(PROTO_DIR) --python_out=pkg --pyi_out=pkg --grpc_python_out=pkg $(PROTO_FILES)

proto-check: $(STAMP)  ## fail when the committed stubs drift from the .proto files
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -I $(PROTO_DIR) --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTO_FILES) && \
	for f in $$(cd $$tmp && find . -name '*.py*' -type f); do \
	  cmp -s $$tmp/$$f pkg/$$f || { echo "proto-check: pkg/$$f is stale; run 'make proto'"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "proto-check: stubs up to date"

run: $(STAMP)  ## run the gateway with embedded defaults (REST :8123, gRPC :50051)
	$(BIN)/aiproxy serve

test: $(STAMP)  ## run the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)  ## gateway vs direct-to-upstream latency/throughput table
	$(PY) test/bench/bench_gateway.py

bench-peers: $(STAMP)  ## bench plus LiteLLM's proxy in the same table
	$(PY) test/bench/bench_gateway.py --peers

bench-ab: $(STAMP)  ## paired CPU-per-request A/B: the working tree against REV (default HEAD)
	$(PY) test/bench/bench_ab.py $(or $(REV),HEAD) $(AB_ARGS)

bench-logdb: $(STAMP)  ## log store ingest/search benchmark
	$(PY) test/bench/bench_logdb.py

lint: $(STAMP)  ## ruff check
	$(BIN)/ruff check internal cmd test

# The code keeps its own layout (hanging indents, long lines), not `ruff format`'s, which rewrote most files.
fmt: $(STAMP)  ## apply ruff's lint fixes (import order, pyupgrade)
	$(BIN)/ruff check --fix internal cmd test

clean:  ## remove the venv and everything generated (keeps logs/, bundles/, .env)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .bench build dist
	find . \( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +
	find . -name '*.pyc' -type f -delete

# --- containers: Traefik + Let's Encrypt in front of aiproxy (guide: docs/https.md) ---
COMPOSE ?= docker compose -f deployments/docker-compose.yml --env-file .env
IMAGE   ?= aiproxy:latest

docker-build:  ## build the container image from deployments/Dockerfile
	docker build -f deployments/Dockerfile -t $(IMAGE) .

up:  ## start Traefik + aiproxy over HTTPS (run deployments/scripts/setup-https.sh first)
	@test -f .env || { echo "up: no .env here; run deployments/scripts/setup-https.sh first (docs/https.md)"; exit 1; }
	$(COMPOSE) up -d --build

down:  ## stop and remove the containers (certificates and logs are kept)
	$(COMPOSE) down

logs:  ## follow the Traefik and aiproxy container logs
	$(COMPOSE) logs -f --tail=200

bench-bundles: $(STAMP)  ## bundle create vs tar czf, bundle import rows/s (ROWS=1000000)
	$(PY) test/bench/bench_bundles.py --rows $(or $(ROWS),1000000)
