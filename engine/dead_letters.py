"""Rejected records → the stage's DLQ topic, one envelope each, with the reason."""

from __future__ import annotations

from engine.stats import StageStats
from pipelines.messages.codec import encode
from pipelines.messages.dlq import dlq_envelope, dlq_key
from pipelines.messages.timestamps import utc_now_iso
from pipelines.stage_specs import StageSpec
from pipelines.transforms import Rejected
from resources.kafka import CheckedProducer


def produce_dead_letters(
    producer: CheckedProducer, spec: StageSpec, rejected: list[Rejected], stats: StageStats
) -> None:
    """Produce one envelope per rejected record (delivered by the next checkpoint)."""
    failed_at = utc_now_iso()
    for item in rejected:
        record = item.record
        envelope = dlq_envelope(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            stage=spec.name,
            error=item.reason,
            failed_at=failed_at,
        )
        key = None if record.key is None else dlq_key(record.key)
        producer.produce(spec.dlq_topic, key, encode(envelope))
    stats.note_dead_letters([item.reason for item in rejected])
