"""Test helpers that put messages on topics and read whole topics back (real broker)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

from resources.kafka import KafkaResource


@dataclass(frozen=True)
class ReadMessage:
    partition: int
    offset: int
    key: str | None
    value: bytes

    def json(self) -> Any:
        return json.loads(self.value)


def produce(kafka: KafkaResource, topic: str, items: list[tuple[str | None, bytes]]) -> None:
    with kafka.producer() as producer:
        for key, value in items:
            producer.produce(topic, key, value)


def read_all(kafka: KafkaResource, topic: str, timeout_s: float = 20.0) -> list[ReadMessage]:
    """Every message currently in the topic, partition by partition, low to high watermark."""
    found: list[ReadMessage] = []
    consumer = kafka.consumer("tests-reader", **{"enable.partition.eof": False})
    try:
        for partition, (low, high) in kafka.watermarks(topic).items():
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            got = 0
            while got < high - low:
                batch = consumer.consume(
                    num_messages=min(1000, high - low - got), timeout=timeout_s
                )
                if not batch:
                    raise AssertionError(f"{topic}[{partition}] stopped at {low + got} of {high}")
                for message in batch:
                    if message.error():
                        raise AssertionError(str(message.error()))
                    key = message.key().decode() if message.key() is not None else None
                    found.append(ReadMessage(partition, message.offset(), key, message.value()))
                    got += 1
    finally:
        consumer.close()
    return found
