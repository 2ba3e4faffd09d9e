"""Runs a stage over Kafka offset ranges: read a batch, write its results, then commit.

The commit rule (DESIGN §7): a partition's offset moves only after every record up to it is
acknowledged by Elasticsearch, delivered downstream, or delivered to the DLQ. Any failure
before that raises, so the next run resumes from the last committed offset (at-least-once).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipelines.fee_config import FeeConfig
from pipelines.schemas import EnrichedProduct, dlq_envelope, encode, utc_now_iso
from pipelines.stages import Rejected, SourceRecord, arbitrage_records, enrich_records
from pipelines.topics import (
    ALERTS_INDEX,
    ARBITRAGE_ALERTS,
    DLQ_FOR,
    PRODUCTS_ENRICHED,
    PRODUCTS_INDEX,
    RAW_UPDATES,
)
from resources.elasticsearch import BulkOp, BulkOutcome, ElasticsearchResource
from resources.kafka import CheckedProducer, DeliveryReport, KafkaResource

ENRICHMENT = "enrichment"
ARBITRAGE = "arbitrage"
SOURCE_TOPIC = {ENRICHMENT: RAW_UPDATES, ARBITRAGE: PRODUCTS_ENRICHED}
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class PartitionRange:
    """Offsets [start, end) of one partition."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


@dataclass
class StageStats:
    stage: str
    records_in: int = 0
    indexed: int = 0
    unchanged: int = 0
    to_dlq: int = 0
    alerts_raised: int = 0
    alerts_already_known: int = 0
    es_retries: int = 0
    batches: int = 0
    seconds: float = 0.0
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition → [first, next)
    dlq_reasons: list[str] = field(default_factory=list)
    deliveries: DeliveryReport = field(default_factory=DeliveryReport)
    # Records per hour of their Kafka timestamp (hour start, epoch ms): the hourly partitions.
    records_by_hour: dict[int, int] = field(default_factory=dict)

    def count_bulk(self, outcome: BulkOutcome) -> None:
        self.indexed += outcome.written
        self.unchanged += outcome.unchanged
        self.es_retries += outcome.retries

    def produced(self, topic: str) -> int:
        return self.deliveries.delivered_by_topic.get(topic, 0)

    @property
    def records_per_s(self) -> float:
        return self.records_in / self.seconds if self.seconds > 0 else 0.0


# A record, its enriched product, and that product's JSON (the bulk source and Kafka value).
_Encoded = tuple[SourceRecord, EnrichedProduct, bytes]


