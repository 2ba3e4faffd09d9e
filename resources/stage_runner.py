"""Runs a stage over Kafka offset ranges: read a batch, write its results, then commit.

The commit rule (DESIGN §7): a partition's offset moves only after every record up to it is
acknowledged by Elasticsearch, delivered downstream, or delivered to the DLQ. Any failure
before that raises, so the next run resumes from the last committed offset (at-least-once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipelines.fee_config import FeeConfig
from pipelines.schemas import dlq_envelope, encode, utc_now_iso
from pipelines.stages import Rejected, SourceRecord, arbitrage_records, enrich_records
from pipelines.topics import (
    ALERTS_INDEX,
    ARBITRAGE_ALERTS,
    DLQ_FOR,
    PRODUCTS_ENRICHED,
    PRODUCTS_INDEX,
    RAW_UPDATES,
)
from resources.elasticsearch import BulkOp, ElasticsearchResource
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

    def produced(self, topic: str) -> int:
        return self.deliveries.delivered_by_topic.get(topic, 0)

    @property
    def records_per_s(self) -> float:
        return self.records_in / self.seconds if self.seconds > 0 else 0.0


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

    def run(self, group_id: str, ranges: list[PartitionRange]) -> StageStats:
        stats = StageStats(self.stage)
        started = time.perf_counter()
        for partition_range in ranges:
            if partition_range.size:
                self._run_partition(group_id, partition_range, stats)
        stats.seconds = time.perf_counter() - started
        return stats

    # ------------------------------------------------------------------ one partition

    def _run_partition(self, group_id: str, span: PartitionRange, stats: StageStats) -> None:
        consumer = self.kafka.consumer(group_id)
        consumer.assign([TopicPartition(self.source_topic, span.partition, span.start)])
        next_offset = span.start
        first_seen: int | None = None
        idle_since = time.monotonic()
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
                self._process(records, stats)
                next_offset = records[-1].offset + 1
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
        finally:
            consumer.close()

    def _process(self, records: list[SourceRecord], stats: StageStats) -> None:
        stats.records_in += len(records)
        for record in records:
            hour = record.timestamp_ms - record.timestamp_ms % HOUR_MS
            stats.records_by_hour[hour] = stats.records_by_hour.get(hour, 0) + 1
        with self.kafka.producer() as producer:
            if self.stage == ENRICHMENT:
                rejected = self._enrich(records, producer, stats)
            else:
                rejected = self._arbitrage(records, producer, stats)
            failed_at = utc_now_iso()
            for item in rejected:
                self._to_dlq(producer, item, failed_at)
            stats.to_dlq += len(rejected)
            stats.dlq_reasons = (stats.dlq_reasons + [r.reason for r in rejected])[-20:]
            # Leaving the block flushes and raises unless every delivery was acknowledged.
        stats.deliveries.merge(producer.report)

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

    def _enrich(
        self, records: list[SourceRecord], producer: CheckedProducer, stats: StageStats
    ) -> list[Rejected]:
        batch = enrich_records(records, self.fees)
        ops = [
            BulkOp(
                "index", PRODUCTS_INDEX, product["asin"], product, product["source_timestamp_ms"]
            )
            for _, product in batch.products
        ]
        outcome = self.es.bulk_write(ops)
        stats.indexed += outcome.written
        stats.unchanged += outcome.unchanged
        stats.es_retries += outcome.retries
        rejected = list(batch.rejected)
        for position, (record, product) in enumerate(batch.products):
            if position in outcome.rejected:
                rejected.append(Rejected(record, outcome.rejected[position]))
            else:
                producer.produce(PRODUCTS_ENRICHED, product["asin"], encode(product))
        return rejected

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
        stats.indexed += outcome.written
        stats.unchanged += outcome.unchanged
        stats.es_retries += outcome.retries
        stats.alerts_raised += len(fresh)
        rejected = list(batch.rejected)
        rejected += [Rejected(fresh[p][0], reason) for p, reason in outcome.rejected.items()]
        return rejected
