"""The Dagster instance make demo writes to DAGSTER_HOME keeps its runs in the real local
PostgreSQL: a run materialized through it is a row in the `runs` table, its events in
`event_logs` (read back with psycopg2, not through Dagster)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from devservices.dagster_instance import fresh_storage, write_instance
from devservices.postgres import Postgres, dagster_cursor
from devservices.settings import Settings
from tests.conftest import START_HINT


@dg.asset
def answer() -> int:
    """One tiny asset, so the run has events to store."""
    return 42


def test_a_run_is_a_row_in_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    if not Postgres(settings).is_healthy():
        pytest.fail(
            f"This test needs the local PostgreSQL on port {settings.postgres_port}. {START_HINT}",
            pytrace=False,
        )
    env = {**os.environ, "DAGSTER_STORAGE": "postgres"}
    with fresh_storage(env) as storage:
        env.update(storage)
        # The instance reads its storage settings from the environment, as the Dagster processes do.
        for name, value in write_instance(tmp_path, env).items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            # dagster-postgres's storages, keeping their connections (pipelines/instance_storage.py)
            assert isinstance(instance.run_storage, PostgresRunStorage)
            assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
            assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
            result = dg.materialize([answer], instance=instance)
            assert result.success
            run_id = result.run_id
        with dagster_cursor(settings, storage["DAGSTER_POSTGRES_DB"]) as cur:
            cur.execute("select status from runs where run_id = %s", (run_id,))
            assert cur.fetchall() == [("SUCCESS",)]
            cur.execute(
                "select count(*) from event_logs where run_id = %s and asset_key is not null",
                (run_id,),
            )
            (asset_events,) = cur.fetchone()
            assert asset_events >= 1
