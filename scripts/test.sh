#!/usr/bin/env bash
# Runs the whole suite against real Kafka, Elasticsearch and PostgreSQL (installed with apt-get
# when missing and we are root). Starts the local services if they
# are not running and stops them again afterwards, so the machine is left as it was found.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

# The UI test drives Debian's Chromium; install it where we can (CI runs as root).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Chromium for the UI test"
  make --no-print-directory ui-deps || echo "could not install Chromium; the UI test will say how"
fi

started=0
if ! $PY -m devservices status >/dev/null 2>&1; then
  echo "== starting local Kafka, Elasticsearch and PostgreSQL for the tests"
  $PY -m devservices up
  started=1
fi
cleanup() {
  if [ "$started" = 1 ]; then
    echo "== stopping the services this run started"
    $PY -m devservices down || true
  fi
}
trap cleanup EXIT

# ARBITRAGE_SECURE=1: every client below uses the secured services' client.env.
scripts/with-client-env .venv/bin/arbitrage provision
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The layering (pyproject.toml, [tool.importlinter]): arbitrage never imports Dagster.
.venv/bin/lint-imports --no-cache
# Parallel workers (pytest-xdist), one file per worker at a time: each worker has its own
# namespace (tests/__init__.py), so they share the services without seeing each other's data.
# TEST_WORKERS=0 runs in this process (make faults: its cases break the shared services).
# Tests marked `exclusive` stop a shared service, so they run first, alone; then the rest.
workers=${TEST_WORKERS:-2}
pytest=(scripts/with-client-env $PY -m pytest -q)
if [ "$workers" = 0 ]; then
  "${pytest[@]}" --durations=10 "$@"
  exit
fi
alone=0 shared=0
echo "== tests that stop a shared service, alone"
"${pytest[@]}" --phase exclusive "$@" || alone=$?
echo "== the other tests, $workers workers"
"${pytest[@]}" --phase shared -n "$workers" --dist loadfile --durations=10 "$@" || shared=$?
# pytest's 5 is "no test selected": fine for one phase (a -k or a path), not for both.
if [ "$alone" = 5 ] && [ "$shared" = 5 ]; then exit 5; fi
for code in "$alone" "$shared"; do
  if [ "$code" != 0 ] && [ "$code" != 5 ]; then exit "$code"; fi
done
