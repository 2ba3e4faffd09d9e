"""Keepa's statistics object → the per-market signals of a raw update. Pure: no HTTP or Dagster.

What Keepa sends (keepacom/api_backend ``structs/Stats.java``; the product request's ``stats``
and ``buybox`` parameters, documented in the ``keepa`` Python package's ``Keepa.query``):

* ``avg30`` / ``avg90`` / ``avg180``: weighted mean prices over the last 30/90/180 days, arrays
  indexed like ``Product.CsvType`` (AMAZON 0, NEW 1, BUY_BOX_SHIPPING 18); -1 when there was no
  offer in the window or too little data. Set whenever ``stats`` is requested (the window of
  ``stats`` itself only sizes ``avg``, which we do not read).
* ``salesRankDrops30`` / ``salesRankDrops90``: rank drops that Keepa counts as sales; -1 = none
  known.
* ``outOfStockPercentage90``: per CsvType, 0-100; -1 = too little data.
* ``buyBoxStats``: seller id → ``{percentageWon, avgPrice, avgNewOfferCount, isFBA, lastSeen}``
  over the stats window; ``buyBoxIsAmazon`` / ``buyBoxIsFBA``: the current winner. All need
  ``buybox=1`` (or ``offers``).
* ``offerCountFBA`` / ``offerCountFBM``: live new offers per fulfilment; Keepa fills them only
  with the ``offers`` parameter (-2 otherwise), so the counts fall back to ``current`` at
  COUNT_NEW_FBA (34) / COUNT_NEW_FBM (35), the offer-count histories Keepa keeps per product.

Every "no data" marker (-1, -2, a missing key, a wrong type, a value out of range) becomes
None, never 0: 0 rank drops or 0 % out of stock are observations, and a filter must be able
to tell them from "Keepa does not know".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from arbitrage.domain.messages.signals import MAX_SIGNAL_COUNT, MAX_TEXT
from arbitrage.domain.messages.types import MAX_PRICE_MINOR, MarketSignals

# Indices into Keepa's CsvType-indexed stats arrays.
CSV_AMAZON = 0
CSV_NEW = 1
CSV_BUY_BOX_SHIPPING = 18
CSV_COUNT_NEW_FBA = 34
CSV_COUNT_NEW_FBM = 35

# Amazon's own seller (merchant) id in each marketplace: the id under which Amazon's retail
# offers appear in buyBoxStats and buyBoxSellerIdHistory. They are the `smid=` / `m=` values of
# Amazon-sold offers on each store's pages, and the same five appear in Keepa's own browser
# extension (its `AmazonSellerIds` list) and in public seller-filter tools; see
# docs/decisions.md, 30.
AMAZON_SELLER_IDS: dict[str, str] = {
    "DE": "A3JWKAKR8XB7XF",  # Amazon.de
    "FR": "A1X6FK5RDHNB96",  # Amazon.fr
    "IT": "A11IL2PNWYJU7H",  # Amazon.it
    "ES": "A1AT7YVPFBWXBL",  # Amazon.es
    "GB": "A3P5ROKL5A1OLE",  # Amazon.co.uk
}

# The stats keys a signal is read from; a stats object with none of them has no signals.
SIGNAL_SOURCE_KEYS = (
    "avg30",
    "avg90",
    "avg180",
    "salesRankDrops30",
    "salesRankDrops90",
    "outOfStockPercentage90",
    "buyBoxStats",
    "buyBoxIsAmazon",
    "buyBoxIsFBA",
    "offerCountFBA",
    "offerCountFBM",
)


def keepa_int(value: Any) -> int | None:
    """A Keepa JSON integer, or None for anything else. JSON true/false are bools, which Python
    counts as ints; they are never numbers here. (keepa_parsing reads its fields with it too.)"""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _at(array: Any, index: int) -> int | None:
    if not isinstance(array, Sequence) or isinstance(array, str) or index >= len(array):
        return None
    return keepa_int(array[index])


def _in_range(value: int | None, low: int, high: int) -> int | None:
    return value if value is not None and low <= value <= high else None


def avg_price(stats: Mapping[str, Any], window: str, index: int) -> int | None:
    """``stats.avg<window>[index]`` as minor units; -1 (no offer / too little data) → None."""
    return _in_range(_at(stats.get(window), index), 1, MAX_PRICE_MINOR)


def oos_pct90(stats: Mapping[str, Any], index: int) -> int | None:
    """``stats.outOfStockPercentage90[index]``, 0-100; -1 (too little data) → None."""
    return _in_range(_at(stats.get("outOfStockPercentage90"), index), 0, 100)


def rank_drops(stats: Mapping[str, Any], name: str) -> int | None:
    """``salesRankDrops30`` / ``salesRankDrops90``; -1 (unknown) → None, 0 stays 0."""
    return _in_range(keepa_int(stats.get(name)), 0, MAX_SIGNAL_COUNT)


def amazon_buy_box_pct(stats: Mapping[str, Any], market_code: str) -> int | None:
    """Amazon's share of the buy box over the stats window, whole percent (half-even).

    None when Keepa sent no buy box statistics (no ``buybox=1``, or nobody held the buy box in
    the window); 0 when it did and Amazon's own seller id is not among the winners.
    """
    by_seller = stats.get("buyBoxStats")
    if not isinstance(by_seller, Mapping) or not by_seller:
        return None
    entry = by_seller.get(AMAZON_SELLER_IDS[market_code])
    if entry is None:
        return 0
    won = entry.get("percentageWon") if isinstance(entry, Mapping) else None
    if isinstance(won, bool) or not isinstance(won, int | float) or not math.isfinite(won):
        return None
    return round(won) if 0 <= won <= 100 else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def offer_count(stats: Mapping[str, Any], name: str, csv_index: int) -> int | None:
    """``offerCountFBA``/``offerCountFBM`` (set with ``offers``), else ``current[csv_index]``."""
    counted = _in_range(keepa_int(stats.get(name)), 0, MAX_SIGNAL_COUNT)
    if counted is not None:
        return counted
    return _in_range(_at(stats.get("current"), csv_index), 0, MAX_SIGNAL_COUNT)


def parse_signals(
    stats: Any, market_code: str, product: Mapping[str, Any] | None = None
) -> MarketSignals | None:
    """One market's ``stats`` object → its signals; None when Keepa sent no statistics. The
    product object beside ``stats`` gives ``monthlySold`` (Keepa sends none, or 0, for most
    products: both mean no figure) and the listing's facts (``listing_facts``)."""
    if not isinstance(stats, Mapping) or not any(key in stats for key in SIGNAL_SOURCE_KEYS):
        return None
    return {
        "amazon_avg30": avg_price(stats, "avg30", CSV_AMAZON),
        "amazon_avg90": avg_price(stats, "avg90", CSV_AMAZON),
        "amazon_avg180": avg_price(stats, "avg180", CSV_AMAZON),
        "new_avg30": avg_price(stats, "avg30", CSV_NEW),
        "new_avg90": avg_price(stats, "avg90", CSV_NEW),
        "new_avg180": avg_price(stats, "avg180", CSV_NEW),
        "buy_box_avg30": avg_price(stats, "avg30", CSV_BUY_BOX_SHIPPING),
        "buy_box_avg90": avg_price(stats, "avg90", CSV_BUY_BOX_SHIPPING),
        "buy_box_avg180": avg_price(stats, "avg180", CSV_BUY_BOX_SHIPPING),
        "sales_rank_drops30": rank_drops(stats, "salesRankDrops30"),
        "sales_rank_drops90": rank_drops(stats, "salesRankDrops90"),
        "amazon_oos_pct90": oos_pct90(stats, CSV_AMAZON),
        "new_oos_pct90": oos_pct90(stats, CSV_NEW),
        "buy_box_oos_pct90": oos_pct90(stats, CSV_BUY_BOX_SHIPPING),
        "buy_box_amazon_pct": amazon_buy_box_pct(stats, market_code),
        "buy_box_is_amazon": _flag(stats.get("buyBoxIsAmazon")),
        "buy_box_is_fba": _flag(stats.get("buyBoxIsFBA")),
        "offer_count_fba": offer_count(stats, "offerCountFBA", CSV_COUNT_NEW_FBA),
        "offer_count_fbm": offer_count(stats, "offerCountFBM", CSV_COUNT_NEW_FBM),
        "monthly_sold": _positive_count((product or {}).get("monthlySold")),
        **listing_facts(product or {}),
    }


