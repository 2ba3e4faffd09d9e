"""The instance storage dagster.yaml selects (pipelines/instance_storage.py), on the local
PostgreSQL: its connections stay open, survive the server dropping them, and close on dispose."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import sqlalchemy as db

from devservices.dagster_instance import fresh_storage, storage_kind, write_instance
from pipelines.instance_storage import (
    PooledEventLogStorage,
    PooledRunStorage,
    PooledScheduleStorage,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    if storage_kind(os.environ) != "postgres":
        pytest.fail("these tests need DAGSTER_STORAGE=postgres (the default)")
    with fresh_storage(os.environ) as storage:
        for name, value in {
            **storage,
            **write_instance(tmp_path, {**os.environ, **storage}),
        }.items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.from_config(str(tmp_path)) as created:
            yield created


def backend_of(storage: object) -> int:
    """The server process answering ``storage``'s next query (each storage queries through
    ``_engine``, the attribute pipelines/instance_storage.py pools)."""
    with storage._engine.connect() as conn:  # type: ignore[attr-defined]
        return conn.execute(db.text("select pg_backend_pid()")).scalar_one()


def admin_connection() -> psycopg2.extensions.connection:
    connection = psycopg2.connect(
        host=os.environ["DAGSTER_POSTGRES_HOST"],
        port=os.environ["DAGSTER_POSTGRES_PORT"],
        user=os.environ["DAGSTER_POSTGRES_USER"],
        password=os.environ["DAGSTER_POSTGRES_PASSWORD"],
        dbname=os.environ["DAGSTER_POSTGRES_DB"],
    )
    connection.autocommit = True
    return connection


def alive(backends: set[int], *, until_gone_s: float = 0.0) -> set[int]:
    """Which of ``backends`` are still connected (waiting up to ``until_gone_s`` for them to
    go: a server process ends shortly after its client closed the connection)."""
    deadline = time.monotonic() + until_gone_s
    with admin_connection() as connection, connection.cursor() as cursor:
        while True:
            cursor.execute(
                "select pid from pg_stat_activity where pid = any(%s)", (list(backends),)
            )
            found = {row[0] for row in cursor.fetchall()}
            if not found or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)


def test_each_storage_keeps_its_connection(instance: dg.DagsterInstance) -> None:
    storages = (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
    assert [type(s) for s in storages] == [
        PooledRunStorage,
        PooledEventLogStorage,
        PooledScheduleStorage,
    ]
    for storage in storages:
        assert backend_of(storage) == backend_of(storage)  # the same server process twice
    # And Dagster's own calls go through it: a run written and read back.
    run = instance.add_run(
        dg.DagsterRun(job_name="pooled", run_id="b3f4c0de-0000-4000-8000-000000000001")
    )
    assert instance.get_run_by_id(run.run_id) == run


def test_a_connection_the_server_dropped_is_replaced_before_use(
    instance: dg.DagsterInstance,
) -> None:
    before = backend_of(instance.run_storage)
    with admin_connection() as connection, connection.cursor() as cursor:
        cursor.execute("select pg_terminate_backend(%s)", (before,))
    # No error for the caller: the pool's ping finds the connection dead and opens another.
    assert instance.get_runs() == []
    assert backend_of(instance.run_storage) != before


def test_dispose_closes_every_storage_s_connections(instance: dg.DagsterInstance) -> None:
    backends = {
        backend_of(instance.run_storage),
        backend_of(instance.event_log_storage),
        backend_of(instance.schedule_storage),
    }
    assert alive(backends) == backends
    instance.dispose()  # what `with DagsterInstance...` does at the end; not the schedule storage
    assert alive(backends, until_gone_s=10.0) == set()
