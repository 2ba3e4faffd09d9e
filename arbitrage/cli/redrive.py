"""Redrive dead letters: re-produce their originals to the source topic after a fix.

A letter goes back only to the source topic of the stage whose DLQ it is in
(arbitrage/domain/stage_specs.py), whatever its envelope says: anyone who can write to a DLQ topic
could otherwise have a redrive inject records into any topic the CLI may write. A letter naming
another source topic, or whose value no longer matches the SHA-256 of the original, is refused and
reported, not sent.

Each redriven dead letter is recorded in the Elasticsearch index ``dlq-redrives`` (doc id
``<dlq>:<partition>:<offset>``, written with ``create``), so running the same redrive twice
redrives nothing twice. The originals are produced and flushed before the ledger is written:
a crash in between can redrive a letter again on the next run (the stages are idempotent
downstream), never lose one. An original cut in its envelope (over 4 MiB) is read back from
the source topic while it is retained; kept whole or read back, the value is checked against the
envelope's SHA-256 and length.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from arbitrage.clients.elasticsearch import BulkOp, ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.messages.timestamps import utc_now_iso
from arbitrage.domain.stage_specs import STAGES, StageSpec

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
    kafka: KafkaClient,
    es: ElasticsearchClient,
    dlq_topic: str,
    *,
    since_ms: int | None = None,
    reason_contains: str | None = None,
    dry_run: bool = False,
) -> RedriveReport:
    spec = next((spec for spec in STAGES if spec.dlq_topic == dlq_topic), None)
    if spec is None:
        raise ValueError(f"{dlq_topic} is not a DLQ topic; use one of {', '.join(dlq_topics())}")
    report = RedriveReport()
    letters = []
    for partition, offset, value in _read(kafka, dlq_topic, since_ms):
        report.examined += 1
        where = f"{dlq_topic}[{partition}]@{offset}"
        envelope = _envelope(value)
        if envelope is None:
            report.problems.append(f"{where} is not a DLQ envelope")
            continue
        if reason_contains and reason_contains not in envelope["error"]:
            continue
        report.matched += 1
        if envelope["source_topic"] != spec.source_topic:
            report.problems.append(
                f"{where} names the source topic {envelope['source_topic']!r}, but {dlq_topic} "
                f"holds the letters of {spec.source_topic} only: refused"
            )
            continue
        letters.append(_Letter(f"{dlq_topic}:{partition}:{offset}", envelope))
    _ensure_ledger(es)
    done = es.existing_ids(LEDGER_INDEX, [letter.ledger_id for letter in letters])
    fresh = [letter for letter in letters if letter.ledger_id not in done]
    report.already_redriven = len(letters) - len(fresh)
    originals = []
    for letter in fresh:
        original = _original(kafka, spec, letter.envelope)
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
                spec.source_topic,
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
                    "source_topic": spec.source_topic,
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


def _read(kafka: KafkaClient, topic: str, since_ms: int | None) -> list[tuple[int, int, bytes]]:
    return [
        (message.partition(), message.offset(), message.value())
        for message in kafka.messages_since(topic, since_ms, READER_GROUP)
    ]


# What redrive reads from an envelope (arbitrage/domain/messages/dlq.py), with its type.
_ENVELOPE_FIELDS: dict[str, type] = {
    "source_topic": str,
    "partition": int,
    "offset": int,
    "value": str,
    "value_bytes": int,
    "value_sha256": str,
    "error": str,
}


def _envelope(value: bytes | None) -> dict[str, Any] | None:
    """The envelope, or None when value is not one redrive can act on."""
    try:
        envelope = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(envelope, dict) or not all(
        isinstance(envelope.get(name), kind) and not isinstance(envelope.get(name), bool)
        for name, kind in _ENVELOPE_FIELDS.items()
    ):
        return None
    if envelope.get("key") is not None and not isinstance(envelope["key"], str):
        return None
    return envelope


def _original(kafka: KafkaClient, spec: StageSpec, envelope: dict[str, Any]) -> bytes | str:
    """The original bytes, checked against the envelope's SHA-256 and length, or a sentence
    saying why they cannot be had."""
    if envelope.get("value_truncated"):
        value = _read_back(kafka, spec.source_topic, envelope["partition"], envelope["offset"])
        if isinstance(value, str):
            return f"the original ({envelope['value_bytes']} bytes, cut in the envelope) {value}"
        where = f"{spec.source_topic}[{envelope['partition']}]@{envelope['offset']}"
        altered = f"{where} no longer holds the original (SHA-256 differs)"
    else:
        try:
            value = base64.b64decode(envelope["value"], validate=True)
        except (binascii.Error, ValueError):
            return "its value is not base64: refused"
        altered = "its value does not match the original's SHA-256 and length: refused"
    if (
        hashlib.sha256(value).hexdigest() != envelope["value_sha256"]
        or len(value) != envelope["value_bytes"]
    ):
        return altered
    return value


def _read_back(kafka: KafkaClient, topic: str, partition: int, offset: int) -> bytes | str:
    low, high = kafka.watermarks(topic).get(partition, (0, 0))
    if not low <= offset < high:
        return f"is no longer retained in {topic}[{partition}] (offsets {low}-{high})"
    consumer = kafka.consumer(READER_GROUP)
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        messages = consumer.consume(num_messages=1, timeout=10.0)
    finally:
        consumer.close()
    if not messages or messages[0].error() is not None or messages[0].offset() != offset:
        return f"could not be read back from {topic}[{partition}]@{offset}"
    return messages[0].value() or b""


def _ensure_ledger(es: ElasticsearchClient) -> None:
    es.client().options(ignore_status=400).indices.create(
        index=LEDGER_INDEX, mappings=_LEDGER_MAPPING
    )