@dataclass
class _InFlight:
    """A batch between reading and committing: its bulk writes and validation rejects."""

    next_offset: int  # the offset to commit once the batch is done
    writes: list[tuple[list[_Encoded], Future[BulkOutcome]]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


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


class RangeUnavailableError(RuntimeError):
    """The broker stopped returning messages before the end of the requested range."""


def plan_ranges(
    kafka: KafkaResource,
    group_id: str,
    topic: str,
    partitions: list[int] | None = None,
    max_records: int | None = None,
) -> list[PartitionRange]:
    """From the group's committed offset (or the oldest retained) to the high watermark now."""
    ranges = []
    for lag in kafka.lag(group_id, topic):
        if partitions is not None and lag.partition not in partitions:
            continue
        end = lag.high_watermark
        if max_records is not None:
            end = min(end, lag.start_offset + max_records)
        if end > lag.start_offset:
            ranges.append(PartitionRange(lag.partition, lag.start_offset, end))
    return ranges


class StageRunner:
    """One stage (enrichment or arbitrage) bound to its clients and fee configuration."""

    def __init__(
        self,
        stage: str,
        kafka: KafkaResource,
        es: ElasticsearchResource,
        fees: FeeConfig,
        batch_size: int = 5000,
        logger: logging.Logger | Any | None = None,
        idle_timeout_s: float = 30.0,
        on_batch: Callable[[StageStats], None] | None = None,
        write_chunk_size: int = 1000,
    ) -> None:
        if stage not in SOURCE_TOPIC:
            raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(SOURCE_TOPIC)}")
        self.stage = stage
        self.source_topic = SOURCE_TOPIC[stage]
        self.dlq_topic = DLQ_FOR[self.source_topic]
        self.kafka = kafka
        self.es = es
        self.fees = fees
        self.batch_size = batch_size
        self.log = logger or logging.getLogger(__name__)
        self.idle_timeout_s = idle_timeout_s
        self.on_batch = on_batch
        self.write_chunk_size = max(1, write_chunk_size)

    def run(self, group_id: str, ranges: list[PartitionRange]) -> StageStats:
        stats = StageStats(self.stage)
        started = time.perf_counter()
        # One producer for the run: a new idempotent producer needs its producer id and
        # metadata before its first flush returns (0.1-0.5 s measured), which per batch was a
        # fifth of the run. It is flushed before every commit all the same.
        producer = CheckedProducer(self.kafka.producer_config())
        for partition_range in ranges:
            if partition_range.size:
                self._run_partition(group_id, partition_range, stats, producer)
        stats.seconds = time.perf_counter() - started
        return stats

    # ------------------------------------------------------------------ one partition

    def _run_partition(
        self,
        group_id: str,
        span: PartitionRange,
        stats: StageStats,
        producer: CheckedProducer,
    ) -> None:
        consumer = self.kafka.consumer(group_id)
        consumer.assign([TopicPartition(self.source_topic, span.partition, span.start)])
        next_offset = span.start
        first_seen: int | None = None
        idle_since = time.monotonic()
        # Enrichment pipelines its batches (see _start_enrichment): `pending` is the batch
        # whose writes and deliveries are still in flight, committed during the next one.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="es-bulk")
        pending: _InFlight | None = None
        try:
            while next_offset < span.end:
                wanted = min(self.batch_size, span.end - next_offset)
                messages = consumer.consume(num_messages=wanted, timeout=1.0)
                records = []
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaException(error)
                    if message.offset() >= span.end:
                        break
                    if message.offset() < span.start:
                        # The broker reset us to the earliest offset: the range starts past the
                        # end of the log (e.g. the topic was recreated). Never process or
                        # commit what lies before the range; the idle timeout reports it.
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
                if not records:
                    position = consumer.position(
                        [TopicPartition(self.source_topic, span.partition)]
                    )[0]
                    if position.offset >= span.end:
                        break  # the rest of the range was deleted or compacted away
                    if time.monotonic() - idle_since > self.idle_timeout_s:
                        raise RangeUnavailableError(
                            f"{self.source_topic}[{span.partition}] returned nothing for "
                            f"{self.idle_timeout_s:.0f}s at offset {next_offset} "
                            f"(range ends {span.end})"
                        )
                    continue
                idle_since = time.monotonic()
                if first_seen is None:
                    first_seen = records[0].offset
                next_offset = records[-1].offset + 1
                if self.stage == ENRICHMENT:
                    with _cyclic_gc_paused():
                        batch = self._start_enrichment(records, stats, writer, pending, producer)
                        if pending is not None:
                            self._commit(consumer, span, pending, first_seen, stats, producer)
                    pending = batch
                else:
                    self._process(records, stats, producer)
                    done = _InFlight(next_offset)
                    self._commit(consumer, span, done, first_seen, stats, producer)
            if pending is not None:
                assert first_seen is not None
                with _cyclic_gc_paused():
                    self._deliver(pending, stats, producer)
                    self._commit(consumer, span, pending, first_seen, stats, producer)
        finally:
            # After a failure, writes still queued are dropped: nothing past the last commit
            # counts, and the next run starts from there.
            writer.shutdown(wait=True, cancel_futures=True)
            consumer.close()

    def _commit(
        self,
        consumer: Consumer,
        span: PartitionRange,
        batch: _InFlight,
        first_seen: int,
        stats: StageStats,
        producer: CheckedProducer,
    ) -> None:
        """Wait for the batch's deliveries, then move the partition's offset past it."""
        # Only this batch's messages are outstanding: the next one has produced nothing.
        producer.flush()  # raises unless every delivery was acknowledged
        stats.deliveries.merge(producer.report)
        producer.report = DeliveryReport()
        next_offset = batch.next_offset
        consumer.commit(
            offsets=[TopicPartition(self.source_topic, span.partition, next_offset)],
            asynchronous=False,
        )
        stats.ranges[span.partition] = (first_seen, next_offset)
        stats.batches += 1
        if self.on_batch:
            self.on_batch(stats)
        self.log.info(
            f"{self.stage}: {self.source_topic}[{span.partition}] committed {next_offset} "
            f"({next_offset - span.start}/{span.size}); in {stats.records_in}, "
            f"dlq {stats.to_dlq}"
        )

    def _count_in(self, records: list[SourceRecord], stats: StageStats) -> None:
        stats.records_in += len(records)
        for record in records:
            hour = record.timestamp_ms - record.timestamp_ms % HOUR_MS
            stats.records_by_hour[hour] = stats.records_by_hour.get(hour, 0) + 1

    def _process(
        self, records: list[SourceRecord], stats: StageStats, producer: CheckedProducer
    ) -> None:
        """One arbitrage batch; the caller's commit flushes and checks its deliveries."""
        self._count_in(records, stats)
        with _cyclic_gc_paused():
            rejected = self._arbitrage(records, producer, stats)
            self._dead_letters(producer, rejected, stats)

    def _dead_letters(
        self, producer: CheckedProducer, rejected: list[Rejected], stats: StageStats
    ) -> None:
        failed_at = utc_now_iso()
        for item in rejected:
            self._to_dlq(producer, item, failed_at)
        stats.to_dlq += len(rejected)
        stats.dlq_reasons = (stats.dlq_reasons + [r.reason for r in rejected])[-20:]

    def _to_dlq(self, producer: CheckedProducer, item: Rejected, failed_at: str) -> None:
        record = item.record
        envelope = dlq_envelope(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            stage=self.stage,
            error=item.reason,
            failed_at=failed_at,
        )
        producer.produce(self.dlq_topic, record.key, encode(envelope))

    # ------------------------------------------------------------------ enrichment, pipelined
    #
    # Enrichment is CPU-bound Python and indexing is Elasticsearch's work, so the two are
    # overlapped: a batch is enriched in chunks of `write_chunk_size`, each chunk handed to a
    # writer thread that sends its bulk request and waits for the answer (the GIL is free while
    # it waits) while this thread enriches the next chunk. Batches overlap the same way: batch
    # k's last writes are still being indexed, and its messages delivered, while batch k+1 is
    # enriched; k is committed after that. The commit rule is unchanged: a batch's offset
    # moves only once all its bulk items are acknowledged and all its messages (products and
    # dead letters) are delivered, and nothing of a batch is produced unless every one of its
    # bulk requests succeeded.

    def _start_enrichment(
        self,
        records: list[SourceRecord],
        stats: StageStats,
        writer: ThreadPoolExecutor,
        previous: _InFlight | None,
        producer: CheckedProducer,
    ) -> _InFlight:
        """Enrich the batch chunk by chunk and queue the chunks' bulk writes.

        ``previous`` (the batch before, if any) is delivered after the first chunk: by then its
        last bulk request has been answered while that chunk was being enriched.
        """
        self._count_in(records, stats)
        batch = _InFlight(records[-1].offset + 1)
        for start in range(0, len(records), self.write_chunk_size):
            enriched = enrich_records(records[start : start + self.write_chunk_size], self.fees)
            batch.rejected += enriched.rejected
            # Encoded once: the same bytes are the bulk source and the Kafka value.
            encoded = [(record, product, encode(product)) for record, product in enriched.products]
            ops = [
                BulkOp("index", PRODUCTS_INDEX, p["asin"], value, p["source_timestamp_ms"])
                for _, p, value in encoded
            ]
            batch.writes.append((encoded, writer.submit(self.es.bulk_write, ops)))
            if previous is not None:
                self._deliver(previous, stats, producer)
                previous = None
            if any(f.done() and f.exception() is not None for _, f in batch.writes):
                break  # Elasticsearch already failed: _deliver raises it for this batch
        return batch

    def _deliver(self, batch: _InFlight, stats: StageStats, producer: CheckedProducer) -> None:
        """Wait for the batch's bulk answers, then produce what was accepted and the DLQ."""
        outcomes = [future.result() for _, future in batch.writes]  # raises if ES failed
        es_rejected: list[Rejected] = []
        for (encoded, _), outcome in zip(batch.writes, outcomes, strict=True):
            stats.count_bulk(outcome)
            for position, (record, product, value) in enumerate(encoded):
                if position in outcome.rejected:
                    es_rejected.append(Rejected(record, outcome.rejected[position]))
                else:
                    producer.produce(PRODUCTS_ENRICHED, product["asin"], value)
        # Validation rejects first, then Elasticsearch's, each in record order.
        self._dead_letters(producer, batch.rejected + es_rejected, stats)

    def _arbitrage(
        self, records: list[SourceRecord], producer: CheckedProducer, stats: StageStats
    ) -> list[Rejected]:
        batch = arbitrage_records(records, self.fees, utc_now_iso())
        known = self.es.existing_ids(ALERTS_INDEX, [alert["alert_id"] for _, alert in batch.alerts])
        fresh = [
            (record, alert) for record, alert in batch.alerts if alert["alert_id"] not in known
        ]
        stats.alerts_already_known += len(batch.alerts) - len(fresh)
        # Produce before indexing: if the run dies in between, the rerun still finds the id
        # unknown and produces again (at-least-once) instead of losing the alert on the topic.
        for _, alert in fresh:
            producer.produce(ARBITRAGE_ALERTS, alert["asin"], encode(alert))
        producer.flush()
        outcome = self.es.bulk_write(
            [BulkOp("create", ALERTS_INDEX, alert["alert_id"], alert) for _, alert in fresh]
        )
        stats.count_bulk(outcome)
        stats.alerts_raised += len(fresh)
        rejected = list(batch.rejected)
        rejected += [Rejected(fresh[p][0], reason) for p, reason in outcome.rejected.items()]
        return rejected
