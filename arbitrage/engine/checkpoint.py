"""The one owner of "durable": a batch's outputs and its source offset commit as one.

Every message a batch produced (outputs and dead letters) is in one Kafka transaction with the
batch's source offset: both become visible, or neither (``TransactionalProducer.commit``).
Elasticsearch writes are acknowledged before a processor produces anything, so a commit implies
those too. Any failure raises before the commit; readers (``read_committed``) never see an
aborted batch, and the next run resumes from the last committed offset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from arbitrage.clients.elasticsearch import BulkOutcome
from arbitrage.clients.kafka import DeliveryReport
from arbitrage.domain.transforms import Rejected
from arbitrage.engine.faults import FaultInjector, reach
from arbitrage.engine.kafka_transactions import TransactionalProducer
from arbitrage.engine.ranges import PartitionRange
from arbitrage.engine.stats import StageStats

# A run logs its progress at most this often (and when it ends): one line per batch would grow
# the event log without bound under a steady stream.
PROGRESS_EVERY_S = 30.0


@dataclass
class InFlight:
    """A batch between reading and committing: its pending writes and validation rejects."""

    next_offset: int  # the offset to commit once the batch is done
    records: int = 0  # how many source records the batch holds
    writes: list[tuple[Any, Future[BulkOutcome]]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    headers: dict[str, bytes] | None = None  # for the batch's output messages


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
        background: bool = False,
    ) -> None:
        """``background``: each transaction commits while the next batch is prepared (see
        ``commit``)."""
        self._background = background
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
        self._logged_at = time.monotonic()
        self._logged_offset = span.start
        # The batch whose transaction is being committed, and the offset it commits.
        self._committing: tuple[Future[DeliveryReport], int] | None = None

    def commit(self, batch: InFlight) -> None:
        """Commit the batch's messages together with the partition's offset past it.

        In the background, the transaction's round trips (deliver, add the offsets, commit)
        run on the producer's committing thread while the runner reads and prepares the next
        batch; the producer admits nothing of the next batch before this transaction has ended,
        and the batch counts as committed here only once it has (``settle``, or the next
        commit). Only for a stage whose writes of the next batch need nothing of this one to be
        committed (enrichment: versioned documents); the arbitrage stage's opportunity states
        keep one uncommitted predecessor (``base``), so it commits in line.
        """
        # Only this batch's messages are in the transaction: the next one has produced nothing.
        self.settle()
        self._commit_at(batch.next_offset, background=self._background)

    def settle(self) -> None:
        """Wait for the batch being committed, if any, and count it (raises its failure)."""
        if self._committing is None:
            return
        committing, next_offset = self._committing
        self._committing = None
        self._committed(committing.result(), next_offset)

    def commit_position(self, *, bounded: bool = True) -> None:
        """Move the offset over what the consumer skipped after the last record (transaction
        markers, aborted records), so the lag reaches 0: at the end of a range (``bounded``:
        never past it), or whenever a following run finds nothing new."""
        self.settle()
        position = self._consumer.position([TopicPartition(self._topic, self._span.partition)])
        offset = position[0].offset
        if bounded:
            offset = min(offset, self._span.end)
        if offset > self.committed:
            self._commit_at(offset)

    def log_progress(self, *, final: bool = False) -> None:
        """One line on where the partition stands, at most every ``PROGRESS_EVERY_S``."""
        now = time.monotonic()
        if not final and now - self._logged_at < PROGRESS_EVERY_S:
            return
        if final and self.committed == self._logged_offset:
            return
        stats = self._stats
        self._log.info(
            f"{stats.stage}: {self._topic}[{self._span.partition}] committed {self.committed} "
            f"({self.committed - self._span.start} offsets this run); in {stats.records_in}, "
            f"dlq {stats.to_dlq}"
        )
        self._logged_at, self._logged_offset = now, self.committed

    def _commit_at(self, next_offset: int, *, background: bool = False) -> None:
        self._reach("after_produce")
        offsets = [TopicPartition(self._topic, self._span.partition, next_offset)]
        if background:
            committing = self._producer.commit_in_background(
                self._consumer, offsets, on_step=self._reach
            )
            self._committing = (committing, next_offset)
        else:
            delivered = self._producer.commit(self._consumer, offsets, on_step=self._reach)
            self._committed(delivered, next_offset)

    def _committed(self, delivered: DeliveryReport, next_offset: int) -> None:
        span = self._span
        self.committed = next_offset
        self._stats.deliveries.merge(delivered)
        first = self.first_seen if self.first_seen is not None else span.start
        self._stats.ranges[span.partition] = (first, next_offset)
        self._stats.batches += 1
        if self._on_commit:
            self._on_commit(self._stats)
        self.log_progress()

    def _reach(self, point: str) -> None:
        reach(self._faults, self._stats.stage, point)
