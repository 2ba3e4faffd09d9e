"""Keepa statistics → per-market signals (arbitrage.domain.keepa_signals), their place in the
messages (optional, null = no data; messages written before them still read), and the token cost."""

from __future__ import annotations

import copy
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from arbitrage.clients.index_templates import PRODUCTS_MAPPING
from arbitrage.clients.keepa_pull import PullTotals, iter_pull
from arbitrage.clients.keepa_sources import KeepaHttpClient, KeepaSampleSource
from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.fee_model import detect_alerts
from arbitrage.domain.keepa_parsing import (
    TOKENS_BUYBOX_EXTRA,
    TOKENS_PER_PRODUCT,
    TOKENS_STATS_EXTRA,
    merge_market_products,
    parse_product,
    product_token_cost,
)
from arbitrage.domain.keepa_signals import AMAZON_SELLER_IDS, parse_signals
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.fast_validation import fast_raw_update
from arbitrage.domain.messages.signals import SIGNAL_FIELDS, check_signals
from arbitrage.domain.messages.types import SchemaError
from arbitrage.domain.messages.validation import (
    _checked_raw_update,
    parse_enriched_product,
    parse_raw_update,
    validate_raw_update,
)
from tests.factories import offer, raw_update
from tests.keepa_server import KeepaTestServer
from tools.sample_generator import generate_sample

CONFIG = load_fee_config()
DATA = Path(__file__).parent / "data"
PULLED_AT = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
LOGGER = logging.getLogger("tests.signals")


def csv_array(**values: int) -> list[int]:
    """A 36-entry CsvType-indexed array, -1 except the named entries."""
    index = {"amazon": 0, "new": 1, "sales": 3, "buy_box": 18, "count_fba": 34, "count_fbm": 35}
    array = [-1] * 36
    for name, value in values.items():
        array[index[name]] = value
    return array


def full_stats() -> dict[str, Any]:
    """A Keepa stats object as /product?stats=90&buybox=1 sends it for amazon.de."""
    return {
        "current": csv_array(amazon=2999, new=2899, sales=1234, buy_box=2999),
        "avg30": csv_array(amazon=3010, new=2950, buy_box=3005),
        "avg90": csv_array(amazon=3100, new=2990, buy_box=3080),
        "avg180": csv_array(amazon=3200, new=3050, buy_box=3150),
        "salesRankDrops30": 41,
        "salesRankDrops90": 118,
        "outOfStockPercentage90": csv_array(amazon=12, new=0, buy_box=3),
        "buyBoxStats": {
            AMAZON_SELLER_IDS["DE"]: {
                "percentageWon": 62.5,
                "avgPrice": 3050,
                "avgNewOfferCount": 7,
                "isFBA": True,
                "lastSeen": 8_340_000,
            },
            "A1SELLER00042": {
                "percentageWon": 35.1,
                "avgPrice": 2990,
                "avgNewOfferCount": 8,
                "isFBA": False,
                "lastSeen": 8_339_000,
            },
        },
        "buyBoxIsAmazon": True,
        "buyBoxIsFBA": True,
        "offerCountFBA": 4,
        "offerCountFBM": 3,
    }


def keepa_product(stats: dict[str, Any] | None, domain_id: int = 3) -> dict[str, Any]:
    return {
        "asin": "B0SIGNAL01",
        "domainId": domain_id,
        "productType": 0,
        "title": "Nordvik Compact Kettle NO-123, Black",
        "rootCategory": 3167641,
        "packageWeight": 1250,
        "referralFeePercentage": 15.0,
        "fbaFees": {"pickAndPackFee": 412},
        "lastUpdate": 8_340_100,
        "csv": None,
        "stats": stats,
    }


# --------------------------------------------------------------------------- each signal


def test_every_signal_is_read_from_its_documented_field() -> None:
    assert parse_signals(full_stats(), "DE", {"monthlySold": 300}) == {
        "amazon_avg30": 3010,
        "amazon_avg90": 3100,
        "amazon_avg180": 3200,
        "new_avg30": 2950,
        "new_avg90": 2990,
        "new_avg180": 3050,
        "buy_box_avg30": 3005,
        "buy_box_avg90": 3080,
        "buy_box_avg180": 3150,
        "sales_rank_drops30": 41,
        "sales_rank_drops90": 118,
        "amazon_oos_pct90": 12,
        "new_oos_pct90": 0,  # never out of stock: an observation, kept as 0
        "buy_box_oos_pct90": 3,
        "buy_box_amazon_pct": 62,  # 62.5 rounded half-even
        "buy_box_is_amazon": True,
        "buy_box_is_fba": True,
        "offer_count_fba": 4,
        "offer_count_fbm": 3,
        "monthly_sold": 300,  # the product's monthlySold, beside stats
        # No listing facts in that product object: none known.
        "hazmat": None,
        "variation_parent": None,
        "package_quantity": None,
        "return_rate_high": None,
        "brand": None,
    }


