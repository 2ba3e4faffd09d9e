"""The opportunities page says where each opportunity came from (the registry's sources of its
ASIN) and what the newest hour's Keepa tokens went to (the token ledger, against the plan's
grant), read from the real Elasticsearch after the stages ran on real Kafka."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.keepa_ledger import ledger
from arbitrage.clients.tracked_asins import record_found
from arbitrage.domain import topics
from arbitrage.domain.discovery_config import DiscoverySource
from arbitrage.domain.keepa_parsing import TokenInfo
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.timestamps import format_utc
from arbitrage.web.app import create_app
from arbitrage.web.server import serving
from tests.integration.kafka_io import produce
from tests.integration.test_stages import good_updates, run_job

HOUR_MS = 3_600_000
AT = 1_796_000_000_000 // HOUR_MS * HOUR_MS + 5 * 60_000  # five minutes into an hour


def source(name: str, kind: str) -> DiscoverySource:
    return DiscoverySource(name, kind, "DE", "0 * * * *", 48, f"the test's {kind}")  # type: ignore[arg-type]


@pytest.mark.slow  # runs both stages: make test-slow (CI runs it, and in secure mode)
@pytest.mark.usefixtures("clean_pipeline")
def test_the_list_shows_each_opportunitys_sources_and_the_hours_token_gauge(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    for index in (topics.TRACKED_ASINS_INDEX, topics.KEEPA_LEDGER_INDEX):
        es.client().options(ignore_status=404).indices.delete(index=index)
    updates = good_updates(6, timestamp=format_utc(datetime.now(UTC)))
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in updates])
    assert run_job("enrichment").success and run_job("arbitrage").success
    es.client().indices.refresh(index=topics.ALERTS_INDEX)  # searchable now, not in a second
    record_found(es, source("de-drops", "deals"), [updates[0]["asin"]], AT)
    record_found(es, source("de-sellers", "finder"), [updates[0]["asin"], updates[3]["asin"]], AT)
    tokens = TokenInfo(tokens_left=100, refill_in_ms=1, refill_rate=20, tokens_consumed=0)
    with ledger(es, "run-1", "refresh") as book:
        for spent in (300, 150):
            book.record("/product", "DE", ["B000000001"], tokens_at(tokens, spent, AT))
    with ledger(es, "run-2", "discovery:de-drops") as book:
        book.record("/deal", "DE", ["B000000001"], tokens_at(tokens, 5, AT + 60_000))
    with ledger(es, "run-0", "refresh") as book:  # an hour before: not in the gauge
        book.record("/product", "DE", ["B000000001"], tokens_at(tokens, 999, AT - HOUR_MS))

    with serving(create_app(es)) as url:
        found = requests.get(f"{url}/api/opportunities", timeout=10).json()["opportunities"]
        by_asin = {row["asin"]: row["found_by"] for row in found}
        assert by_asin[updates[0]["asin"]] == [
            {"source": "de-drops", "kind": "deals"},
            {"source": "de-sellers", "kind": "finder"},
        ]
        assert by_asin[updates[3]["asin"]] == [{"source": "de-sellers", "kind": "finder"}]
        page = requests.get(url, timeout=10).text
        detail = requests.get(f"{url}/product/{updates[0]['asin']}", timeout=10).text
    # What the seller checks before buying, from both listings (none known in these updates).
    assert "Before buying:" in detail and "hazardous materials unknown" in detail
    assert '<span class="source kind-deals" title="deals">de-drops</span>' in page
    # The newest hour: 455 of 20 × 60 granted; refresh 450 first, then the deal page's 5.
    assert "<strong>455</strong> spent of 1200 granted" in page
    assert page.index("refresh 450") < page.index("discovery:de-drops 5")


def tokens_at(base: TokenInfo, consumed: int, at_ms: int) -> TokenInfo:
    return TokenInfo(base.tokens_left, base.refill_in_ms, base.refill_rate, consumed, at_ms)
