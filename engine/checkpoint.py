"""The one owner of "durable": a batch's offset moves only after all its output is delivered.

Order, always: every message the batch produced (outputs and dead letters) is acknowledged by
the broker (``flush`` raises otherwise), then the source offset is committed. Elasticsearch
writes are acknowledged before a processor produces anything, so a commit implies both. Any
failure raises before the commit, and the next run resumes from the last committed offset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from engine.ranges import PartitionRange
from engine.stats import StageStats
from pipelines.transforms import Rejected
from resources.elasticsearch import BulkOutcome
from resources.kafka import CheckedProducer, DeliveryReport
from resources.kafka_offsets import commit_offsets


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
        producer: CheckedProducer,
        topic: str,
        span: PartitionRange,
        stats: StageStats,
        log: logging.Logger | Any,
        on_commit: Callable[[StageStats], None] | None = None,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._topic = topic
        self._span = span
        self._stats = stats
        self._log = log
        self._on_commit = on_commit
        self.first_seen: int | None = None

    def commit(self, batch: InFlight) -> None:
        """Wait for the batch's deliveries, then move the partition's offset past it."""
        # Only this batch's messages are outstanding: the next one has produced nothing yet.
        self._producer.flush()  # raises unless every delivery was acknowledged
        self._stats.deliveries.merge(self._producer.report)
        self._producer.report = DeliveryReport()
        span, next_offset = self._span, batch.next_offset
        commit_offsets(self._consumer, [TopicPartition(self._topic, span.partition, next_offset)])
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
