"""`arbitrage dlq redrive`: dead letters' originals back onto their source topic, once each."""

from __future__ import annotations

import base64
import json

import dagster as dg
import pytest
from confluent_kafka import TopicPartition

from arbitrage.cli.main import main as arbitrage_cli
from arbitrage.cli.redrive import REDRIVEN_FROM_HEADER, redrive
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.dlq import dlq_envelope
from tests.definitions import SAMPLE_DEFS
from tests.factories import raw_update
from tests.integration.kafka_io import produce, read_all

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_pipeline")]

BAD = [
    ("B0REDRIVE1", json.dumps(raw_update(asin="B0REDRIVE1", schema_version=2)).encode()),
    ("B0REDRIVE2", b"{not json"),
    # Cut in its envelope: read back from the source topic and checked by its SHA-256.
    ("B0REDRIVE3", b'{"pad": "' + b"z" * (5 * 1024 * 1024) + b'"}'),
]


def test_redrive_puts_each_original_back_once(
    kafka: KafkaClient, es: ElasticsearchClient, capsys: pytest.CaptureFixture[str]
) -> None:
    produce(kafka, topics.RAW_UPDATES, BAD)
    job = SAMPLE_DEFS.resolve_job_def("enrichment")
    assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral()).success
    assert len(read_all(kafka, topics.RAW_UPDATES_DLQ)) == 3
    before = {(m.partition, m.offset) for m in read_all(kafka, topics.RAW_UPDATES)}

    dry = redrive(kafka, es, topics.RAW_UPDATES_DLQ, dry_run=True)
    assert (dry.examined, dry.matched, dry.redriven) == (3, 3, 3)
    assert len(read_all(kafka, topics.RAW_UPDATES)) == 3  # nothing produced

    only_json = redrive(kafka, es, topics.RAW_UPDATES_DLQ, reason_contains="not valid JSON")
    assert (only_json.matched, only_json.redriven, only_json.problems) == (1, 1, [])
    report = redrive(kafka, es, topics.RAW_UPDATES_DLQ)
    assert (report.matched, report.redriven, report.already_redriven) == (3, 2, 1)
    assert report.problems == []

    again = [
        m for m in read_all(kafka, topics.RAW_UPDATES) if (m.partition, m.offset) not in before
    ]
    originals = dict(BAD)
    assert sorted(m.key for m in again) == sorted(originals)
    assert all(m.value == originals[m.key] for m in again)  # byte for byte, the cut one too

    # Twice is once: from the CLI, nothing left to redrive.
    assert arbitrage_cli(["dlq", "redrive", "--topic", topics.RAW_UPDATES_DLQ]) == 0
    assert "redrove 0, already redriven before 3" in capsys.readouterr().out
    assert len(read_all(kafka, topics.RAW_UPDATES)) == 6


def test_redriven_records_carry_where_they_came_from(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    produce(kafka, topics.RAW_UPDATES, BAD[1:2])
    job = SAMPLE_DEFS.resolve_job_def("enrichment")
    assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral()).success
    redrive(kafka, es, topics.RAW_UPDATES_DLQ)
    consumer = kafka.consumer(topics.tool_name("tests-headers"))
    try:
        (dead,) = read_all(kafka, topics.RAW_UPDATES_DLQ)
        partition = json.loads(dead.value)["partition"]
        consumer.assign([TopicPartition(topics.RAW_UPDATES, partition, 1)])
        (message,) = consumer.consume(num_messages=1, timeout=10)
    finally:
        consumer.close()
    headers = dict(message.headers() or [])
    assert (
        headers[REDRIVEN_FROM_HEADER]
        == f"{topics.RAW_UPDATES_DLQ}:{dead.partition}:{dead.offset}".encode()
    )


def test_redrive_refuses_a_topic_that_is_not_a_dlq(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    with pytest.raises(ValueError, match="is not a DLQ topic"):
        redrive(kafka, es, topics.RAW_UPDATES)


def test_redrive_sends_only_to_the_stages_source_and_only_unaltered_values(
    kafka: KafkaClient, es: ElasticsearchClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """Letters written straight into the DLQ by someone who may write there: one naming another
    topic (it would inject there), one whose value was swapped after its hash was taken; both
    refused and reported, the genuine one beside them redriven."""

    def letter(source_topic: str, value: bytes, offset: int) -> bytes:
        envelope = dlq_envelope(
            source_topic=source_topic,
            partition=0,
            offset=offset,
            key=b"B0FORGED01",
            value=value,
            stage="enrichment",
            error="forged",
        )
        return encode(envelope)

    altered = json.loads(letter(topics.RAW_UPDATES, b'{"genuine": true}', 1))
    altered["value"] = base64.b64encode(b'{"evil": true}').decode()
    produce(
        kafka,
        topics.RAW_UPDATES_DLQ,
        [
            ("B0FORGED01", letter(topics.PRODUCTS_ENRICHED, b'{"injected": true}', 0)),
            ("B0FORGED01", json.dumps(altered).encode()),
            ("B0FORGED01", letter(topics.RAW_UPDATES, b'{"genuine": true}', 2)),
        ],
    )
    assert arbitrage_cli(["dlq", "redrive", "--topic", topics.RAW_UPDATES_DLQ]) == 1
    out = capsys.readouterr().out
    assert "matched 3" in out and "redrove 1" in out
    assert f"names the source topic '{topics.PRODUCTS_ENRICHED}'" in out
    assert "does not match the original's SHA-256 and length: refused" in out
    assert read_all(kafka, topics.PRODUCTS_ENRICHED) == []
    assert [m.value for m in read_all(kafka, topics.RAW_UPDATES)] == [b'{"genuine": true}']
