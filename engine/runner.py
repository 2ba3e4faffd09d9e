"""Runs a stage over Kafka offset ranges: read a batch, let the processor write it, commit.

The commit rule (docs/design.md, "Delivery"): a batch's outputs, dead letters and source
offset commit in one Kafka transaction, after Elasticsearch acknowledged the batch's writes.
engine/checkpoint.py alone does that; any failure before it raises, so the next run resumes
from the last committed offset. Each partition is worked by a transactional producer whose id
names (group, topic, partition): a newer run of the partition fences an older one.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from engine.checkpoint import Checkpoint, InFlight
from engine.faults import FaultInjector
from engine.processors import build_processor
from engine.ranges import PartitionRange
from engine.stats import StageStats
from pipelines.fee_config import FeeConfig
from pipelines.stage_specs import StageSpec
from pipelines.transforms import SourceRecord
from resources.elasticsearch import ElasticsearchResource
from resources.kafka import KafkaResource
from resources.kafka_offsets import committed_offset
from resources.kafka_transactions import TransactionalProducer, transactional_id


class RangeUnavailableError(RuntimeError):
    """The broker stopped returning messages before the end of the requested range."""


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off while one batch is processed.

    A batch allocates hundreds of thousands of dicts, which keeps triggering collections, and
    the older ones walk every tracked object in the process (~180 000 once Dagster is imported,
    plus the batches in flight): profiled, that was about a quarter of the stage's CPU time.
    The batch creates no reference cycles, so reference counting frees all of it anyway; the
    collector resumes (and catches up) after the batch.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# How long a batch may wait to fill while records keep coming slowly.
FILL_S = 1.0


class StageRunner:
    """One stage bound to its clients and fee configuration."""

    def __init__(
        self,
        spec: StageSpec,
        kafka: KafkaResource,
        es: ElasticsearchResource,
        fees: FeeConfig,
        batch_size: int = 5000,
        logger: logging.Logger | Any | None = None,
        idle_timeout_s: float = 30.0,
        on_batch: Callable[[StageStats], None] | None = None,
        write_chunk_size: int = 1000,
        max_reject_ratio: float = 0.5,
        faults: FaultInjector | None = None,
    ) -> None:
        self.spec = spec
        self.kafka = kafka
        self.es = es
        self.fees = fees
        self.batch_size = batch_size
        self.log = logger or logging.getLogger(__name__)
        self.idle_timeout_s = idle_timeout_s
        self.on_batch = on_batch
        self.write_chunk_size = max(1, write_chunk_size)
        self.max_reject_ratio = max_reject_ratio
        self.faults = faults

    def run(self, group_id: str, ranges: list[PartitionRange]) -> StageStats:
        stats = StageStats(self.spec.name)
        started = time.perf_counter()
        for partition_range in ranges:
            if partition_range.size:
                self._run_partition(group_id, partition_range, stats)
        stats.seconds = time.perf_counter() - started
        return stats

    def _run_partition(self, group_id: str, span: PartitionRange, stats: StageStats) -> None:
        topic = self.spec.source_topic
        # One producer per partition and run (a new one costs ~0.1 s, not per batch). Creating
        # it fences any older run of this partition, so what is committed from here on is ours.
        producer = TransactionalProducer(
            self.kafka.producer_config(), transactional_id(group_id, topic, span.partition)
        )
        consumer = self.kafka.consumer(group_id)
        try:
            if group_id == self.spec.live_group:
                span = self._take_over(consumer, group_id, span)
            if span.size:
                self._work(consumer, producer, group_id, span, stats)
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

    def _work(
        self,
        consumer: Consumer,
        producer: TransactionalProducer,
        group_id: str,
        span: PartitionRange,
        stats: StageStats,
    ) -> None:
        consumer.assign([TopicPartition(self.spec.source_topic, span.partition, span.start)])
        processor = build_processor(
            self.spec,
            self.es,
            self.fees,
            producer,
            self.write_chunk_size,
            self.max_reject_ratio,
            group_id,
            span.partition,
            self.faults,
        )
        checkpoint = Checkpoint(
            consumer,
            producer,
            self.spec.source_topic,
            span,
            stats,
            self.log,
            self.on_batch,
            self.faults,
        )
        # A pipelined processor's batch is finished and committed during the next one.
        pending: InFlight | None = None
        try:
            for records in self._batches(consumer, span):
                if checkpoint.first_seen is None:
                    checkpoint.first_seen = records[0].offset
                with _cyclic_gc_paused():
                    batch = processor.start(records, stats, pending)
                    if processor.pipelined:
                        if pending is not None:
                            checkpoint.commit(pending)
                        pending = batch
                        continue
                    processor.finish(batch, stats)
                checkpoint.commit(batch)
            if pending is not None:
                with _cyclic_gc_paused():
                    processor.finish(pending, stats)
                    checkpoint.commit(pending)
            checkpoint.commit_position()
        finally:
            processor.close()

    def _batches(self, consumer: Consumer, span: PartitionRange) -> Iterator[list[SourceRecord]]:
        """The range's records in batches of up to ``batch_size``, in offset order."""
        topic = self.spec.source_topic
        next_offset = span.start
        idle_since = time.monotonic()
        slot = TopicPartition(topic, span.partition)
        while next_offset < span.end:
            if consumer.position([slot])[0].offset >= span.end:
                return  # only transaction markers (or aborted records) were left
            records = self._fill_batch(consumer, span, slot, next_offset)
            if not records:
                if consumer.position([slot])[0].offset >= span.end:
                    return  # the rest of the range was deleted or compacted away
                if time.monotonic() - idle_since > self.idle_timeout_s:
                    raise RangeUnavailableError(
                        f"{topic}[{span.partition}] returned nothing for "
                        f"{self.idle_timeout_s:.0f}s at offset {next_offset} "
                        f"(range ends {span.end})"
                    )
                continue
            idle_since = time.monotonic()
            next_offset = records[-1].offset + 1
            yield records

    def _fill_batch(
        self, consumer: Consumer, span: PartitionRange, slot: TopicPartition, next_offset: int
    ) -> list[SourceRecord]:
        """Up to ``batch_size`` records, gathered for at most ``FILL_S``.

        Offsets are not messages (transaction markers take some), so the number of records
        left in the range is unknown: ask in short waits and stop once the consumer's position
        reaches the range's end or the broker has nothing more right now.
        """
        wanted = min(self.batch_size, span.end - next_offset)
        records: list[SourceRecord] = []
        deadline = time.monotonic() + FILL_S
        while len(records) < wanted:
            messages = consumer.consume(num_messages=wanted - len(records), timeout=0.1)
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                if message.offset() >= span.end:
                    return records
                if message.offset() < span.start:
                    # The broker reset us to the earliest offset: the range starts past the end
                    # of the log (e.g. the topic was recreated). Never process or commit what
                    # lies before the range; the idle timeout reports it.
                    continue
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
            if consumer.position([slot])[0].offset >= span.end:
                break
            if not messages and (records or time.monotonic() > deadline):
                break
        return records
