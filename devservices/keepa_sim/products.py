"""Keepa product objects of the simulated market: the fields the pipeline reads, shaped as
Keepa's ``/product`` answers them with ``stats`` and ``buybox`` (as the bundled sample is), and
the statistics of tools/sample_signals.py (averages, rank drops, buy box shares)."""

from __future__ import annotations

from typing import Any

from arbitrage.domain.keepa_parsing import utc_to_keepa_minutes
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.timestamps import parse_utc
from devservices.keepa_sim.catalog import MARKETS, Catalog
from devservices.keepa_sim.market import MarketState
from tools.sample_catalog import EUR_PER_GBP, SignalArchetypeRates
from tools.sample_signals import add_statistics

CURRENT_LENGTH = 36
_SIGNAL_RATES = SignalArchetypeRates()


def keepa_minute(epoch_ms: int | float) -> int:
    """Keepa time: minutes since 2011-01-01 (what ``lastUpdate`` and the csv arrays use)."""
    return utc_to_keepa_minutes(parse_utc("1970-01-01T00:00:00Z")) + int(epoch_ms // 60_000)


def placeholder(asin: str, market: str) -> dict[str, Any]:
    """What Keepa answers for an ASIN it knows nothing of in a marketplace."""
    return {
        "asin": asin,
        "domainId": MARKETPLACES[market].keepa_domain_id,
        "productType": 0,
        "title": None,
        "lastUpdate": 0,
        "csv": None,
        "stats": None,
    }


def market_objects(
    catalog: Catalog, state: MarketState, start_ms: int
) -> dict[int, dict[str, dict[str, Any]]]:
    """Each product of ``state`` (all markets computed) by index: its object in each market it
    is listed in. ``start_ms``: the simulator's epoch (spells are counted from it)."""
    now_minute = keepa_minute(start_ms + state.minute * 60_000)
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for row, index in enumerate(state.indexes.tolist()):
        per_market = {
            code: _product(catalog, state, row, index, code, col, now_minute, start_ms)
            for col, code in enumerate(MARKETS)
            if state.listed[row, col]
        }
        # Statistics are drawn per product over all its markets, as the sample's are.
        add_statistics(per_market, catalog.asin(index), catalog.seed, _SIGNAL_RATES)
        found[index] = per_market
    return found


def product_objects(
    catalog: Catalog, state: MarketState, market: str, start_ms: int
) -> dict[int, dict[str, Any]]:
    """Each product of ``state`` in ``market``, by index; Keepa's placeholder where it is not
    listed there."""
    return {
        index: per_market.get(market) or placeholder(catalog.asin(index), market)
        for index, per_market in market_objects(catalog, state, start_ms).items()
    }


def _product(
    catalog: Catalog,
    state: MarketState,
    row: int,
    index: int,
    market: str,
    col: int,
    now_minute: int,
    start_ms: int,
) -> dict[str, Any]:
    amazon = int(state.amazon[row, col])
    third_party = int(state.third_party[row, col])
    shipping = int(state.shipping[row, col])
    buy_box_total = int(state.buy_box[row, col])
    amazon_wins = bool(state.buy_box_is_amazon[row, col])
    offers = int(state.offers[row, col])
    new = int(state.new[row, col])
    current = [-1] * CURRENT_LENGTH
    current[0] = amazon
    current[1] = new
    current[3] = int(state.rank[row, col])
    current[7] = third_party + shipping if third_party > 0 and shipping else -1
    current[10] = third_party if third_party > 0 and not shipping else -1
    current[11] = offers
    current[18] = buy_box_total
    current[34] = offers // 2
    current[35] = offers - offers // 2
    fba = catalog.fba_eur_cents[index] / (EUR_PER_GBP if market == "GB" else 1)
    buy_box_price = amazon if amazon_wins else (third_party if third_party > 0 else -1)
    spell_start = keepa_minute(start_ms + float(state.spell_start[row, col]) * 60_000)
    return {
        "asin": catalog.asin(index),
        "domainId": MARKETPLACES[market].keepa_domain_id,
        "productType": 0,
        "title": catalog.title(index),
        "rootCategory": catalog.root_category(index, market),
        "categoryTree": [{"catId": catalog.root_category(index, market), "name": market}],
        "packageWeight": int(catalog.weight_g[index]),
        "packageLength": int(catalog.sides_mm[index, 0]),
        "packageWidth": int(catalog.sides_mm[index, 1]),
        "packageHeight": int(catalog.sides_mm[index, 2]),
        "referralFeePercentage": catalog.referral_pct(index),
        "fbaFees": {"pickAndPackFee": round(fba)},
        **({"monthlySold": sold} if (sold := int(catalog.monthly_sold[index])) else {}),
        **catalog.listing(index, market),
        "trackingSince": now_minute - 1_000_000,
        "lastUpdate": now_minute,
        "lastPriceChange": min(now_minute, spell_start),
        "csv": None,
        "stats": {
            "current": current,
            "buyBoxPrice": buy_box_price,
            "buyBoxShipping": 0 if amazon_wins or buy_box_price < 0 else shipping,
            "buyBoxIsAmazon": amazon_wins,
            "buyBoxIsFBA": buy_box_price > 0 and (amazon_wins or shipping == 0),
            "totalOfferCount": offers,
        },
    }
