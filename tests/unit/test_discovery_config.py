"""The discovery file: the shipped one loads; each mistake is refused with a sentence naming
it. Keepa's discovery answers: what is not an ASIN is dropped and counted."""

from __future__ import annotations

from typing import Any

import pytest

from arbitrage.domain.discovery_config import (
    DiscoveryConfigError,
    load_discovery_config,
    parse_discovery_config,
)
from arbitrage.domain.keepa_discovery import (
    DiscoveryAnswerError,
    PriceDrop,
    finder_cost,
    parse_best_sellers,
    parse_deals,
    parse_finder,
)

FINDER = {
    "name": "de-a",
    "market": "DE",
    "selection": {"current_SALES_lte": 1000},
    "per_page": 100,
}


def config(**kinds: Any) -> dict[str, Any]:
    return {"version": "t", **kinds}


def test_the_shipped_file_loads_with_every_kind() -> None:
    loaded = load_discovery_config()
    assert {s.kind for s in loaded.sources} == {"finder", "deals", "best_sellers"}
    finder = next(s for s in loaded.sources if s.kind == "finder")
    assert finder.finder_selection(1) == {**finder.selection, "page": 1, "perPage": finder.per_page}
    assert finder.most_tokens == finder.pages * (10 + -(-finder.per_page // 100))
    deals = next(s for s in loaded.sources if s.kind == "deals")
    # Keepa's sortType 1: the newest deal first, unless the file says otherwise.
    assert deals.deal_request(0)["sortType"] == 1 and deals.deal_request(2)["page"] == 2


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (config(finder=[{**FINDER, "market": "US"}]), "market must be one of"),
        (config(finder=[{**FINDER, "name": "Bad Name"}]), "name must be"),
        (config(finder=[{**FINDER, "per_page": 20}]), "pages hold 50 to 10000"),
        (config(finder=[{**FINDER, "pages": 3, "per_page": 5000}]), "does not fit"),
        (config(finder=[{**FINDER, "selection": {}}]), "non-empty table"),
        (config(finder=[{**FINDER, "selection": {"page": 2}}]), "set by pages and per_page"),
        (config(finder=[{**FINDER, "schedule": "hourly"}]), "five-field cron"),
        (config(finder=[{**FINDER, "colour": "red"}]), "unknown setting(s) colour"),
        (config(finder=[FINDER, FINDER]), "unique"),
        (config(finder=[{**FINDER, "name": "asins_file"}]), "not 'asins_file'"),
        (
            config(deals=[{"name": "d", "market": "FR", "min_drop_pct": 50, "max_drop_pct": 10}]),
            "min_drop_pct ≤ max_drop_pct",
        ),
        (config(deals=[{"name": "d", "market": "FR", "price_type": "used"}]), "price_type"),
        (config(deals=[{"name": "d", "market": "FR", "sort": "oldest"}]), "sort must be"),
        (config(best_sellers=[{"name": "b", "market": "IT", "category": 0}]), "category"),
        ({"finder": []}, "version"),
        (config(finders=[]), "unknown setting(s) finders"),
    ],
)
def test_mistakes_are_refused_with_a_sentence(data: dict[str, Any], says: str) -> None:
    with pytest.raises(DiscoveryConfigError, match=None) as refused:
        parse_discovery_config(data, "discovery.toml")
    assert says in str(refused.value)


def test_answers_keep_asins_only() -> None:
    finder = parse_finder(
        {"asinList": ["B000000001", "b000000002", 7, "B000000001"], "totalResults": 9}
    )
    assert finder.asins == ("B000000001",) and finder.dropped == 2 and finder.total_results == 9
    deals = parse_deals({"deals": {"dr": [{"asin": "B000000003"}, {"asin": "x\\n"}, "junk"]}})
    assert deals.asins == ("B000000003",) and deals.dropped == 2
    assert parse_best_sellers({"bestSellersList": None}).asins == ()
    with pytest.raises(DiscoveryAnswerError):
        parse_deals({"nothing": 1})
    with pytest.raises(DiscoveryAnswerError):
        parse_finder({"asinList": "B000000001"})


def test_a_deal_carries_its_drop_of_the_asked_price_type_and_interval() -> None:
    def deal(asin: str, **fields: Any) -> dict[str, Any]:
        week_new = [[-1] * 19, [-1, 450] + [-1] * 17]  # [DealInterval][CsvType]
        return {"asin": asin, "creationDate": 8_000_000, "delta": week_new, **fields}

    body = {
        "deals": {
            "dr": [
                deal("B000000001"),
                deal("B000000002", creationDate="yesterday"),
                deal("B000000003", delta=[[1]]),
            ]
        }
    }
    found = parse_deals(body, price_type=1, date_range=1)
    assert found.asins == ("B000000001", "B000000002", "B000000003")
    # Keepa minutes + 21 564 000, × 60 000: epoch ms.
    assert found.drops == {"B000000001": PriceDrop((8_000_000 + 21_564_000) * 60_000, 450)}
    # The same deals read for another price type: found, but no drop to weigh them by.
    assert parse_deals(body, price_type=0, date_range=1).drops == {}


def test_finder_cost_counts_a_part_of_a_hundred_as_a_hundred() -> None:
    assert [finder_cost(n) for n in (0, 1, 100, 101, 500)] == [10, 11, 11, 12, 15]