@pytest.mark.parametrize(
    ("given", "read"),
    [
        (None, None),
        (0, None),
        (-1, None),
        ("50+", None),
        (True, None),
        (50, 50),
        (250_000, 100_000),
    ],
)
def test_amazons_monthly_sold_is_a_figure_only_when_there_is_one(given: Any, read: Any) -> None:
    """Keepa: most products have none (null or 0); above the signals' counts it is capped."""
    signals = parse_signals(full_stats(), "DE", {"monthlySold": given})
    assert signals is not None and signals["monthly_sold"] == read


def test_signal_fields_match_the_message_schema() -> None:
    signals = parse_signals(full_stats(), "DE")
    assert signals is not None
    assert list(signals) == [name for name, _kind in SIGNAL_FIELDS]
    assert check_signals(signals, "DE") == signals


@pytest.mark.parametrize("no_data", [-1, -2, None, "3000", 2.5, True, 0, 10**9])
@pytest.mark.parametrize(
    ("window", "index", "field"),
    [
        ("avg30", 0, "amazon_avg30"),
        ("avg90", 1, "new_avg90"),
        ("avg180", 18, "buy_box_avg180"),
    ],
)
def test_averages_without_data_are_none(no_data: Any, window: str, index: int, field: str) -> None:
    stats = full_stats()
    stats[window][index] = no_data
    assert parse_signals(stats, "DE")[field] is None  # type: ignore[index]


@pytest.mark.parametrize("window", ["avg30", "avg90", "avg180"])
def test_a_missing_or_short_average_array_is_none(window: str) -> None:
    stats = full_stats()
    stats.pop(window)
    signals = parse_signals(stats, "DE")
    assert signals is not None
    assert {signals[f"{kind}_{window}"] for kind in ("amazon", "new", "buy_box")} == {None}  # type: ignore[literal-required]
    stats[window] = [3000, 2900]  # shorter than BUY_BOX_SHIPPING's index
    signals = parse_signals(stats, "DE")
    assert signals[f"buy_box_{window}"] is None  # type: ignore[index, literal-required]
    assert signals[f"amazon_{window}"] == 3000  # type: ignore[index, literal-required]


@pytest.mark.parametrize("name", ["salesRankDrops30", "salesRankDrops90"])
@pytest.mark.parametrize(
    ("raw", "expected"), [(-1, None), (0, 0), (7, 7), (None, None), ("7", None)]
)
def test_rank_drops(name: str, raw: Any, expected: int | None) -> None:
    stats = full_stats()
    stats[name] = raw
    field = "sales_rank_drops30" if name.endswith("30") else "sales_rank_drops90"
    assert parse_signals(stats, "DE")[field] == expected  # type: ignore[index, literal-required]
    del stats[name]
    assert parse_signals(stats, "DE")[field] is None  # type: ignore[index, literal-required]


@pytest.mark.parametrize(("raw", "expected"), [(-1, None), (0, 0), (100, 100), (101, None)])
def test_out_of_stock_percentage(raw: int, expected: int | None) -> None:
    stats = full_stats()
    stats["outOfStockPercentage90"] = csv_array(amazon=raw, new=raw, buy_box=raw)
    signals = parse_signals(stats, "DE")
    assert signals is not None
    assert signals["amazon_oos_pct90"] == signals["new_oos_pct90"] == expected
    assert signals["buy_box_oos_pct90"] == expected


def test_amazon_buy_box_share() -> None:
    stats = full_stats()
    assert parse_signals(stats, "DE")["buy_box_amazon_pct"] == 62  # type: ignore[index]
    # Amazon.de's id means nothing on amazon.fr: there Amazon.fr's id counts, and it is absent.
    assert parse_signals(stats, "FR")["buy_box_amazon_pct"] == 0  # type: ignore[index]
    stats["buyBoxStats"][AMAZON_SELLER_IDS["DE"]]["percentageWon"] = 97.5
    assert parse_signals(stats, "DE")["buy_box_amazon_pct"] == 98  # type: ignore[index]


