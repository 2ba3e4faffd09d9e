"""Tests and benchmarks never empty a cluster that is not on this machine by accident."""

from __future__ import annotations

import pytest

from arbitrage.cli.reset import ResetRefusedError, check_reset_allowed
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient

LOCAL_KAFKA = KafkaClient(bootstrap_servers="127.0.0.1:9092,localhost:9094")
LOCAL_ES = ElasticsearchClient(url="http://127.0.0.1:9200")


def test_loopback_services_may_be_reset() -> None:
    check_reset_allowed(LOCAL_KAFKA, LOCAL_ES, anywhere=False)
    check_reset_allowed(KafkaClient(bootstrap_servers="[::1]:9092"), LOCAL_ES, anywhere=False)


@pytest.mark.parametrize(
    ("kafka", "es", "named"),
    [
        (
            KafkaClient(bootstrap_servers="kafka-1.prod:9092,127.0.0.1:9092"),
            LOCAL_ES,
            "kafka-1.prod",
        ),
        (LOCAL_KAFKA, ElasticsearchClient(url="https://user:secret@es.prod:9200"), "es.prod"),
    ],
)
def test_anything_else_is_refused_unless_allowed(
    kafka: KafkaClient, es: ElasticsearchClient, named: str
) -> None:
    with pytest.raises(ResetRefusedError, match=f"on {named}:.*ARBITRAGE_ALLOW_RESET=1") as refused:
        check_reset_allowed(kafka, es, anywhere=False)
    assert "secret" not in str(refused.value)
    check_reset_allowed(kafka, es, anywhere=True)
