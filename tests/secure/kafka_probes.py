"""What the real broker answers one client: a write, a group join, a transaction's start, a
read, a topic creation. Each returns the broker's refusal (or None when it accepted)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from arbitrage.domain import topics

TIMEOUT_S = 10.0


def delivery_error(config: dict[str, Any], topic: str) -> KafkaError:
    """Produce one message without idempotence (so only the topic ACL is asked) and return the
    broker's answer in the delivery report."""
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "enable.idempotence": False, "message.timeout.ms": 8000})
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(TIMEOUT_S)
    assert len(errors) == 1, "no delivery report within the timeout"
    assert errors[0] is not None, f"{topic}: the write was accepted"
    return errors[0]


def consume_error(
    config: dict[str, Any], group: str, topic: str = topics.RAW_UPDATES
) -> KafkaError | None:
    """Join ``group`` on ``topic`` as a stage's consumer would, and read: the broker's refusal
    (the group's comes with the join, the topic's with the fetch), or None once the consumer
    holds partitions and has polled a while without one. Commits nothing."""
    consumer = Consumer(
        {**config, "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + TIMEOUT_S
    assigned_at: float | None = None
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            error = message.error() if message is not None else None
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                return error
            if consumer.assignment() and assigned_at is None:
                assigned_at = time.monotonic()
            if assigned_at is not None and time.monotonic() - assigned_at > 3.0:
                return None
    finally:
        consumer.close()
    raise AssertionError(f"group {group!r} on {topic}: neither refused nor assigned")


def init_transactions_error(config: dict[str, Any], txn_id: str) -> KafkaError:
    producer = Producer({**config, "transactional.id": txn_id})
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(TIMEOUT_S)
    return refused.value.args[0]


def create_topic_error(config: dict[str, Any], name: str) -> KafkaError | None:
    """Ask to create ``name`` with validate_only (nothing is created): the refusal, or None
    (TOPIC_ALREADY_EXISTS counts as allowed: the broker checks the grant first)."""
    admin = AdminClient(config)  # alive until the answer: its futures die with it
    future = admin.create_topics(
        [NewTopic(name, 1, 1)], validate_only=True, request_timeout=TIMEOUT_S
    )[name]
    try:
        future.result()
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        return None if error.code() == KafkaError.TOPIC_ALREADY_EXISTS else error
    return None
