"""A transaction committed on the producer's committing thread: what was produced before the
commit is visible with its offset, and what is produced while it runs waits for it and belongs
to the next transaction only (so aborting that one takes none of the committed batch)."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.kafka_offsets import committed_offset
from arbitrage.domain import topics
from arbitrage.engine.kafka_transactions import TransactionalProducer, transactional_id
from tests.integration.kafka_io import read_all

pytestmark = pytest.mark.integration

GROUP = "tests-background-commit"


@pytest.mark.usefixtures("clean_pipeline")
def test_the_next_batch_waits_for_the_background_commit(kafka: KafkaClient) -> None:
    source = topics.RAW_UPDATES
    producer = TransactionalProducer(kafka.producer_config(), transactional_id(GROUP, source, 0))
    consumer = kafka.consumer(GROUP)
    try:
        producer.produce_many(
            topics.PRODUCTS_ENRICHED, [(f"B00000000{n}", b'{"batch":1}') for n in range(5)]
        )
        committing = producer.commit_in_background(consumer, [TopicPartition(source, 0, 42)])
        # Issued at once: it must wait for the commit and open a transaction of its own.
        producer.produce(topics.PRODUCTS_ENRICHED, "B000000009", b'{"batch":2}')
        assert committing.done()
        assert committing.result().delivered == 5
        producer.abort()
        assert committed_offset(consumer, source, 0) == 42
    finally:
        producer.abort()
        consumer.close()
    values = [message.value for message in read_all(kafka, topics.PRODUCTS_ENRICHED)]
    assert values == [b'{"batch":1}'] * 5