@pytest.mark.parametrize("no_data", [None, {}, [], "x"])
def test_no_buy_box_statistics_is_none_not_zero(no_data: Any) -> None:
    stats = full_stats()
    stats["buyBoxStats"] = no_data
    assert parse_signals(stats, "DE")["buy_box_amazon_pct"] is None  # type: ignore[index]
    del stats["buyBoxStats"]
    assert parse_signals(stats, "DE")["buy_box_amazon_pct"] is None  # type: ignore[index]


@pytest.mark.parametrize("won", [None, "62", -1, 100.5, float("nan"), True])
def test_an_unusable_amazon_share_is_none(won: Any) -> None:
    stats = full_stats()
    stats["buyBoxStats"][AMAZON_SELLER_IDS["DE"]]["percentageWon"] = won
    assert parse_signals(stats, "DE")["buy_box_amazon_pct"] is None  # type: ignore[index]


@pytest.mark.parametrize(
    ("raw", "expected"), [(True, True), (False, False), (None, None), (1, None)]
)
def test_buy_box_flags(raw: Any, expected: bool | None) -> None:
    stats = full_stats()
    stats["buyBoxIsFBA"] = raw
    stats["buyBoxIsAmazon"] = raw
    signals = parse_signals(stats, "DE")
    assert signals is not None
    assert signals["buy_box_is_fba"] is expected
    assert signals["buy_box_is_amazon"] is expected


def test_offer_counts_fall_back_to_the_offer_count_histories() -> None:
    stats = full_stats()
    # Without the offers parameter Keepa leaves offerCountFBA/FBM at -2 ...
    stats["offerCountFBA"] = stats["offerCountFBM"] = -2
    stats["current"] = csv_array(amazon=2999, new=2899, count_fba=6, count_fbm=0)
    signals = parse_signals(stats, "DE")
    assert signals is not None
    # ... and the current COUNT_NEW_FBA / COUNT_NEW_FBM values stand in; 0 FBM offers is data.
    assert (signals["offer_count_fba"], signals["offer_count_fbm"]) == (6, 0)
    stats["current"] = csv_array(amazon=2999)  # -1 there too: no data at all
    signals = parse_signals(stats, "DE")
    assert (signals["offer_count_fba"], signals["offer_count_fbm"]) == (None, None)  # type: ignore[index]


@pytest.mark.parametrize(
    "stats", [None, {}, {"current": csv_array(amazon=2999)}, [], "stats"], ids=repr
)
def test_no_statistics_means_no_signals(stats: Any) -> None:
    assert parse_signals(stats, "DE") is None


# --------------------------------------------------------------------------- the messages


def test_signals_travel_in_the_raw_update_and_round_trip() -> None:
    per_market = {"DE": keepa_product(full_stats()), "FR": keepa_product(None, domain_id=4)}
    per_market["FR"]["stats"] = {"current": csv_array(new=3500, buy_box=3600)}
    update = merge_market_products("B0SIGNAL01", per_market, PULLED_AT, "keepa")
    signals = update["markets"]["DE"]["signals"]
    assert signals == parse_signals(full_stats(), "DE", per_market["DE"])
    assert signals is not None and signals["variation_parent"] is False  # productType 0
    assert update["markets"]["FR"]["signals"] is None
    assert validate_raw_update(copy.deepcopy(update)) == update
    assert fast_raw_update(copy.deepcopy(update)) == update  # the fast path takes it
    assert parse_raw_update(encode(update)) == update


@pytest.mark.parametrize(
    ("fields", "facts"),
    [
        ({}, {}),
        (
            {
                "hazardousMaterials": [{"aspect": "UN number", "value": "UN3481"}],
                "productType": 5,
                "packageQuantity": 6,
                "returnRate": 2,
                "brand": "  Acme\x00 Tools ",
            },
            {
                "hazmat": True,
                "variation_parent": True,
                "package_quantity": 6,
                "return_rate_high": True,
                "brand": "Acme Tools",
            },
        ),
        (
            {
                "hazardousMaterials": [],
                "productType": 0,
                "packageQuantity": -1,
                "numberOfItems": 2,
                "returnRate": 1,
                "brand": 7,
            },
            {
                "hazmat": False,
                "variation_parent": False,
                "package_quantity": 2,
                "return_rate_high": False,
            },
        ),
    ],
)
def test_the_listing_facts_are_read_from_the_product_object(
    fields: dict[str, Any], facts: dict[str, Any]
) -> None:
    """Keepa's documented fields; what a product does not say stays None (unknown)."""
    expected = {
        "hazmat": None,
        "variation_parent": None,
        "package_quantity": None,
        "return_rate_high": None,
        "brand": None,
        **facts,
    }
    signals = parse_signals(full_stats(), "DE", fields)
    assert signals is not None
    assert {name: signals[name] for name in expected} == expected  # type: ignore[literal-required]
    assert check_signals(signals, "DE") == signals


