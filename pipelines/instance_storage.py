"""Dagster's PostgreSQL instance storage, keeping its connections open.

dagster-postgres opens a new connection for every query (SQLAlchemy's NullPool; only the
webserver switches to a pool). A PostgreSQL connection costs a server process and a SCRAM
login: 7 ms and ~3.5 CPU-ms on the client here against 0.1 ms for a query on an open one
(measured), and the daemon's loops make dozens of queries a second (the run queue, the sensor
ticks: each `get_instigator_state` also re-reads the table list twice). Here every storage keeps
one connection per process (more while threads overlap), checked with a ping before use, so a
restarted PostgreSQL costs a reconnect, not a failed query.

dagster.yaml selects it as custom storage with the same `postgres_db` settings as Dagster's
`storage: postgres`.
"""

from __future__ import annotations

from typing import Any

from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.config import PostgresStorageConfig, pg_config
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

# Connections kept open per storage and process (a run worker uses one at a time; the daemon's
# threads open more while they overlap, closed when returned).
POOL_SIZE = 1
MAX_OVERFLOW = 20
# Older connections are replaced when next used (PostgreSQL or a proxy may drop idle ones).
RECYCLE_S = 3600


def keep_connections(storage: Any) -> None:
    """Give a dagster-postgres storage a connection pool instead of a connection per query.

    ``_engine`` is where each of the three storages keeps its SQLAlchemy engine (the
    webserver's ``optimize_for_webserver`` replaces it the same way); tests/integration/
    test_instance_storage.py fails if a release moves it."""
    options = storage._engine.url.query.get("options")
    storage._engine = create_pg_engine(
        storage.postgres_url,
        storage._token_provider,
        isolation_level="AUTOCOMMIT",
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_recycle=RECYCLE_S,
        pool_pre_ping=True,
        **({"connect_args": {"options": options}} if options else {}),
    )


class KeepsConnections:
    """A dagster-postgres storage with a pool (put first among the bases)."""

    _engine: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep_connections(self)
        # Storages whose connections close with this one's: DagsterInstance.dispose disposes
        # the run and event log storages but not the schedule storage.
        self.closes_with: list[KeepsConnections] = []

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        for storage in (self, *self.closes_with):
            storage._engine.dispose()

    def optimize_for_webserver(
        self, statement_timeout: int, pool_recycle: int, max_overflow: int
    ) -> None:
        self._engine.dispose()  # the webserver's own pool replaces this one: close its connection
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)  # type: ignore[misc]


class PooledRunStorage(KeepsConnections, PostgresRunStorage):
    pass


class PooledEventLogStorage(KeepsConnections, PostgresEventLogStorage):
    pass


class PooledScheduleStorage(KeepsConnections, PostgresScheduleStorage):
    pass


class PooledPostgresStorage(DagsterStorage, ConfigurableClass):
    """``storage: postgres`` with pooled connections (dagster.yaml: ``storage: custom``)."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
    ) -> None:
        self._inst_data = inst_data
        self._run_storage = PooledRunStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._event_log_storage = PooledEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._schedule_storage = PooledScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._run_storage.closes_with.append(self._schedule_storage)
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> Any:
        return pg_config()  # the same settings as `storage: postgres`

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: PostgresStorageConfig
    ) -> PooledPostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    @property
    def event_log_storage(self) -> PooledEventLogStorage:
        return self._event_log_storage

    @property
    def run_storage(self) -> PooledRunStorage:
        return self._run_storage

    @property
    def schedule_storage(self) -> PooledScheduleStorage:
        return self._schedule_storage
