"""`arbitrage tail`, `dlq` and `alerts` print Keepa titles and keys escaped, never raw."""

from __future__ import annotations

import json

import pytest

from arbitrage.cli.main import main as arbitrage_cli
from arbitrage.clients.elasticsearch import BulkOp, ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.dlq import dlq_envelope
from tests.factories import raw_update
from tests.integration.kafka_io import produce

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_pipeline")]

# Clears the screen, returns to the line's start, reverses what follows, then a C1 CSI.
HOSTILE = "Mug\x1b[2J\rcheap\u202eevil\x9b31m"
KEY = "B0ESC\x1b[2J\r"
RAW_CONTROLS = ("\x1b", "\r", "\u202e", "\x9b")


def _shown(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert arbitrage_cli(argv) == 0
    out = capsys.readouterr().out
    assert not any(char in out for char in RAW_CONTROLS), repr(out)
    return out


def test_tail_escapes_keys_and_titles(
    kafka: KafkaClient, capsys: pytest.CaptureFixture[str]
) -> None:
    update = raw_update(asin="B0ESC00001", title=HOSTILE)
    produce(kafka, topics.RAW_UPDATES, [(KEY, json.dumps(update).encode())])
    out = _shown(capsys, ["tail", topics.RAW_UPDATES, "-n", "1"])
    assert "B0ESC\\x1b[2J\\r" in out
    assert "\\u202eevil\\x9b31m" in out  # JSON leaves C1 and bidi characters to us


def test_dlq_and_alerts_tables_escape_keys_titles_and_reasons(
    kafka: KafkaClient, es: ElasticsearchClient, capsys: pytest.CaptureFixture[str]
) -> None:
    letter = dlq_envelope(
        source_topic=topics.RAW_UPDATES,
        partition=0,
        offset=0,
        key=KEY.encode(),
        value=b"{}",
        stage="enrichment",
        error=f"bad title {HOSTILE}",
    )
    produce(kafka, topics.RAW_UPDATES_DLQ, [(KEY, encode(letter))])
    out = _shown(capsys, ["dlq", "-n", "1"])
    assert "B0ESC\\x1b[2J\\r" in out and "bad title Mug\\x1b[2J\\rcheap\\u202e" in out

    alert = {
        "schema_version": 2,
        "opportunity_id": "B0ESC00001-DE-FR-fees_v1-rules_v1",
        "alert_id": "B0ESC00001-DE-FR-fees_v1-rules_v1-e1",
        "event": "opened",
        "event_id": "B0ESC00001-DE-FR-fees_v1-rules_v1-v1",
        "status": "open",
        "episode": 1,
        "version": 1,
        "asin": "B0ESC00001",
        "title": HOSTILE,
        "buy_market": "DE",
        "sell_market": "FR",
        "buy_price": {"amount": 4500, "currency": "EUR"},
        "sell_price": {"amount": 9000, "currency": "EUR"},
        "profit_eur_cents": 1500,
        "roi": 0.3,
        "opened_at": "2026-11-20T08:00:00.000Z",
        "detected_at": "2026-11-20T09:00:00.000Z",
    }
    outcome = es.bulk_write([BulkOp("index", topics.ALERTS_INDEX, alert["opportunity_id"], alert)])
    assert not outcome.rejected, outcome.rejected
    out = _shown(capsys, ["alerts", "-n", "5"])
    assert "Mug\\x1b[2J\\rcheap\\u202eevil\\x9b31m" in out
