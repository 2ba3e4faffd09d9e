"""Rejected records → the stage's DLQ topic, one envelope each, with the reason.

A breaker guards it: when more than ``max_reject_ratio`` of a batch of at least
``BREAKER_MIN_BATCH`` records would be dead-lettered, the cause is almost never the records (a
changed producer, a wrong fee file, a mapping that no longer fits), so the run fails with a
sentence instead, before anything of the batch is committed.
"""

from __future__ import annotations

from arbitrage.clients.kafka import CheckedProducer
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.dlq import dlq_envelope, dlq_key
from arbitrage.domain.messages.timestamps import utc_now_iso
from arbitrage.domain.stage_specs import StageSpec
from arbitrage.domain.transforms import Rejected
from arbitrage.engine.stats import StageStats

BREAKER_MIN_BATCH = 100


class RejectRateError(RuntimeError):
    """Too much of one batch would go to the DLQ; the message says how much and what to check."""


def check_reject_rate(
    spec: StageSpec, rejected: list[Rejected], batch_records: int, max_reject_ratio: float
) -> None:
    """Raise RejectRateError when too much of the batch would be dead-lettered; called before
    anything of the batch is produced."""
    if batch_records >= BREAKER_MIN_BATCH and len(rejected) > max_reject_ratio * batch_records:
        first = rejected[0]
        raise RejectRateError(
            f"{spec.name}: {len(rejected)} of {batch_records} records of "
            f"{first.record.topic}[{first.record.partition}] from offset {first.record.offset} "
            f"would go to {spec.dlq_topic} (more than {max_reject_ratio:.0%}); nothing was "
            f"committed. The first reason: {first.reason}. If these records really are bad, "
            "rerun with a higher max_reject_ratio in the run config"
        )


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
