"""Test helpers that put messages on topics and read whole topics back (real broker)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from arbitrage.clients.kafka import KafkaClient, read_partition
from arbitrage.domain import topics


@dataclass(frozen=True)
class ReadMessage:
    partition: int
    offset: int
    key: str | None
    value: bytes

    def json(self) -> Any:
        return json.loads(self.value)


def produce(kafka: KafkaClient, topic: str, items: list[tuple[str | None, bytes]]) -> None:
    with kafka.producer() as producer:
        for key, value in items:
            producer.produce(topic, key, value)


def read_all(kafka: KafkaClient, topic: str, timeout_s: float = 20.0) -> list[ReadMessage]:
    """Every committed message in the topic (read_committed), partition by partition."""
    found: list[ReadMessage] = []
    consumer = kafka.consumer(topics.tool_name("tests-reader"), **{"enable.partition.eof": False})
    try:
        for partition, (low, high) in kafka.watermarks(topic).items():
            for message in read_partition(consumer, topic, partition, low, high, timeout_s):
                key = message.key().decode() if message.key() is not None else None
                found.append(ReadMessage(partition, message.offset(), key, message.value()))
    finally:
        consumer.close()
    return found