def test_a_product_with_only_some_statistics_keeps_the_rest_as_none() -> None:
    stats = {"current": csv_array(new=2899), "salesRankDrops30": 0, "avg90": csv_array(new=2800)}
    signals = parse_product(keepa_product(stats), "DE")["signals"]
    assert signals is not None
    assert signals["sales_rank_drops30"] == 0
    assert signals["new_avg90"] == 2800
    assert [name for name, value in signals.items() if value is not None] == [
        "new_avg90",
        "sales_rank_drops30",
        "variation_parent",  # the product object's productType, not a statistic
    ]


def test_a_raw_update_written_before_the_signals_still_parses() -> None:
    """Bytes as the producer wrote them before this change (tests/unit/data)."""
    old = (DATA / "raw_update_before_signals.json").read_bytes()
    assert b"signals" not in old
    parsed = parse_raw_update(old)
    assert fast_raw_update(json.loads(old)) == parsed  # the fast path takes it too
    assert _checked_raw_update(json.loads(old)) == parsed
    assert len(parsed["markets"]) == 5
    assert all(market["signals"] is None for market in parsed["markets"].values())
    stripped = {code: dict(m) for code, m in parsed["markets"].items()}
    for market in stripped.values():
        del market["signals"]
    assert stripped == json.loads(old)["markets"]


def test_an_enriched_product_written_before_the_signals_still_parses_and_alerts() -> None:
    old_raw = parse_raw_update((DATA / "raw_update_before_signals.json").read_bytes())
    old_enriched_bytes = (DATA / "enriched_product_before_signals.json").read_bytes()
    old_enriched = parse_enriched_product(old_enriched_bytes)
    # Enriching the old raw update today gives the old enriched product plus signals: null.
    today = enrich(old_raw, CONFIG)
    assert all(market["signals"] is None for market in today["markets"].values())
    for market in today["markets"].values():
        del market["signals"]  # type: ignore[misc]
    assert today == old_enriched
    # The arbitrage stage raises the same alerts from either.
    then = detect_alerts([old_enriched], CONFIG, "t")
    now = detect_alerts([enrich(old_raw, CONFIG)], CONFIG, "t")
    assert [a["alert_id"] for a in then] == [a["alert_id"] for a in now]


def test_enrichment_carries_the_signals_to_the_enriched_product() -> None:
    signals = parse_signals(full_stats(), "DE")
    message = raw_update(
        markets={"DE": offer("DE", new=4500, signals=signals), "FR": offer("FR", buy_box=8000)}
    )
    enriched = enrich(validate_raw_update(message), CONFIG)
    assert enriched["markets"]["DE"]["signals"] == signals
    assert enriched["markets"]["FR"]["signals"] is None
    assert parse_enriched_product(encode(enriched))["markets"]["DE"]["signals"] == signals


def test_the_products_index_keeps_the_signals_in_source_without_indexing_them() -> None:
    """The rules read the signals from products.enriched; in the index they are part of every
    document (``_source``) but cost nothing to index (docs/design.md, "Indices")."""
    for market in PRODUCTS_MAPPING["properties"]["markets"]["properties"].values():
        assert market["properties"]["signals"] == {"type": "object", "enabled": False}
        assert market["properties"]["sell_price_eur_cents"] == {"type": "long"}  # searchable


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("amazon_avg90", -1, "must be an average price in minor units between 1 and"),
        ("amazon_avg90", 29.99, "must be an average price in minor units"),
        ("sales_rank_drops30", -1, "must be a count between 0 and 100000, or null"),
        ("new_oos_pct90", 101, "must be a whole percentage between 0 and 100"),
        ("buy_box_amazon_pct", True, "must be a whole percentage"),
        ("buy_box_is_fba", 1, "must be true, false or null"),
    ],
)
def test_bad_signal_values_are_refused_with_a_sentence(
    field: str, value: Any, expected: str
) -> None:
    signals = dict(parse_signals(full_stats(), "DE") or {})
    signals[field] = value
    message = raw_update(markets={"DE": offer("DE", new=4500, signals=signals)})
    assert fast_raw_update(copy.deepcopy(message)) is None  # doubt: the careful path decides
    with pytest.raises(SchemaError, match=re.escape(f"markets.DE.signals.{field}' {expected}")):
        parse_raw_update(encode(message))


