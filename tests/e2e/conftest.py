"""Fixtures for the end-to-end tests: `dagster dev` against the real services, always stopped."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from devservices.dagster_instance import fresh_storage
from tests.e2e.dagster_dev import DagsterDev, StartDagsterDev


@pytest.fixture
def start_dagster_dev(tmp_path: Path) -> Iterator[StartDagsterDev]:
    """Start `dagster dev` with the test's environment plus ``extra`` and automation on.

    The services' addresses (KAFKA_BOOTSTRAP_SERVERS, ELASTICSEARCH_URL) pass through from the
    environment; DAGSTER_HOME is a fresh directory holding the repo's dagster.yaml, and the
    instance's storage is fresh too (a throwaway PostgreSQL database), so no run, tick or sensor
    cursor of an earlier test is seen.
    """
    started: list[DagsterDev] = []
    with contextlib.ExitStack() as storages:

        def start(extra: Mapping[str, str]) -> DagsterDev:
            env = {
                **os.environ,
                "ARBITRAGE_AUTOMATION": "on",
                # The pull schedule stays on but cannot fire during a test: its input is the
                # test's.
                "KEEPA_PULL_CRON": "0 0 1 1 *",
                # Following runs end 5 s after their records: the tests wait for every run to
                # end, and a longer window keeps a downstream run through an upstream retry.
                "ARBITRAGE_RUN_IDLE_S": "5",
                **extra,
            }
            env.update(storages.enter_context(fresh_storage(env)))
            dev = DagsterDev(tmp_path / f"dagster_home_{len(started)}", env)
            started.append(dev)
            dev.start()
            return dev

        try:
            yield start
        finally:
            for dev in started:
                dev.stop()
