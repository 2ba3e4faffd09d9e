"""The one owner of "durable": a batch's outputs and its source offset commit as one.

Every message a batch produced (outputs and dead letters) is in one Kafka transaction with the
batch's source offset: both become visible, or neither (``TransactionalProducer.commit``).
Elasticsearch writes are acknowledged before a processor produces anything, so a commit implies
those too. Any failure raises before the commit; readers (``read_committed``) never see an
aborted batch, and the next run resumes from the last committed offset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from engine.faults import FaultInjector, reach
from engine.ranges import PartitionRange
from engine.stats import StageStats
from pipelines.transforms import Rejected
from resources.elasticsearch import BulkOutcome
from resources.kafka import DeliveryReport
from resources.kafka_transactions import TransactionalProducer


@dataclass
class InFlight:
    """A batch between reading and committing: its pending writes and validation rejects."""

    next_offset: int  # the offset to commit once the batch is done
    records: int = 0  # how many source records the batch holds
    writes: list[tuple[Any, Future[BulkOutcome]]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class Checkpoint:
    """Commits one partition's progress for one consumer group."""

    def __init__(
        self,
        consumer: Consumer,
        producer: TransactionalProducer,
        topic: str,
        span: PartitionRange,
        stats: StageStats,
        log: logging.Logger | Any,
        on_commit: Callable[[StageStats], None] | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._topic = topic
        self._span = span
        self._stats = stats
        self._log = log
        self._on_commit = on_commit
        self._faults = faults
        self.first_seen: int | None = None
        self.committed = span.start  # where this run took the partition over

    def commit(self, batch: InFlight) -> None:
        """Commit the batch's messages together with the partition's offset past it."""
        # Only this batch's messages are in the transaction: the next one has produced nothing.
        self._commit_at(batch.next_offset)

    def commit_position(self) -> None:
        """At the end of a range: move the offset over what the consumer skipped after the
        last record (transaction markers, aborted records), so the lag reaches 0."""
        position = self._consumer.position([TopicPartition(self._topic, self._span.partition)])
        offset = position[0].offset
        if offset > self.committed:
            self._commit_at(min(offset, self._span.end))

    def _commit_at(self, next_offset: int) -> None:
        span = self._span
        self._reach("after_produce")
        self._producer.commit(
            self._consumer,
            [TopicPartition(self._topic, span.partition, next_offset)],
            on_step=self._reach,
        )
        self._reach("after_commit")
        self.committed = next_offset
        self._stats.deliveries.merge(self._producer.report)
        self._producer.report = DeliveryReport()
        first = self.first_seen if self.first_seen is not None else span.start
        self._stats.ranges[span.partition] = (first, next_offset)
        self._stats.batches += 1
        if self._on_commit:
            self._on_commit(self._stats)
        self._log.info(
            f"{self._stats.stage}: {self._topic}[{span.partition}] committed {next_offset} "
            f"({next_offset - span.start}/{span.size}); in {self._stats.records_in}, "
            f"dlq {self._stats.to_dlq}"
        )

    def _reach(self, point: str) -> None:
        reach(self._faults, self._stats.stage, point)
