# mediagrid — every verb a developer or CI needs. `make run` and `make test` are the two
# that matter; both create or update the virtual environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := node_modules/.bin/buf
# protos/google is vendored for clients; Python gets it from googleapis-common-protos.
PROTO_FILES := $(shell find protos/mediagrid -name '*.proto' 2>/dev/null | sort)
# pgserver/platformdirs warn without it, and our pytest turns warnings into errors.
export XDG_RUNTIME_DIR ?= /tmp/runtime-$(shell id -u)
export PYTHONPATH := $(CURDIR):$(CURDIR)/gen

.PHONY: help install run check test test-faults test-aws protos check-protos ts-client check-ts-client lint ruff mypy buf-lint buf-breaking format bench bench-quick lock docs deploy-check compose-check cfn-lint clean

help:
	@echo "make run           install, then serve every service on 127.0.0.1:50051 (embedded PostgreSQL/S3 if unconfigured)"
	@echo "make test          install, then run the whole test suite (fault scenarios aside)"
	@echo "make test-faults   the fault scenarios: PostgreSQL/S3 outages, SIGTERM, two replicas"
	@echo "make test-aws      the integration tests against real S3/RDS (MEDIAGRID_TEST_AWS_*; skipped without)"
	@echo "make check         mediagrid check: settings, database, migrations, buckets"
	@echo "make protos        regenerate gen/ from protos/ (check-protos: fail if stale)"
	@echo "make ts-client     regenerate and build clients/typescript (check-ts-client: fail if stale)"
	@echo "make lint          buf lint + format check, ruff, mypy (format: fix what can be fixed)"
	@echo "make buf-breaking  fail if protos/ breaks the API at the commit in protos/BREAKING_BASELINE"
	@echo "make deploy-check  validate docker-compose.yml and deploy/aws offline"
	@echo "make docs          regenerate docs/configuration.md from the Settings model"
	@echo "make bench         run benchmarks (BENCH_ARGS=rpc_baseline to pick)"
	@echo "make bench-quick   the same benchmarks and ratios at lower counts (under 3 minutes)"
	@echo "make lock          re-resolve all dependencies into constraints.txt"

$(STAMP): pyproject.toml constraints.txt
	@mkdir -p $(XDG_RUNTIME_DIR) && chmod 700 $(XDG_RUNTIME_DIR)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

$(BUF): package.json
	npm install --silent --no-audit --no-fund
	@touch $(BUF)

# Text logs for a person at a terminal unless MEDIAGRID_LOG_FORMAT says otherwise.
run: install
	MEDIAGRID_LOG_FORMAT=$${MEDIAGRID_LOG_FORMAT:-text} $(BIN)/mediagrid serve all

check: install
	MEDIAGRID_LOG_FORMAT=$${MEDIAGRID_LOG_FORMAT:-text} $(BIN)/mediagrid check

test: install
	@mkdir -p $(XDG_RUNTIME_DIR) && chmod 700 $(XDG_RUNTIME_DIR)
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

# Every test marked `faults` (tests/faults: subprocess suites with PostgreSQL and S3 behind
# fault proxies; stalls elsewhere); -s prints each scenario's counts. `make test` leaves
# them out (pyproject addopts: -m 'not faults').
test-faults: install
	@mkdir -p $(XDG_RUNTIME_DIR) && chmod 700 $(XDG_RUNTIME_DIR)
	$(BIN)/pytest -q -s -p no:cacheprovider -m faults $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no fault scenarios collected"; exit 0; fi; exit $$rc

# The integration tests (files, video, e2e) against real AWS S3, and RDS when
# MEDIAGRID_TEST_DATABASE_URL points at it; opt-in through the MEDIAGRID_TEST_AWS_* variables
# (docs/operations.md). Without them every test is reported SKIPPED with the reason (-rs).
test-aws: install
	@mkdir -p $(XDG_RUNTIME_DIR) && chmod 700 $(XDG_RUNTIME_DIR)
	MEDIAGRID_TEST_S3=aws $(BIN)/pytest -q -rs -p no:cacheprovider tests/files tests/video tests/e2e $(PYTEST_ARGS)

protos: install
	rm -rf gen/mediagrid
	mkdir -p gen
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=gen --grpc_python_out=gen \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=gen \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=gen \
	  $(PROTO_FILES)
	$(BIN)/python scripts/fix_generated.py gen

check-protos: protos
	@git add -N gen >/dev/null 2>&1 || true
	@if ! git diff --quiet -- gen; then echo "generated code is stale: run 'make protos' and commit gen/"; git diff --stat -- gen; exit 1; fi
	@echo "generated code is up to date"

# The TypeScript client: its own npm package (clients/typescript/package.json); the code
# generated from protos/ is committed like gen/ and compiled with the hand-written layer.
TS_CLIENT := clients/typescript
TS_PLUGIN := $(TS_CLIENT)/node_modules/.bin/protoc-gen-es

$(TS_PLUGIN): $(TS_CLIENT)/package.json $(TS_CLIENT)/package-lock.json
	cd $(TS_CLIENT) && npm ci --silent --no-audit --no-fund
	@touch $(TS_PLUGIN)

ts-client: $(BUF) $(TS_PLUGIN)
	rm -rf $(TS_CLIENT)/src/gen
	$(BUF) generate --template $(TS_CLIENT)/buf.gen.yaml
	cd $(TS_CLIENT) && npm run --silent build

check-ts-client: ts-client
	@git add -N $(TS_CLIENT)/src/gen >/dev/null 2>&1 || true
	@if ! git diff --quiet -- $(TS_CLIENT)/src/gen; then echo "generated TypeScript is stale: run 'make ts-client' and commit $(TS_CLIENT)/src/gen"; git diff --stat -- $(TS_CLIENT)/src/gen; exit 1; fi
	@echo "generated TypeScript is up to date"

buf-lint: $(BUF)
	$(BUF) lint
	$(BUF) format --diff --exit-code

# The API compared with the commit in protos/BREAKING_BASELINE (docs/decisions/0003-api-stability.md).
buf-breaking: $(BUF)
	BUF=$(BUF) scripts/buf_breaking.sh

ruff: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

mypy: install
	$(BIN)/mypy

lint: buf-lint ruff mypy

format: install $(BUF)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BUF) format -w

bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# Same measurements and per-round ratios at lower counts (bench/rounds.py: quick()).
bench-quick: install
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

# Re-resolve every dependency in one go and record the exact set.
lock:
	rm -rf /tmp/mediagrid-lock && $(PYTHON) -m venv /tmp/mediagrid-lock
	/tmp/mediagrid-lock/bin/pip install --quiet --upgrade pip
	/tmp/mediagrid-lock/bin/pip install --quiet '.[dev]'
	/tmp/mediagrid-lock/bin/pip freeze --exclude mediagrid > constraints.txt

docs: install
	$(BIN)/python scripts/config_doc.py > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

# Offline validation of the deployment files (no Docker engine or AWS account needed).
deploy-check: compose-check cfn-lint

compose-check: install
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

cfn-lint: install
	$(BIN)/cfn-lint deploy/aws/*.yaml

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
