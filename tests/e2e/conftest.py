"""Fixtures for the end-to-end tests: Dagster's code server, webserver and daemon against the
real services, always stopped."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from devservices.dagster_instance import fresh_storage
from tests.e2e.dagster_api import Dagster, StartDagster


@pytest.fixture
def start_dagster(tmp_path: Path) -> Iterator[StartDagster]:
    """Start the code server, webserver and daemon (free ports) with the test's environment
    plus ``extra`` and automation on.

    The services' addresses (KAFKA_BOOTSTRAP_SERVERS, ELASTICSEARCH_URL) pass through from the
    environment; DAGSTER_HOME is a fresh directory holding the repo's dagster.yaml, and the
    instance's storage is fresh too (a throwaway PostgreSQL database), so no run, tick or sensor
    cursor of an earlier test is seen.
    """
    started: list[Dagster] = []
    with contextlib.ExitStack() as storages:

        def start(extra: Mapping[str, str]) -> Dagster:
            env = {
                **os.environ,
                "ARBITRAGE_AUTOMATION": "on",
                # The pull schedule stays on but cannot fire during a test: its input is the
                # test's.
                "KEEPA_PULL_CRON": "0 0 1 1 *",
                "ARBITRAGE_DIGEST_CRON": "0 0 1 1 *",
                # Following runs end 5 s after their records: the tests wait for every run to
                # end, and a longer window keeps a downstream run through an upstream retry.
                "ARBITRAGE_RUN_IDLE_S": "5",
                **extra,
            }
            env.update(storages.enter_context(fresh_storage(env)))
            dagster = Dagster(tmp_path / f"dagster_home_{len(started)}", env)
            started.append(dagster)
            dagster.start()
            return dagster

        try:
            yield start
        finally:
            for dagster in started:
                dagster.stop()