# Keepa's productType of a parent ASIN: no offers of its own, a seller buys a child variation.
VARIATION_PARENT = 5


def listing_facts(product: Mapping[str, Any]) -> dict[str, Any]:
    """What Keepa's product object says about the listing, None where it says nothing:
    ``hazardousMaterials`` (a list of aspect/value pairs; empty: none declared),
    ``productType``, ``packageQuantity`` (else ``numberOfItems``; 0 or -1: unknown),
    ``returnRate`` (1 low, 2 high, null unknown or average) and ``brand``."""
    hazards = product.get("hazardousMaterials")
    product_type = keepa_int(product.get("productType"))
    quantity = _positive_count(product.get("packageQuantity")) or _positive_count(
        product.get("numberOfItems")
    )
    rate = keepa_int(product.get("returnRate"))
    return {
        "hazmat": bool(hazards) if isinstance(hazards, list) else None,
        "variation_parent": None if product_type is None else product_type == VARIATION_PARENT,
        "package_quantity": quantity,
        "return_rate_high": {1: False, 2: True}.get(rate) if rate is not None else None,
        "brand": _text(product.get("brand")),
    }


def _text(value: Any) -> str | None:
    """Printable text, whitespace collapsed, cut to MAX_TEXT; None for anything else."""
    if not isinstance(value, str):
        return None
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return cleaned[:MAX_TEXT] or None


def _positive_count(value: Any) -> int | None:
    """A count Keepa gives only when there is one; capped where the signals' counts end
    (Amazon's badge itself stops at "100K+ bought")."""
    count = keepa_int(value)
    return min(count, MAX_SIGNAL_COUNT) if count is not None and count > 0 else None
