"""The test suite. Importing this package (pytest does, before any conftest) sets the defaults
every test and every process it starts (Dagster, the demo) inherit."""

import os

# Tests work in their own namespace (arbitrage/domain/topics.py), one per parallel worker, so they
# never
# reset or consume a running pipeline's topics, groups or indices, nor each other's.
# Workers inherit the environment of the process that started them, so the base is kept in a
# variable of its own and each worker adds its id to it.
_base = os.environ.setdefault(
    "ARBITRAGE_TEST_NAMESPACE", os.environ.get("ARBITRAGE_NAMESPACE") or "test"
)
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
os.environ["ARBITRAGE_NAMESPACE"] = f"{_base}-{_worker}" if _worker else _base

# Sensor-launched runs follow their partition until idle this long (60 s in production): the
# tests run such requests to completion, so they end soon after the records run out.
os.environ.setdefault("ARBITRAGE_RUN_IDLE_S", "1")
