"""The test suite. Importing this package (pytest does, before any conftest) sets the defaults
every test and every process it starts (Dagster, the demo) inherit."""

import os

# Tests work in their own namespace (pipelines/topics.py), one per parallel worker, so they never
# reset or consume a running pipeline's topics, groups or indices, nor each other's.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
os.environ.setdefault("ARBITRAGE_NAMESPACE", f"test-{_worker}" if _worker else "test")

# Sensor-launched runs follow their partition until idle this long (60 s in production): the
# tests run such requests to completion, so they end soon after the records run out.
os.environ.setdefault("ARBITRAGE_RUN_IDLE_S", "1")
