"""Keepa's csv price histories: parsing, the raw update's history block in both validation
paths, and enrichment's price observations in EUR."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from arbitrage.clients.keepa_sources import KeepaHttpClient
from arbitrage.domain.enrichment import enrich, history_observations
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.keepa_history import (
    BAD_LENGTH,
    NOT_A_LIST,
    NOT_INTEGER,
    PRICE_OUT_OF_RANGE,
    TIME_NOT_ORDERED,
    TIME_OUT_OF_RANGE,
    TOO_LONG,
    HistoryStats,
    history_window,
    parse_history,
)
from arbitrage.domain.keepa_parsing import merge_market_products, product_token_cost
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.fast_validation import fast_raw_update
from arbitrage.domain.messages.history import MAX_HISTORY_POINTS
from arbitrage.domain.messages.types import SchemaError
from arbitrage.domain.messages.validation import _checked_raw_update, parse_raw_update
from arbitrage.domain.transforms import SourceRecord, enrich_records
from arbitrage.settings import Settings, SettingsError
from pipelines.definitions import keepa_resource
from tests.factories import offer, raw_update
from tests.keepa_server import KeepaTestServer
from tools.sample_generator import generate_sample

CONFIG = load_fee_config()

# Keepa minutes converted by hand: Unix minutes − 21 564 000; epoch ms = (minutes + 21 564 000)
# × 60 000. 2026-11-26T10:00Z = 1 795 687 200 000 ms = 29 928 120 Unix minutes.
PULL = "2026-11-26T10:00:00.000Z"
PULL_MS = 1_795_687_200_000
T_OLD = 8_282_880  # 2026-10-01T00:00Z, 1 790 812 800 000 ms: before a 30-day window
T_OLD_MS = 1_790_812_800_000
T1 = 8_355_390  # 2026-11-20T08:30Z
T1_MS = 1_795_163_400_000
T2 = 8_358_480  # 2026-11-22T12:00Z
T2_MS = 1_795_348_800_000
T3 = 8_362_080  # 2026-11-25T00:00Z
T3_MS = 1_795_564_800_000
T_PULL = 8_364_120  # the pull's own minute
WINDOW_30 = (PULL_MS - 30 * 86_400_000, PULL_MS)


def csv_with(
    amazon: list[Any] | None = None, new: list[Any] | None = None, buy_box: list[Any] | None = None
) -> list[Any]:
    csv: list[Any] = [None] * 19
    csv[0], csv[1], csv[18] = amazon, new, buy_box
    return csv


# --------------------------------------------------------------------------- parsing


def test_hand_converted_times_and_enrichments_rules_at_each_change() -> None:
    csv = csv_with(
        # Amazon at 50.00 from before the window, out of stock (-1) at T2.
        amazon=[T_OLD, 5000, T2, -1],
        new=[T_OLD, 4800, T1, 4700, T3, 5200],
        # [time, price, shipping]: landing price = price + shipping; -1 = no buy box.
        buy_box=[T_OLD, 5000, 0, T1, 4900, 299, T3, -1, 0],
    )
    result = parse_history(csv, *WINDOW_30)
    assert result.points == [
        # buy = the lower of Amazon (50.00, set before the window) and new; sell = the buy box
        # with its shipping, 49.00 + 2.99
        [T1_MS, 4700, 5199],
        # T2: Amazon out of stock; buy is still new's 47.00, sell unchanged: merged away.
        # T3: no buy box, new at 52.00: buy = sell = new
        [T3_MS, 5200, 5200],
    ]
    assert not result.dropped and result.truncated == 0


def test_no_offer_anywhere_is_a_point_of_nulls_and_the_old_value_counts_in_the_window() -> None:
    csv = csv_with(new=[T_OLD, 3000, T2, -1, T3, 3100])
    assert parse_history(csv, *WINDOW_30).points == [
        [T2_MS, None, None],
        [T3_MS, 3100, 3100],
    ]
    # A wider window takes the old change too.
    wide = history_window(PULL_MS, 90)
    assert parse_history(csv, *wide).points == [
        [T_OLD_MS, 3000, 3000],
        [T2_MS, None, None],
        [T3_MS, 3100, 3100],
    ]


def test_negative_shipping_counts_as_zero_and_not_set_is_no_price() -> None:
    csv = csv_with(buy_box=[T1, 4000, -1, T2, -2, 0])
    assert parse_history(csv, *WINDOW_30).points == [[T1_MS, None, 4000], [T2_MS, None, None]]


def test_points_at_or_after_the_pull_are_left_to_the_pull() -> None:
    csv = csv_with(new=[T3, 1000, T_PULL, 1100, T_PULL + 5, 1200])
    assert parse_history(csv, *WINDOW_30).points == [[T3_MS, 1000, 1000]]


def test_changes_at_the_same_minute_make_one_point() -> None:
    csv = csv_with(amazon=[T1, 900], new=[T1, 1000], buy_box=[T1, 1100, 50])
    assert parse_history(csv, *WINDOW_30).points == [[T1_MS, 900, 1150]]


def test_no_csv_or_no_series_is_no_history() -> None:
    assert parse_history(None, *WINDOW_30).points is None
    assert parse_history("junk", *WINDOW_30).points is None
    assert parse_history([], *WINDOW_30).points is None
    assert parse_history(csv_with(), *WINDOW_30).points is None


@pytest.mark.parametrize(
    ("series", "reason"),
    [
        ({"new": "1,2"}, NOT_A_LIST),
        ({"new": {"t": 1}}, NOT_A_LIST),
        ({"new": [T1, 100, T2]}, BAD_LENGTH),
        ({"buy_box": [T1, 100, 0, T2]}, BAD_LENGTH),
        ({"new": [T1, "100"]}, NOT_INTEGER),
        ({"new": [T1, 1.5]}, NOT_INTEGER),
        ({"new": [T1, True]}, NOT_INTEGER),
        ({"new": [None, 100]}, NOT_INTEGER),
        ({"buy_box": [T1, 100, "free"]}, NOT_INTEGER),
        ({"new": [0, 100]}, TIME_OUT_OF_RANGE),
        ({"new": [-5, 100]}, TIME_OUT_OF_RANGE),
        ({"new": [10**12, 100]}, TIME_OUT_OF_RANGE),
        ({"new": [T2, 100, T1, 200]}, TIME_NOT_ORDERED),
        ({"new": [T1, -7]}, PRICE_OUT_OF_RANGE),
        ({"new": [T1, 10**9]}, PRICE_OUT_OF_RANGE),
        ({"buy_box": [T1, 9_999_999, 10]}, PRICE_OUT_OF_RANGE),
        ({"new": list(range(1, 400_002))}, TOO_LONG),
    ],
)
def test_a_hostile_series_is_dropped_with_its_reason_and_the_others_still_count(
    series: dict[str, Any], reason: str
) -> None:
    good = [T1, 4000]
    csv = csv_with(amazon=good, **series)
    result = parse_history(csv, *WINDOW_30)
    assert result.dropped == {reason: 1}
    assert result.points == [[T1_MS, 4000, None]]  # Amazon's own series still read


def test_a_huge_history_keeps_the_newest_points() -> None:
    start = T1 - 20 * 24 * 60
    new = [value for n in range(3000) for value in (start + n, 1000 + n % 2)]
    result = parse_history(csv_with(new=new), *WINDOW_30)
    assert result.points is not None and len(result.points) == MAX_HISTORY_POINTS
    assert result.truncated == 2000
    assert result.points[-1][0] == (start + 2999 + 21_564_000) * 60_000


def test_stats_count_markets_points_and_drops() -> None:
    stats = HistoryStats()
    stats.add(parse_history(csv_with(new=[T1, 1000], amazon="x"), *WINDOW_30))
    stats.add(parse_history(None, *WINDOW_30))
    assert (stats.markets, stats.points, stats.truncated) == (1, 1, 0)
    assert stats.dropped == {NOT_A_LIST: 1}


def keepa_product(market_price: int, csv: Any) -> dict[str, Any]:
    current = [-1] * 36
    current[1] = market_price
    return {
        "asin": "B0HIST0001",
        "title": "A product with history",
        "stats": {"current": current},
        "csv": csv,
    }


def test_merge_puts_history_on_the_markets_only_when_asked() -> None:
    per_market = {
        "DE": keepa_product(5000, csv_with(new=[T1, 4800, T3, 5000])),
        "GB": keepa_product(4000, None),
    }
    pulled_at = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    plain = merge_market_products("B0HIST0001", per_market, pulled_at, "keepa", ("DE", "GB"))
    assert all("history" not in market for market in plain["markets"].values())
    stats = HistoryStats()
    update = merge_market_products(
        "B0HIST0001",
        per_market,
        pulled_at,
        "keepa",
        ("DE", "GB"),
        history_days=30,
        history_stats=stats,
    )
    assert update["markets"]["DE"]["history"] == [[T1_MS, 4800, 4800], [T3_MS, 5000, 5000]]
    assert "history" not in update["markets"]["GB"]
    assert stats.points == 2
    # What the pull produces is a valid raw update, the same through both paths.
    assert parse_raw_update(encode(update)) == _checked_raw_update(json.loads(encode(update)))


def test_history_costs_no_extra_token() -> None:
    assert product_token_cost(stats=True, buybox=True, history=True) == 3
    assert product_token_cost(stats=True, buybox=True) == 3


# --------------------------------------------------------------------------- the message block


def with_history(de: Any = None, gb: Any = None) -> dict[str, Any]:
    markets = {"DE": offer("DE", new=4500), "GB": offer("GB", buy_box=4200)}
    if de is not None:
        markets["DE"]["history"] = de
    if gb is not None:
        markets["GB"]["history"] = gb
    return raw_update(markets=markets, timestamp=PULL)


GOOD_BLOCKS: list[Any] = [
    [],
    [[T1_MS, 4700, 5199]],
    [[T1_MS, None, None], [T2_MS, None, 5000], [T3_MS, 1, 10_000_000]],
    [[PULL_MS - 1, 100, 200]],
    [[1_293_840_000_000, 100, 200]],  # Keepa's epoch itself
]
BAD_BLOCKS: list[tuple[Any, str]] = [
    ("[]", "must be a list of [epoch_ms, buy, sell] points"),
    ({"0": [T1_MS, 1, 2]}, "must be a list"),
    ([[T1_MS, 1]], "must be [epoch_ms, buy, sell]"),
    ([[T1_MS, 1, 2, 3]], "must be [epoch_ms, buy, sell]"),
    (["x"], "must be [epoch_ms, buy, sell]"),
    ([[str(T1_MS), 1, 2]], "must be a time in epoch ms"),
    ([[float(T1_MS), 1, 2]], "must be a time in epoch ms"),
    ([[True, 1, 2]], "must be a time in epoch ms"),
    ([[PULL_MS, 1, 2]], "before the pull's time"),
    ([[PULL_MS + 60_000, 1, 2]], "before the pull's time"),
    ([[1_293_839_999_999, 1, 2]], "on or after 2011-01-01"),
    ([[T2_MS, 1, 2], [T1_MS, 1, 2]], "after the previous point's"),
    ([[T1_MS, 1, 2], [T1_MS, 3, 4]], "after the previous point's"),
    ([[T1_MS, 0, 2]], "prices in minor units between 1 and 10000000"),
    ([[T1_MS, -1, 2]], "prices in minor units between 1 and 10000000"),
    ([[T1_MS, 1, 10_000_001]], "prices in minor units"),
    ([[T1_MS, 1, "2"]], "prices in minor units"),
    ([[T1_MS, 1, 2.0]], "prices in minor units"),
    ([[T1_MS, False, 2]], "prices in minor units"),
    ([[T1_MS + n, 1, 2] for n in range(MAX_HISTORY_POINTS + 1)], "the limit is 1000"),
]


@pytest.mark.parametrize("block", GOOD_BLOCKS)
def test_both_paths_accept_a_good_history_block_the_same_way(block: Any) -> None:
    message = with_history(de=block, gb=copy.deepcopy(block))
    fast = fast_raw_update(copy.deepcopy(message))
    careful = _checked_raw_update(copy.deepcopy(message))
    assert fast is not None, "the fast path gave up on a valid history"
    assert fast == careful
    assert careful["markets"]["DE"]["history"] == block


def test_a_message_without_history_stays_as_it_was() -> None:
    message = with_history()
    for checked in (fast_raw_update(copy.deepcopy(message)), _checked_raw_update(message)):
        assert checked is not None
        assert all("history" not in market for market in checked["markets"].values())
    nulls = with_history()
    nulls["markets"]["DE"]["history"] = None
    assert "history" not in parse_raw_update(encode(nulls))["markets"]["DE"]


@pytest.mark.parametrize(("block", "expected"), BAD_BLOCKS)
def test_both_paths_refuse_a_bad_history_block(block: Any, expected: str) -> None:
    message = with_history(gb=block)
    assert fast_raw_update(copy.deepcopy(message)) is None
    with pytest.raises(SchemaError, match=r"markets\.GB\.history") as careful:
        _checked_raw_update(copy.deepcopy(message))
    assert expected in str(careful.value)
    # What the stage calls: the fast path gives up, the careful one names the problem.
    with pytest.raises(SchemaError) as staged:
        parse_raw_update(encode(message))
    assert str(staged.value) == str(careful.value)


def test_a_full_history_in_five_markets_fits_a_raw_update() -> None:
    points = [[T_OLD_MS + n * 60_000, 9_999_999, 9_999_998] for n in range(MAX_HISTORY_POINTS)]
    markets = {
        code: {**offer(code, new=4500), "history": points}
        for code in ("DE", "FR", "IT", "ES", "GB")
    }
    message = raw_update(markets=markets, timestamp=PULL)
    assert len(encode(message)) < 256 * 1024
    assert parse_raw_update(encode(message))["markets"]["IT"]["history"] == points


# --------------------------------------------------------------------------- enrichment


def record(message: dict[str, Any], offset: int = 0) -> SourceRecord:
    return SourceRecord(
        "raw.keepa_updates", 0, offset, message["asin"].encode(), encode(message), 0
    )


def test_enrichment_converts_history_to_eur_at_the_pulls_rates_and_leaves_the_product_as_is() -> (
    None
):
    message = with_history(
        de=[[T1_MS, 4700, 5199], [T3_MS, None, None]],
        gb=[[T1_MS, 4000, None], [T2_MS, 1001, 2003]],
    )
    raw = parse_raw_update(encode(message))
    observations = history_observations(raw, CONFIG)
    # GBP → EUR at the config's 1.1450, rounded half-even once: 4000 × 1.145 = 4580,
    # 1001 × 1.145 = 1146.145 → 1146, 2003 × 1.145 = 2293.435 → 2293.
    assert observations == [
        (
            f"B000TEST01:{T1_MS}",
            {
                "asin": "B000TEST01",
                "observed_at": T1_MS,
                "markets": {
                    "DE": {
                        "currency": "EUR",
                        "buy_price": 4700,
                        "sell_price": 5199,
                        "buy_price_eur_cents": 4700,
                        "sell_price_eur_cents": 5199,
                    },
                    "GB": {
                        "currency": "GBP",
                        "buy_price": 4000,
                        "sell_price": None,
                        "buy_price_eur_cents": 4580,
                        "sell_price_eur_cents": None,
                    },
                },
            },
        ),
        (
            f"B000TEST01:{T2_MS}",
            {
                "asin": "B000TEST01",
                "observed_at": T2_MS,
                "markets": {
                    "GB": {
                        "currency": "GBP",
                        "buy_price": 1001,
                        "sell_price": 2003,
                        "buy_price_eur_cents": 1146,
                        "sell_price_eur_cents": 2293,
                    }
                },
            },
        ),
        # T3: DE had no offer at all, nothing to draw, no document.
    ]
    # The enriched product is byte for byte the one without history.
    plain = parse_raw_update(encode(with_history()))
    assert encode(enrich(raw, CONFIG)) == encode(enrich(plain, CONFIG))


def test_enrich_records_carries_the_history_beside_each_product() -> None:
    records = [
        record(with_history(de=[[T1_MS, 4700, 5199]]), 0),
        record({"asin": "B000TEST01", "not": "a raw update"}, 1),
        record(with_history(), 2),
    ]
    batch = enrich_records(records, CONFIG, PULL_MS)
    assert [r.offset for r, _ in batch.products] == [0, 2]
    assert [len(history) for history in batch.history] == [1, 0]
    assert batch.history[0][0][0] == f"B000TEST01:{T1_MS}"


# --------------------------------------------------------------------------- the HTTP client


@pytest.fixture
def history_server() -> Iterator[tuple[KeepaTestServer, list[str]]]:
    bodies = generate_sample(3, seed=11)
    asins = [p["asin"] for p in bodies["DE"]["products"]][:2]
    now_minutes = int(datetime.now(UTC).timestamp()) // 60 - 21_564_000
    for product in bodies["DE"]["products"]:
        # 40 days ago (before a 30-day window), 10 days ago, 1 day ago.
        product["csv"] = csv_with(
            new=[now_minutes - 40 * 1440, 2000, now_minutes - 10 * 1440, 2100],
            buy_box=[now_minutes - 1440, 2500, 0],
        )
    with KeepaTestServer(bodies=bodies) as server:
        yield server, asins


def test_the_client_asks_for_history_only_with_history_days(
    history_server: tuple[KeepaTestServer, list[str]],
) -> None:
    server, asins = history_server
    plain = KeepaHttpClient("k", base_url=server.url, sleep=lambda _: None)
    batch = plain.fetch_batch("DE", asins)
    assert server.requests[-1].params["history"] == "0"
    assert "days" not in server.requests[-1].params
    assert all(product["csv"] is None for product in batch.products.values())

    client = KeepaHttpClient("k", base_url=server.url, history_days=30, sleep=lambda _: None)
    assert "history_days=30" in repr(client)
    batch = client.fetch_batch("DE", asins)
    params = server.requests[-1].params
    assert (params["history"], params["days"], params["buybox"]) == ("1", "30", "1")
    assert client.tokens_per_product == 3
    for product in batch.products.values():
        # Cut to 30 days, keeping the older value still in effect.
        assert len(product["csv"][1]) == 4 and len(product["csv"][18]) == 3
    with pytest.raises(ValueError, match="history_days"):
        KeepaHttpClient("k", base_url=server.url, history_days=-1)


# --------------------------------------------------------------------------- the setting


def test_keepa_history_days_is_off_by_default_and_reaches_the_keepa_resource() -> None:
    assert Settings.from_env({}).keepa_history_days == 0
    settings = Settings.from_env({"KEEPA_HISTORY_DAYS": "30"})
    assert settings.keepa_history_days == 30
    assert keepa_resource(settings).history_days == 30
    with pytest.raises(SettingsError, match="KEEPA_HISTORY_DAYS=-1 must be at least 0"):
        Settings.from_env({"KEEPA_HISTORY_DAYS": "-1"})
    with pytest.raises(SettingsError, match="KEEPA_HISTORY_DAYS='a month' is not an integer"):
        Settings.from_env({"KEEPA_HISTORY_DAYS": "a month"})
