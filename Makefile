# arbitrage — every command a person or CI needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DAGSTER_HOME

.DEFAULT_GOAL := help
.PHONY: help venv lock ui-deps screenshot services-up services-down services-status topics demo test test-slow test-secure faults test-unit lint bench bench-capture sample clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(PY): pyproject.toml requirements-dev.lock requirements-bootstrap.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	# Every package pinned and hash-checked: pip and the build backend first, then the rest.
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-bootstrap.lock
	$(PY) -m pip install --quiet --require-hashes -r requirements-dev.lock
	# The project itself, built by that setuptools (no isolated build fetching an unpinned one).
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(PY)

venv: $(PY) ## create .venv and install the project with its dev tools

ui-deps: ## install Debian's Chromium for the UI test and screenshot (needs root or sudo)
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -q chromium; else sudo apt-get install -y -q chromium; fi; }

screenshot: $(PY) ui-deps ## redraw docs/asset-graph.png from a fresh webserver
	$(PY) scripts/screenshot_ui.py --start-webserver --out docs/asset-graph.png

services-up: $(PY) ## start local Kafka + Elasticsearch + PostgreSQL (downloads once), create topics and indices
	$(PY) -m devservices up
	scripts/with-client-env $(VENV)/bin/arbitrage provision

services-down: $(PY) ## stop local Kafka + Elasticsearch + PostgreSQL
	$(PY) -m devservices down

services-status: $(PY) ## show each local service, its address (PostgreSQL: its URL), PID and health
	$(PY) -m devservices status

topics: $(PY) ## create the pipeline's topics and indices (idempotent)
	scripts/with-client-env $(VENV)/bin/arbitrage provision

# The demo pulls from the Keepa market simulator (a local service like the others).
demo: export KEEPA_SIM = 1
demo: services-up ## discovery, the token planner and the pipeline on the Keepa simulator
	$(PY) scripts/demo.py

test: $(PY) ## install, start services if needed, run the suite (with a quick fault subset)
	scripts/test.sh -m "not faults and not slow"

test-slow: $(PY) ## the long end-to-end cases make test leaves out (CI runs them too)
	scripts/test.sh -m "slow and not faults"

test-secure: $(PY) ## the suite against secured services (TLS, SASL/SCRAM, ACLs, ES auth), started if needed
	ARBITRAGE_SECURE=1 scripts/test.sh -m "not faults"

faults: $(PY) ## the whole fault suite: kills, broken services, fuzz; one audit line per case
	TEST_WORKERS=0 scripts/test.sh -m "faults or fault_suite"

test-unit: $(PY) ## fast tests without services: the pure domain, sensor decisions, the definitions
	$(PY) -m pytest tests/unit tests/devservices tests/dagster/test_definitions.py -q

LOCK := $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --no-emit-find-links --strip-extras --extra postgres

lock: $(PY) ## re-resolve every dependency to its newest allowed version (requirements*.lock)
	$(LOCK) --upgrade --extra dev -o requirements-dev.lock pyproject.toml
	$(LOCK) -c requirements-dev.lock -o requirements.lock pyproject.toml
	printf '%s\n' pip setuptools wheel | $(VENV)/bin/pip-compile --quiet --generate-hashes \
	  --allow-unsafe --no-emit-find-links --strip-extras -c requirements-dev.lock \
	  -o requirements-bootstrap.lock -

lint: $(PY) ## ruff (lint and format check) and the import contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

bench: services-up ## benchmarks: throughput, memory, capture, latency (prints one table)
	$(PY) -m bench

bench-capture: $(PY) ## the long capture benchmark: 100 000 ASINs, 300 tokens/min, 6 simulated hours
	$(PY) -m bench.capture --long

sample: $(PY) ## regenerate the bundled Keepa sample (deterministic)
	$(PY) -m tools.sample_generator --products 500 --out data/sample/keepa_sample.json.gz

clean: ## remove the virtualenv and local state (downloads in ~/.cache/arbitrage stay)
	-$(PY) -m devservices down
	rm -rf $(VENV) .devservices .dagster_home
