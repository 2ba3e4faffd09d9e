"""Price observations: one per (ASIN, market, pull) with a price, ids stable across reruns."""

from __future__ import annotations

from engine.processors import split_outcome
from pipelines.fee_config import load_fee_config
from pipelines.messages.timestamps import epoch_ms
from pipelines.price_history import observation_id, observations
from resources.elasticsearch import PRICE_OBSERVATIONS_MAPPING, BulkOutcome
from tests.factories import enriched, offer

CONFIG = load_fee_config()


def test_one_observation_per_market_with_a_price() -> None:
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
    found = dict(observations(product))
    pulled = epoch_ms("2026-11-26T10:00:00.000Z")
    assert set(found) == {f"B0HIST0001:DE:{pulled}", f"B0HIST0001:GB:{pulled}"}
    de = found[observation_id("B0HIST0001", "DE", pulled)]
    assert de == {
        "asin": "B0HIST0001",
        "market": "DE",
        "observed_at": pulled,
        "currency": "EUR",
        "buy_price": 4500,
        "sell_price": 4700,
        "buy_price_eur_cents": 4500,
        "sell_price_eur_cents": 4700,
    }
    gb = found[observation_id("B0HIST0001", "GB", pulled)]
    assert gb["currency"] == "GBP" and gb["sell_price"] == 4100  # the lowest new offer
    assert gb["sell_price_eur_cents"] == product["markets"]["GB"]["sell_price_eur_cents"]
    # Only the mapped fields: the strict mapping would refuse anything else.
    assert set(de) == set(PRICE_OBSERVATIONS_MAPPING["properties"])


def test_the_same_pull_gives_the_same_ids_and_another_pull_new_ones() -> None:
    first = [doc_id for doc_id, _ in observations(enriched(CONFIG, asin="B0HIST0002"))]
    again = [doc_id for doc_id, _ in observations(enriched(CONFIG, asin="B0HIST0002"))]
    later = observations(enriched(CONFIG, asin="B0HIST0002", timestamp="2026-11-26T11:00:00Z"))
    assert first == again
    assert not set(first) & {doc_id for doc_id, _ in later}


def test_a_bulk_outcome_splits_into_products_and_observations() -> None:
    # 3 products (positions 0-2), then 4 observations (3-6).
    outcome = BulkOutcome(written=3, unchanged=2, rejected={1: "bad", 5: "worse"}, retries=3)
    outcome.conflicts = [2, 6]
    products, history = split_outcome(outcome, 3)
    assert (products.written, products.unchanged, products.rejected) == (1, 1, {1: "bad"})
    assert products.conflicts == [2] and products.retries == 3
    assert (history.written, history.unchanged, history.rejected) == (2, 1, {2: "worse"})
    assert history.conflicts == [3] and history.retries == 0
