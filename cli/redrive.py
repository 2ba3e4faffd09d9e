"""Redrive dead letters: re-produce their originals to the source topic after a fix.

Each redriven dead letter is recorded in the Elasticsearch index ``dlq-redrives`` (doc id
``<dlq>:<partition>:<offset>``, written with ``create``), so running the same redrive twice
redrives nothing twice. The originals are produced and flushed before the ledger is written:
a crash in between can redrive a letter again on the next run (the stages are idempotent
downstream), never lose one. An original cut in its envelope (over 4 MiB) is read back from
the source topic while it is retained, and checked against its SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from pipelines import topics
from pipelines.messages.timestamps import utc_now_iso
from pipelines.stage_specs import STAGES
from resources.elasticsearch import BulkOp, ElasticsearchResource
from resources.kafka import KafkaResource

LEDGER_INDEX = topics.REDRIVE_LEDGER_INDEX
READER_GROUP = topics.tool_name("cli-redrive")  # reads only; commits nothing
REDRIVEN_FROM_HEADER = "arbitrage.redriven_from"
_LEDGER_MAPPING = {
    "dynamic": "strict",
    "properties": {
        "dlq_topic": {"type": "keyword"},
        "source_topic": {"type": "keyword"},
        "source_partition": {"type": "integer"},
        "source_offset": {"type": "long"},
        "redriven_at": {"type": "date"},
    },
}


@dataclass
class RedriveReport:
    examined: int = 0
    matched: int = 0
    redriven: int = 0
    already_redriven: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Letter:
    ledger_id: str
    envelope: dict[str, Any]


def dlq_topics() -> list[str]:
    return [spec.dlq_topic for spec in STAGES]


def redrive(
    kafka: KafkaResource,
    es: ElasticsearchResource,
    dlq_topic: str,
    *,
    since_ms: int | None = None,
    reason_contains: str | None = None,
    dry_run: bool = False,
) -> RedriveReport:
    if dlq_topic not in dlq_topics():
        raise ValueError(f"{dlq_topic} is not a DLQ topic; use one of {', '.join(dlq_topics())}")
    report = RedriveReport()
    letters = []
    for partition, offset, value in _read(kafka, dlq_topic, since_ms):
        report.examined += 1
        try:
            envelope = json.loads(value)
            envelope["source_topic"], envelope["error"]
        except (TypeError, ValueError, KeyError):
            report.problems.append(f"{dlq_topic}[{partition}]@{offset} is not a DLQ envelope")
            continue
        if reason_contains and reason_contains not in envelope["error"]:
            continue
        report.matched += 1
        letters.append(_Letter(f"{dlq_topic}:{partition}:{offset}", envelope))
    _ensure_ledger(es)
    done = es.existing_ids(LEDGER_INDEX, [letter.ledger_id for letter in letters])
    fresh = [letter for letter in letters if letter.ledger_id not in done]
    report.already_redriven = len(letters) - len(fresh)
    originals = []
    for letter in fresh:
        original = _original(kafka, letter.envelope)
        if isinstance(original, str):
            report.problems.append(f"{letter.ledger_id}: {original}")
        else:
            originals.append((letter, original))
    if dry_run:
        report.redriven = len(originals)
        return report
    with kafka.producer() as producer:
        for letter, original in originals:
            envelope = letter.envelope
            key = envelope["key"].encode() if envelope.get("key") is not None else None
            producer.produce(
                envelope["source_topic"],
                key,
                original,
                headers={REDRIVEN_FROM_HEADER: letter.ledger_id.encode()},
            )
    redriven_at = utc_now_iso()
    outcome = es.bulk_write(
        [
            BulkOp(
                "create",
                LEDGER_INDEX,
                letter.ledger_id,
                {
                    "dlq_topic": dlq_topic,
                    "source_topic": letter.envelope["source_topic"],
                    "source_partition": letter.envelope["partition"],
                    "source_offset": letter.envelope["offset"],
                    "redriven_at": redriven_at,
                },
            )
            for letter, _ in originals
        ]
    )
    report.problems += [f"ledger: {reason}" for reason in outcome.rejected.values()]
    report.redriven = len(originals)
    return report


def _read(kafka: KafkaResource, topic: str, since_ms: int | None) -> list[tuple[int, int, bytes]]:
    return [
        (message.partition(), message.offset(), message.value())
        for message in kafka.messages_since(topic, since_ms, READER_GROUP)
    ]


def _original(kafka: KafkaResource, envelope: dict[str, Any]) -> bytes | str:
    """The original bytes, or a sentence saying why they cannot be had any more."""
    if not envelope.get("value_truncated"):
        return base64.b64decode(envelope["value"])
    topic, partition, offset = envelope["source_topic"], envelope["partition"], envelope["offset"]
    low, high = kafka.watermarks(topic).get(partition, (0, 0))
    if not low <= offset < high:
        return (
            f"the original ({envelope['value_bytes']} bytes, cut in the envelope) is no longer "
            f"retained in {topic}[{partition}] (offsets {low}-{high})"
        )
    consumer = kafka.consumer(READER_GROUP)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        messages = consumer.consume(num_messages=1, timeout=10.0)
    finally:
        consumer.close()
    if not messages or messages[0].error() is not None or messages[0].offset() != offset:
        return f"could not read the original back from {topic}[{partition}]@{offset}"
    value = messages[0].value() or b""
    if hashlib.sha256(value).hexdigest() != envelope.get("value_sha256"):
        return f"{topic}[{partition}]@{offset} no longer holds the original (SHA-256 differs)"
    return value


def _ensure_ledger(es: ElasticsearchResource) -> None:
    es.client().options(ignore_status=400).indices.create(
        index=LEDGER_INDEX, mappings=_LEDGER_MAPPING
    )
