"""Runs a stage over Kafka offset ranges: read a batch, let the processor write it, commit.

The commit rule (docs/design.md, "Delivery"): a batch's outputs, dead letters and source
offset commit in one Kafka transaction, after Elasticsearch acknowledged the batch's writes.
arbitrage/engine/checkpoint.py alone does that; any failure before it raises, so the next run
resumes from the last committed offset. Each partition is worked by a transactional producer whose
id names (group, topic, partition): a newer run of the partition fences an older one.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.kafka_offsets import committed_offset
from arbitrage.domain.transforms import SourceRecord
from arbitrage.engine.checkpoint import Checkpoint, InFlight
from arbitrage.engine.kafka_transactions import TransactionalProducer, transactional_id
from arbitrage.engine.processors import build_processor
from arbitrage.engine.ranges import PartitionRange
from arbitrage.engine.stage_setup import StageSetup
from arbitrage.engine.stats import StageStats


class RangeUnavailableError(RuntimeError):
    """The broker stopped returning messages before the end of the requested range."""


# How often a run whose cyclic collector is paused collects the young generations itself.
YOUNG_GC_EVERY_S = 30.0


class _PausedCyclicGc:
    """Holds the cyclic garbage collector off while a partition is worked.

    A batch allocates hundreds of thousands of dicts, which keeps triggering collections, and
    the older ones walk every tracked object in the process (~180 000 once Dagster is imported,
    plus the batches in flight): profiled, that was about a quarter of the stage's CPU time.
    Pausing it per batch was not enough: a pipelined batch stays alive into the next one, so
    each collection between two batches still walked it (measured: ~12 % of the stage's CPU).
    Batches create no reference cycles, so reference counting frees them anyway; whatever
    cycles other code makes are collected by ``tick`` every ``YOUNG_GC_EVERY_S`` (young
    generations only: a few tens of milliseconds) and by the collector once the run resumes it.
    """

    def __init__(self) -> None:
        self._enabled = gc.isenabled()
        self._collected_at = time.monotonic()

    def __enter__(self) -> _PausedCyclicGc:
        gc.disable()
        return self

    def tick(self) -> None:
        if self._enabled and time.monotonic() - self._collected_at >= YOUNG_GC_EVERY_S:
            gc.collect(1)
            self._collected_at = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        if self._enabled:
            gc.enable()


# How long a batch of a bounded range may wait to fill while records keep coming slowly.
FILL_S = 1.0
# How long one poll waits when a following run finds nothing (then it commits and checks stop).
FOLLOW_POLL_S = 0.2


@dataclass(frozen=True)
class Following:
    """A live run that stays on its partition: it goes on past the end of its range, reading
    what arrives, until nothing has come for ``idle_s``, it has run for ``max_s``, or a stop is
    requested. A batch is cut at ``batch_size`` records or ``linger_s`` after its first record,
    so a single update is processed at once."""

    idle_s: float = 60.0
    max_s: float = 900.0
    linger_s: float = 0.2


def _never() -> bool:
    return False


class StageRunner:
    """One stage bound to its clients and fee configuration."""

    def __init__(
        self,
        setup: StageSetup,
        kafka: KafkaClient,
        logger: logging.Logger | Any | None = None,
        idle_timeout_s: float = 30.0,
        on_batch: Callable[[StageStats], None] | None = None,
    ) -> None:
        self.setup = setup
        self.spec = setup.spec
        self.batch_size = setup.batch_size
        self.faults = setup.faults
        self.kafka = kafka
        self.log = logger or logging.getLogger(__name__)
        self.idle_timeout_s = idle_timeout_s
        self.on_batch = on_batch

    def run(
        self,
        group_id: str,
        ranges: list[PartitionRange],
        following: Following | None = None,
        stop_requested: Callable[[], bool] = _never,
    ) -> StageStats:
        """Process ``ranges``; with ``following``, the one range's partition is followed past
        its end (see ``Following``). ``stop_requested`` is asked between batches: when it says
        so, the run stops after committing the batch it has."""
        if following is not None and len(ranges) != 1:
            raise ValueError(
                f"a following run works one partition; it was given {len(ranges)} ranges"
            )
        stats = StageStats(self.spec.name)
        started = time.perf_counter()
        for partition_range in ranges:
            if stop_requested():
                break
            if partition_range.size or following is not None:
                self._run_partition(group_id, partition_range, stats, following, stop_requested)
        stats.seconds = time.perf_counter() - started
        return stats

    def _run_partition(
        self,
        group_id: str,
        span: PartitionRange,
        stats: StageStats,
        following: Following | None,
        stop_requested: Callable[[], bool],
    ) -> None:
        topic = self.spec.source_topic
        # One producer per partition and run (a new one costs ~0.1 s, not per batch). Creating
        # it fences any older run of this partition, so what is committed from here on is ours.
        producer = TransactionalProducer(
            self.kafka.producer_config(), transactional_id(group_id, topic, span.partition)
        )
        consumer = self.kafka.consumer(group_id)
        try:
            if following is not None:
                span = self._followed_span(consumer, span)
            elif group_id == self.spec.live_group:
                span = self._take_over(consumer, group_id, span)
            if span.size or following is not None:
                self._work(consumer, producer, group_id, span, stats, following, stop_requested)
        finally:
            producer.abort()
            consumer.close()

    def _take_over(self, consumer: Consumer, group_id: str, span: PartitionRange) -> PartitionRange:
        """The live group's offset never moves back: a run fenced just now may have committed
        past the planned start, and what it committed is not done twice."""
        committed = committed_offset(consumer, self.spec.source_topic, span.partition)
        if committed is not None and committed > span.start:
            self.log.info(
                f"{self.spec.name}: {self.spec.source_topic}[{span.partition}] was committed at "
                f"{committed} by an earlier run; starting there instead of {span.start}"
            )
            return PartitionRange(span.partition, min(committed, span.end), span.end)
        return span

    def _followed_span(self, consumer: Consumer, span: PartitionRange) -> PartitionRange:
        """A following run starts where the group is, whatever range it was planned with."""
        committed = committed_offset(consumer, self.spec.source_topic, span.partition)
        start = span.start if committed is None else max(committed, span.start)
        return PartitionRange(span.partition, start, span.end)

    def _work(
        self,
        consumer: Consumer,
        producer: TransactionalProducer,
        group_id: str,
        span: PartitionRange,
        stats: StageStats,
        following: Following | None,
        stop_requested: Callable[[], bool],
    ) -> None:
        consumer.assign([TopicPartition(self.spec.source_topic, span.partition, span.start)])
        processor = build_processor(self.setup, producer, group_id, span.partition)
        checkpoint = Checkpoint(
            consumer,
            producer,
            self.spec.source_topic,
            span,
            stats,
            self.log,
            self.on_batch,
            self.faults,
            background=processor.commits_in_background,
        )
        # A pipelined processor's batch is finished and committed during the next one, or as
        # soon as nothing more is there (a following run must not hold an update back).
        pending: InFlight | None = None
        with _PausedCyclicGc() as paused_gc:
            try:
                for records in self._batches(consumer, span, following, stop_requested):
                    paused_gc.tick()
                    if not records:
                        if pending is not None:
                            processor.finish(pending, stats)
                            checkpoint.commit(pending)
                            pending = None
                        checkpoint.commit_position(bounded=False)
                        continue
                    if checkpoint.first_seen is None:
                        checkpoint.first_seen = records[0].offset
                    batch = processor.start(records, stats, pending)
                    if processor.pipelined:
                        if pending is not None:
                            checkpoint.commit(pending)
                        pending = batch
                        continue
                    processor.finish(batch, stats)
                    checkpoint.commit(batch)
                if pending is not None:
                    processor.finish(pending, stats)
                    checkpoint.commit(pending)
                checkpoint.commit_position(bounded=following is None)
            finally:
                processor.close()
                checkpoint.log_progress(final=True)

    def _batches(
        self,
        consumer: Consumer,
        span: PartitionRange,
        following: Following | None,
        stop_requested: Callable[[], bool],
    ) -> Iterator[list[SourceRecord]]:
        """The records in batches of up to ``batch_size``, in offset order: the range's, or
        (following) whatever arrives, with an empty batch whenever nothing did."""
        topic = self.spec.source_topic
        next_offset = span.start
        started = idle_since = time.monotonic()
        slot = TopicPartition(topic, span.partition)
        while True:
            if following is None:
                if consumer.position([slot])[0].offset >= span.end:
                    return  # done (the rest, if any, was transaction markers or aborted)
            else:
                reason = self._stop_reason(following, started, idle_since, stop_requested)
                if reason:
                    self.log.info(
                        f"{self.spec.name}: {topic}[{span.partition}] followed for "
                        f"{time.monotonic() - started:.0f}s; stopping: {reason}"
                    )
                    return
            if stop_requested():
                return
            records = self._fill_batch(consumer, span, slot, next_offset, following)
            if records:
                next_offset = records[-1].offset + 1
                yield records
                # Idle counts from when the batch was handled: its processing is not idleness.
                idle_since = time.monotonic()
                continue
            if following is not None:
                yield []
                continue
            if consumer.position([slot])[0].offset >= span.end:
                return  # the rest of the range was deleted or compacted away
            if time.monotonic() - idle_since > self.idle_timeout_s:
                raise RangeUnavailableError(
                    f"{topic}[{span.partition}] returned nothing for "
                    f"{self.idle_timeout_s:.0f}s at offset {next_offset} "
                    f"(range ends {span.end})"
                )

    @staticmethod
    def _stop_reason(
        following: Following,
        started: float,
        idle_since: float,
        stop_requested: Callable[[], bool],
    ) -> str:
        now = time.monotonic()
        if stop_requested():
            return "a stop was requested"
        if now - idle_since >= following.idle_s:
            return f"nothing arrived for {following.idle_s:.0f}s"
        if now - started >= following.max_s:
            return f"the run reached its {following.max_s:.0f}s limit"
        return ""

    def _fill_batch(
        self,
        consumer: Consumer,
        span: PartitionRange,
        slot: TopicPartition,
        next_offset: int,
        following: Following | None,
    ) -> list[SourceRecord]:
        """Up to ``batch_size`` records.

        Offsets are not messages (transaction markers take some), so the number of records
        left is unknown: ask in short waits. A bounded range's batch stops once the consumer's
        position reaches the range's end, or the broker has nothing more right now, or after
        ``FILL_S``; a following run's batch is cut ``linger_s`` after its first record, and an
        empty poll of ``FOLLOW_POLL_S`` returns nothing.
        """
        end = None if following is not None else span.end
        wanted = self.batch_size if end is None else min(self.batch_size, end - next_offset)
        records: list[SourceRecord] = []
        deadline = time.monotonic() + (FILL_S if following is None else FOLLOW_POLL_S)
        while len(records) < wanted:
            timeout = max(0.0, min(0.1, deadline - time.monotonic()))
            messages = consumer.consume(num_messages=wanted - len(records), timeout=timeout)
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                if end is not None and message.offset() >= end:
                    return records
                if message.offset() < span.start:
                    # The broker reset us to the earliest offset: the range starts past the end
                    # of the log (e.g. the topic was recreated). Never process or commit what
                    # lies before the range; the idle timeout reports it.
                    continue
                if following is not None and not records:
                    deadline = time.monotonic() + following.linger_s
                _, timestamp = message.timestamp()
                records.append(
                    SourceRecord(
                        message.topic(),
                        message.partition(),
                        message.offset(),
                        message.key(),
                        message.value(),
                        timestamp,
                    )
                )
            if end is not None and consumer.position([slot])[0].offset >= end:
                break
            if following is None:
                if not messages and (records or time.monotonic() > deadline):
                    break
            elif time.monotonic() >= deadline:
                break
        return records
