"""`arbitrage whatif` against the real broker and Elasticsearch: the sample carried through the
stages, then its window recomputed under the live files (no change) and under dearer fees (only
losses), reading only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from arbitrage.cli.main import main
from arbitrage.cli.whatif import READER_GROUP
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.fee_config import DEFAULT_FEES_FILE
from arbitrage.domain.messages.timestamps import format_utc
from arbitrage.domain.stage_specs import ARBITRAGE
from arbitrage.domain.whatif import CSV_COLUMNS
from tests.integration.test_stages import run_job

pytestmark = pytest.mark.integration


def csv_rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    return [line.split(",") for line in lines[1:]]


@pytest.mark.usefixtures("clean_pipeline")
def test_whatif_shows_what_other_fees_would_change_and_writes_nothing(
    kafka: KafkaClient,
    es: ElasticsearchClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    since = format_utc(datetime.now(UTC) - timedelta(minutes=10))
    instance = dg.DagsterInstance.ephemeral()
    for job in ("keepa_pull", "enrichment", "arbitrage"):
        assert run_job(job, instance=instance).success, job
    es.client().indices.refresh(index=topics.ALERTS_INDEX)
    live_alerts = es.count(topics.ALERTS_INDEX)
    assert live_alerts > 50
    alerts_on_topic = kafka.count_messages(
        topics.ARBITRAGE_ALERTS,
        {p: (low, high) for p, (low, high) in kafka.watermarks(topics.ARBITRAGE_ALERTS).items()},
    )
    committed = kafka.committed_offsets(ARBITRAGE.live_group, topics.PRODUCTS_ENRICHED)

    # The live fee and rules files: the window gives the live alerts back, no change.
    same = tmp_path / "same.csv"
    assert (
        main(["whatif", "--fees", str(DEFAULT_FEES_FILE), "--since", since, "--csv", str(same)])
        == 0
    )
    out = capsys.readouterr().out
    assert "500 products (latest of each ASIN)" in out, out
    assert f"live alerts for them {live_alerts}; with v1 fees and v1 rules {live_alerts}" in out
    assert "opened 0, profit changed 0, closed 0" in out
    assert csv_rows(same) == []

    # Inbound shipping at least 4.00 EUR instead of 1.00: every change is a loss, never an
    # opening (a dearer fee never raises a profit), and each live alert is accounted for.
    dearer = tmp_path / "fees_dearer.toml"
    dearer.write_text(
        DEFAULT_FEES_FILE.read_text().replace("min_eur_cents = 100", "min_eur_cents = 400")
    )
    changes = tmp_path / "dearer.csv"
    assert main(["whatif", "--fees", str(dearer), "--since", since, "--csv", str(changes)]) == 0
    out = capsys.readouterr().out
    rows = csv_rows(changes)
    kinds = [row[0] for row in rows]
    assert kinds and "opened" not in kinds, out
    assert all(int(row[6]) < 0 for row in rows)
    closed, changed = kinds.count("closed"), kinds.count("profit changed")
    assert f"closed {closed}" in out and f"profit changed {changed}" in out
    assert closed + changed <= live_alerts
    for row in rows:
        if row[0] == "profit changed":  # the live side of a change is a stored alert
            stored = es.client().count(
                index=topics.ALERTS_INDEX, query={"term": {"alert_id": row[7]}}
            )
            assert stored["count"] == 1

    # Read only: nothing produced, indexed or committed, by the stage's group or the CLI's.
    assert es.count(topics.ALERTS_INDEX) == live_alerts
    assert (
        kafka.count_messages(
            topics.ARBITRAGE_ALERTS,
            {p: (lo, hi) for p, (lo, hi) in kafka.watermarks(topics.ARBITRAGE_ALERTS).items()},
        )
        == alerts_on_topic
    )
    assert kafka.committed_offsets(ARBITRAGE.live_group, topics.PRODUCTS_ENRICHED) == committed
    assert set(kafka.committed_offsets(READER_GROUP, topics.PRODUCTS_ENRICHED).values()) == {None}


def test_whatif_refuses_a_bad_time_and_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whatif", "--fees", str(DEFAULT_FEES_FILE), "--since", "yesterday"]) == 2
    assert "--since 'yesterday' is not an ISO-8601 UTC time" in capsys.readouterr().err
    assert (
        main(["whatif", "--fees", "/nonexistent/fees.toml", "--since", "2026-11-29T00:00:00Z"]) == 2
    )
    assert "/nonexistent/fees.toml" in capsys.readouterr().err
