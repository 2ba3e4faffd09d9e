"""Shared fixtures. Integration tests use the real Kafka and Elasticsearch and fail loudly if
they are not running (never skip)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cli.reset import reset_pipeline
from resources.elasticsearch import ElasticsearchResource, ElasticsearchUnavailableError
from resources.kafka import KafkaResource, KafkaUnavailableError
from resources.settings import Settings

# Sensor-launched runs follow their partition until idle this long (60 s in production): the
# tests run such requests to completion, so they end soon after the records run out. Set before
# the definitions are imported; child processes (dagster, the demo) inherit it.
os.environ.setdefault("ARBITRAGE_RUN_IDLE_S", "1")

SECURE = os.environ.get("ARBITRAGE_SECURE", "").strip().lower() in {"1", "on", "true", "yes"}
# KAFKA_BROKERS=3 make test: the local services are a three-node Kafka cluster.
CLUSTER_BROKERS = 3
CLUSTER = int(os.environ.get("KAFKA_BROKERS", "").strip() or 1) >= CLUSTER_BROKERS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of the secured services run only in secure mode, tests of a Kafka cluster only
    with KAFKA_BROKERS=3 or more; elsewhere they are deselected (counted as such, not skipped:
    there is nothing for them to test)."""
    unwanted = {name for name, wanted in (("secure", SECURE), ("cluster", CLUSTER)) if not wanted}
    chosen = [
        item
        for item in items
        if not any(item.get_closest_marker(name) is not None for name in unwanted)
    ]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
        items[:] = chosen


START_HINT = "Start them with `make services-up` (or run the whole suite with `make test`)."


@pytest.fixture(scope="session")
def kafka() -> KafkaResource:
    resource = Settings.from_env().kafka(timeout_s=5.0)
    try:
        resource.check_reachable()
    except KafkaUnavailableError as exc:
        pytest.fail(
            f"Integration tests need the real Kafka broker: {exc}. {START_HINT}", pytrace=False
        )
    return resource


@pytest.fixture(scope="session")
def es() -> ElasticsearchResource:
    resource = Settings.from_env().elasticsearch()
    try:
        resource.health()
    except ElasticsearchUnavailableError as exc:
        pytest.fail(
            f"Integration tests need the real Elasticsearch: {exc}. {START_HINT}", pytrace=False
        )
    return resource


@pytest.fixture
def clean_pipeline(kafka: KafkaResource, es: ElasticsearchResource) -> Iterator[None]:
    """Empty pipeline topics, consumer groups and indices, so a test sees only its own data."""
    reset_pipeline(kafka, es, allow_anywhere=Settings.from_env().allow_reset_anywhere)
    yield
