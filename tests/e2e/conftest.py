"""Fixtures for the end-to-end tests: `dagster dev` against the real services, always stopped."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.e2e.dagster_dev import DagsterDev, StartDagsterDev


@pytest.fixture
def start_dagster_dev(tmp_path: Path) -> Iterator[StartDagsterDev]:
    """Start `dagster dev` with the test's environment plus ``extra`` and automation on.

    The services' addresses (KAFKA_BOOTSTRAP_SERVERS, ELASTICSEARCH_URL) pass through from the
    environment; DAGSTER_HOME is a fresh directory holding a copy of the repo's dagster.yaml.
    """
    started: list[DagsterDev] = []

    def start(extra: Mapping[str, str]) -> DagsterDev:
        env = {
            **os.environ,
            "ARBITRAGE_AUTOMATION": "on",
            # The pull schedule stays on but cannot fire during a test: its input is the test's.
            "KEEPA_PULL_CRON": "0 0 1 1 *",
            **extra,
        }
        dev = DagsterDev(tmp_path / f"dagster_home_{len(started)}", env)
        started.append(dev)
        dev.start()
        return dev

    try:
        yield start
    finally:
        for dev in started:
            dev.stop()
