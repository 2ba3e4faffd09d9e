"""What a stage run counted: records in, written, dead-lettered, and where it committed."""

from __future__ import annotations

from dataclasses import dataclass, field

from arbitrage.clients.elasticsearch import BulkOutcome
from arbitrage.clients.kafka import DeliveryReport
from arbitrage.domain.transforms import SourceRecord

HOUR_MS = 3_600_000
# The newest reasons kept for the run's metadata.
KEPT_REASONS = 20


@dataclass
class StageStats:
    stage: str
    records_in: int = 0
    indexed: int = 0
    unchanged: int = 0
    to_dlq: int = 0
    es_retries: int = 0
    batches: int = 0
    seconds: float = 0.0
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition → [first, next)
    dlq_reasons: list[str] = field(default_factory=list)
    deliveries: DeliveryReport = field(default_factory=DeliveryReport)
    # Records per hour of their Kafka timestamp (hour start, epoch ms): the hourly partitions.
    records_by_hour: dict[int, int] = field(default_factory=dict)
    # Counts only one stage has (e.g. alerts_raised), reported on its output topic asset.
    counters: dict[str, int] = field(default_factory=dict)

    def count_in(self, records: list[SourceRecord]) -> None:
        self.records_in += len(records)
        for record in records:
            hour = record.timestamp_ms - record.timestamp_ms % HOUR_MS
            self.records_by_hour[hour] = self.records_by_hour.get(hour, 0) + 1

    def count_bulk(self, outcome: BulkOutcome) -> None:
        self.indexed += outcome.written
        self.unchanged += outcome.unchanged
        self.es_retries += outcome.retries

    def count(self, name: str, n: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def note_dead_letters(self, reasons: list[str]) -> None:
        self.to_dlq += len(reasons)
        self.dlq_reasons = (self.dlq_reasons + reasons)[-KEPT_REASONS:]

    def produced(self, topic: str) -> int:
        return self.deliveries.delivered_by_topic.get(topic, 0)

    @property
    def records_per_s(self) -> float:
        return self.records_in / self.seconds if self.seconds > 0 else 0.0
