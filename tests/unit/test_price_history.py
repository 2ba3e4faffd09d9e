"""Price observations: one per (ASIN, pull) with every market that has a price, ids stable
across reruns."""

from __future__ import annotations

from arbitrage.clients.elasticsearch import BulkOutcome
from arbitrage.clients.index_templates import PRICE_OBSERVATIONS_MAPPING
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.messages.timestamps import epoch_ms
from arbitrage.domain.price_history import observation, observation_id
from arbitrage.engine.processors import split_outcome
from tests.factories import enriched, offer

CONFIG = load_fee_config()


def test_one_observation_per_pull_with_each_market_that_has_a_price() -> None:
    product = enriched(
        CONFIG,
        asin="B0HIST0001",
        markets={
            "DE": offer("DE", new=4500, buy_box=4700),
            "GB": offer("GB", new=4100, buy_box=-1),
            "FR": offer("FR"),  # no offer at all: nothing to draw
        },
        timestamp="2026-11-26T10:00:00.000Z",
    )
    found = observation(product)
    assert found is not None
    doc_id, doc = found
    pulled = epoch_ms("2026-11-26T10:00:00.000Z")
    assert doc_id == observation_id("B0HIST0001", pulled) == f"B0HIST0001:{pulled}"
    assert doc["asin"] == "B0HIST0001" and doc["observed_at"] == pulled
    assert set(doc["markets"]) == {"DE", "GB"}
    assert doc["markets"]["DE"] == {
        "currency": "EUR",
        "buy_price": 4500,
        "sell_price": 4700,
        "buy_price_eur_cents": 4500,
        "sell_price_eur_cents": 4700,
    }
    gb = doc["markets"]["GB"]
    assert gb["currency"] == "GBP" and gb["sell_price"] == 4100  # the lowest new offer
    assert gb["sell_price_eur_cents"] == product["markets"]["GB"]["sell_price_eur_cents"]
    # Only mapped fields: the strict mapping would refuse anything else ("markets" is stored,
    # not indexed).
    assert set(doc) <= set(PRICE_OBSERVATIONS_MAPPING["properties"])
    assert PRICE_OBSERVATIONS_MAPPING["properties"]["markets"]["enabled"] is False


def test_no_observation_without_any_price() -> None:
    product = enriched(CONFIG, asin="B0HIST0003", markets={"FR": offer("FR")})
    assert observation(product) is None


def test_the_same_pull_gives_the_same_id_and_another_pull_a_new_one() -> None:
    first = observation(enriched(CONFIG, asin="B0HIST0002"))
    again = observation(enriched(CONFIG, asin="B0HIST0002"))
    later = observation(enriched(CONFIG, asin="B0HIST0002", timestamp="2026-11-26T11:00:00Z"))
    assert first is not None and again is not None and later is not None
    assert first[0] == again[0] != later[0]


def test_a_bulk_outcome_splits_into_products_and_observations() -> None:
    # 3 products (positions 0-2), then 4 observations (3-6).
    outcome = BulkOutcome(written=3, unchanged=2, rejected={1: "bad", 5: "worse"}, retries=3)
    outcome.conflicts = [2, 6]
    products, history = split_outcome(outcome, 3)
    assert (products.written, products.unchanged, products.rejected) == (1, 1, {1: "bad"})
    assert products.conflicts == [2] and products.retries == 3
    assert (history.written, history.unchanged, history.rejected) == (2, 1, {2: "worse"})
    assert history.conflicts == [3] and history.retries == 0
