"""`arbitrage fees calibrate` end to end: the stages index products and open opportunities on
the real Kafka and Elasticsearch; the command samples the open ones first, asks the SP-API
stand-in (tests/sp_api_server.py) for Amazon's estimates with credentials from the environment
only, and writes the report that finds the fee Amazon charges differently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arbitrage.cli.main import main
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.sp_api import CLIENT_ID_ENV, CLIENT_SECRET_ENV, REFRESH_TOKEN_ENV
from arbitrage.domain import topics
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.sp_api_fees import FBA_CORE
from tests.integration.kafka_io import produce
from tests.integration.test_stages import good_updates, run_job
from tests.sp_api_server import FEES_PATH, BookEntry, SpApiStandIn

COMMAND = ["fees", "calibrate", "--sample", "8", "--fees", "config/fees_v1.toml", "--out"]
PLANTED = "B0INTEG003"  # an opportunity DE → FR (good_updates: every third product)


@pytest.mark.slow  # runs both stages: make test-slow (CI runs it)
@pytest.mark.usefixtures("clean_pipeline")
def test_calibrate_writes_the_report_of_where_the_model_and_amazon_part(
    kafka: KafkaClient,
    es: ElasticsearchClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    updates = good_updates(9)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in updates])
    assert run_job("enrichment").success and run_job("arbitrage").success
    es.refresh(topics.PRODUCTS_INDEX)
    products = es.search_sources(topics.PRODUCTS_INDEX, {"match_all": {}}, 100)
    assert len(products) == 9
    # Amazon charges what fees v1 charges (Keepa's referral percentage and FBA fee per store),
    # except an FBA fee 1.20 higher for one product in France.
    book = {
        (p["asin"], market, FBA_CORE): BookEntry(
            referral_pct_x100=side["referral_pct_x100"],
            fulfilment_minor=side["fba_fee_resolved"]
            + (120 if (p["asin"], market) == (PLANTED, "FR") else 0),
        )
        for p in products
        for market, side in p["markets"].items()
    }
    report_path = tmp_path / "report.json"
    with SpApiStandIn(book, rate=1000, advertised_rate=100) as server:
        monkeypatch.setenv(CLIENT_ID_ENV, server.client_id)
        monkeypatch.setenv(REFRESH_TOKEN_ENV, server.refresh_token)
        monkeypatch.delenv(CLIENT_SECRET_ENV, raising=False)
        monkeypatch.setenv("SP_API_URL", server.url)
        monkeypatch.setenv("SP_API_LWA_URL", server.lwa_url)
        # Without the whole set of credentials nothing is asked.
        assert main([*COMMAND, str(report_path)]) == 2
        assert "set SP_API_LWA_CLIENT_SECRET" in capsys.readouterr().err
        assert server.calls == []
        monkeypatch.setenv(CLIENT_SECRET_ENV, server.client_secret)
        assert main([*COMMAND, str(report_path)]) == 0
        requests = server.calls_to(FEES_PATH)
    shown = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    # The open opportunities first (DE→FR and GB→FR for every third product), then products
    # without one on their best route; one estimate per product and store sold in.
    open_routes = {
        (a["asin"], f"{a['buy_market']}→{a['sell_market']}")
        for a in es.search_sources(topics.ALERTS_INDEX, {"term": {"status": "open"}}, 100)
    }
    routes = [(r["asin"], r["route"]) for r in report["routes"]]
    assert (report["routes_asked"], report["routes_compared"], len(routes)) == (8, 8, 8)
    assert set(routes[: len(open_routes)]) == open_routes
    assert len({a for a, _ in routes[len(open_routes) :]} & {a for a, _ in open_routes}) == 0
    sold_in = {(asin, route[-2:]) for asin, route in routes}
    assert [(c.status, c.items) for c in requests] == [(200, len(sold_in))]
    fba = next(line for line in report["lines"] if line["line"] == "fba_fee")
    assert fba["worst_difference"] == -120
    assert [(w["asin"], w["route"]) for w in fba["worst"]] == [
        (PLANTED, "DE→FR"),
        (PLANTED, "GB→FR"),
    ]
    referral = next(line for line in report["lines"] if line["line"] == "referral_fee")
    assert abs(referral["worst_difference"]) <= 1
    assert f"{PLANTED} DE→FR (-1.20 EUR)" in shown
    for secret in (server.client_secret, server.refresh_token, server.client_id):
        assert secret not in shown and secret not in report_path.read_text()
