"""Shared fixtures. Integration tests use the real Kafka and Elasticsearch and fail loudly if
they are not running (never skip)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException

from pipelines import topics
from resources.elasticsearch import ElasticsearchResource, ElasticsearchUnavailableError
from resources.kafka import KafkaResource, KafkaUnavailableError

START_HINT = "Start them with `make services-up` (or run the whole suite with `make test`)."


@pytest.fixture(scope="session")
def kafka() -> KafkaResource:
    resource = KafkaResource(timeout_s=5.0)
    try:
        resource.check_reachable()
    except KafkaUnavailableError as exc:
        pytest.fail(
            f"Integration tests need the real Kafka broker: {exc}. {START_HINT}", pytrace=False
        )
    return resource


@pytest.fixture(scope="session")
def es() -> ElasticsearchResource:
    resource = ElasticsearchResource()
    try:
        resource.health()
    except ElasticsearchUnavailableError as exc:
        pytest.fail(
            f"Integration tests need the real Elasticsearch: {exc}. {START_HINT}", pytrace=False
        )
    return resource


def _delete_topics(kafka: KafkaResource, names: list[str]) -> None:
    admin = kafka.admin()
    existing = set(kafka.check_reachable())
    doomed = [name for name in names if name in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
    deadline = time.monotonic() + 30
    while set(doomed) & set(kafka.check_reachable()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {doomed} were not deleted within 30 s")
        time.sleep(0.2)


def _delete_groups(kafka: KafkaResource, groups: list[str]) -> None:
    for future in kafka.admin().delete_consumer_groups(groups, request_timeout=10).values():
        with contextlib.suppress(KafkaException):  # the group did not exist
            future.result()


@pytest.fixture
def clean_pipeline(kafka: KafkaResource, es: ElasticsearchResource) -> Iterator[None]:
    """Empty pipeline topics, consumer groups and indices, so a test sees only its own data."""
    names = [spec.name for spec in topics.TOPICS]
    _delete_groups(
        kafka,
        [
            topics.ENRICHMENT_GROUP,
            topics.ARBITRAGE_GROUP,
            topics.REPLAY_GROUP_PREFIX + topics.ENRICHMENT_GROUP,
            topics.REPLAY_GROUP_PREFIX + topics.ARBITRAGE_GROUP,
        ],
    )
    _delete_topics(kafka, names)
    for index in (topics.PRODUCTS_INDEX, topics.ALERTS_INDEX):
        es.client().options(ignore_status=404).indices.delete(index=index)
    deadline = time.monotonic() + 30
    while True:
        try:
            kafka.ensure_topics()
            break
        except KafkaException:
            # A just-deleted topic may still be marked for deletion for a moment.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    es.ensure_indices()
    yield