def test_signals_must_be_an_object_or_null() -> None:
    message = raw_update(markets={"DE": offer("DE", new=4500, signals=[1, 2])})
    with pytest.raises(SchemaError, match=re.escape("'markets.DE.signals' must be an object")):
        parse_raw_update(encode(message))


def test_missing_and_unknown_signal_keys() -> None:
    message = raw_update(
        markets={"DE": offer("DE", new=4500, signals={"new_avg90": 4400, "from_the_future": 1})}
    )
    signals = parse_raw_update(encode(message))["markets"]["DE"]["signals"]
    assert signals is not None
    assert signals["new_avg90"] == 4400
    assert "from_the_future" not in signals
    assert {v for k, v in signals.items() if k != "new_avg90"} == {None}


# --------------------------------------------------------------------------- token cost


def test_documented_token_costs() -> None:
    assert (TOKENS_PER_PRODUCT, TOKENS_STATS_EXTRA, TOKENS_BUYBOX_EXTRA) == (1, 0, 2)
    assert product_token_cost(stats=True, buybox=True) == 3
    assert product_token_cost(stats=True, buybox=False) == 1
    assert product_token_cost(stats=False, buybox=True) == 3
    assert product_token_cost(stats=False, buybox=False) == 1


def test_pull_totals_count_tokens_per_market() -> None:
    bodies = generate_sample(150, seed=9)
    asins = list(dict.fromkeys(p["asin"] for body in bodies.values() for p in body["products"]))
    with KeepaTestServer(bodies=bodies) as server:
        client = KeepaHttpClient("k", base_url=server.url, sleep=lambda _s: None)
        totals = PullTotals()
        updates = list(iter_pull(client, asins, ("DE", "GB"), PULLED_AT, LOGGER, None, totals))
    assert updates
    assert totals.tokens_per_product == 3
    # 150 ASINs per market, 3 tokens each; the local Keepa charges as Keepa documents it.
    assert totals.tokens_estimated_per_market == {"DE": 450, "GB": 450}
    assert totals.tokens_consumed_per_market == {"DE": 450, "GB": 450}
    assert totals.tokens_estimated == totals.tokens_consumed == 900


def test_the_sample_costs_nothing_but_estimates_what_keepa_would_charge() -> None:
    source = KeepaSampleSource()
    asins = source.asins()[:120]
    totals = PullTotals()
    list(iter_pull(source, asins, ("DE", "FR", "IT"), PULLED_AT, LOGGER, None, totals))
    assert totals.tokens_consumed == 0
    assert totals.tokens_estimated_per_market == {"DE": 360, "FR": 360, "IT": 360}


# --------------------------------------------------------------------------- local Keepa


def test_the_local_keepa_sends_statistics_and_buy_box_data_only_when_asked() -> None:
    bodies = generate_sample(30, seed=4)
    asin = next(p["asin"] for p in bodies["DE"]["products"] if p["stats"] and p["title"])
    with KeepaTestServer(bodies=bodies) as server:

        def product_for(**params: str) -> dict[str, Any]:
            query = {"key": "k", "domain": "3", "asin": asin, **params}
            body = requests.get(f"{server.url}/product", params=query, timeout=5).json()
            assert body["tokensConsumed"] == (3 if params.get("buybox") == "1" else 1)
            return body["products"][0]

        everything = product_for(stats="90", buybox="1")
        no_buy_box = product_for(stats="90")
        no_stats = product_for(buybox="1")
    stats = everything["stats"]
    assert {"avg30", "avg90", "avg180", "buyBoxStats", "buyBoxIsFBA"} <= set(stats)
    assert parse_signals(stats, "DE") is not None
    assert not [key for key in no_buy_box["stats"] if key.startswith("buyBox")]
    for key in ("current", "avg30", "avg90", "avg180", "outOfStockPercentage90"):
        assert no_buy_box["stats"][key][18] == -2
    trimmed = parse_signals(no_buy_box["stats"], "DE")
    assert trimmed is not None
    assert trimmed["buy_box_amazon_pct"] is trimmed["buy_box_is_fba"] is None
    assert trimmed["buy_box_avg90"] is None
    assert trimmed["new_avg90"] == parse_signals(stats, "DE")["new_avg90"]  # type: ignore[index]
    assert "stats" not in no_stats
    offer_without_stats = parse_product(no_stats, "DE")  # the title alone still counts as data
    assert offer_without_stats is not None
    assert offer_without_stats["signals"] is None
