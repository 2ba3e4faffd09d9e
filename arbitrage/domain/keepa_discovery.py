"""Keepa's discovery answers, parsed: Product Finder (``/query``), Deals (``/deal``), Best
Sellers (``/bestsellers``). Each gives ASINs; an entry that is not an ASIN is counted and
dropped, never passed on (discovery feeds the registry, and the registry feeds the pulls).

Request shapes and costs are Keepa's documented ones (docs/keepa-simulator.md lists them with
the readings taken where the documentation is open); ``finder_cost`` and friends are what a
plan estimates before it spends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arbitrage.domain.keepa_history import keepa_minutes_to_ms
from arbitrage.domain.messages.types import ASIN_PATTERN

# Product Finder: 50 to 10 000 ASINs a page; no further than the 10 000th result.
FINDER_MIN_PER_PAGE = 50
FINDER_MAX_RESULTS = 10_000
FINDER_BASE_COST = 10
FINDER_ASINS_PER_TOKEN = 100
DEALS_PER_PAGE = 150
DEAL_PAGE_COST = 5
BEST_SELLERS_COST = 50


class DiscoveryAnswerError(ValueError):
    """An answer without the list it should carry (Keepa changed, or a proxy answered)."""


@dataclass(frozen=True)
class Found:
    """ASINs one discovery request found, in Keepa's order, and what was not an ASIN."""

    asins: tuple[str, ...]
    dropped: int = 0
    total_results: int | None = None  # Product Finder: matches of the whole selection
    # Deals: per ASIN, the price drop it reports (what a planner weighs a refresh by).
    drops: Mapping[str, PriceDrop] = field(default_factory=dict)


@dataclass(frozen=True)
class PriceDrop:
    """A deal's drop of the asked price type over the asked interval: since when (Keepa's
    ``creationDate``, epoch ms) and by how much (the market's minor units; positive: down)."""

    since_ms: int
    drop_minor: int


def finder_cost(returned: int) -> int:
    """Tokens of one Product Finder page returning ``returned`` ASINs: 10, plus 1 per 100
    ASINs (a part of 100 counts as 100)."""
    return FINDER_BASE_COST + -(-returned // FINDER_ASINS_PER_TOKEN)


def finder_page_limits(page: int, per_page: int) -> None:
    if per_page < FINDER_MIN_PER_PAGE or page < 0 or (page + 1) * per_page > FINDER_MAX_RESULTS:
        raise ValueError(
            f"Product Finder pages hold {FINDER_MIN_PER_PAGE} to {FINDER_MAX_RESULTS} ASINs and "
            f"reach no further than the {FINDER_MAX_RESULTS}th result: page {page} of "
            f"{per_page} does not fit"
        )


def _asins(values: Any, where: str) -> tuple[tuple[str, ...], int]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise DiscoveryAnswerError(f"the {where} answer has no list of ASINs")
    good = [v for v in values if isinstance(v, str) and ASIN_PATTERN.fullmatch(v)]
    return tuple(dict.fromkeys(good)), len(values) - len(good)


def parse_finder(body: Mapping[str, Any]) -> Found:
    asins, dropped = _asins(body.get("asinList", []) or [], "Product Finder")
    total = body.get("totalResults")
    total_results = total if isinstance(total, int) and not isinstance(total, bool) else None
    return Found(asins, dropped, total_results)


def parse_deals(body: Mapping[str, Any], price_type: int = 1, date_range: int = 0) -> Found:
    """The deals' ASINs, and each one's drop of ``price_type`` (Keepa's CsvType) over
    ``date_range`` (Keepa's DealInterval): the two the request asked for."""
    deals = body.get("deals")
    if not isinstance(deals, Mapping):
        raise DiscoveryAnswerError("the Deals answer has no deals object")
    entries = deals.get("dr") or []
    if not isinstance(entries, Sequence):
        raise DiscoveryAnswerError("the Deals answer's dr is not a list")
    values = [e.get("asin") if isinstance(e, Mapping) else None for e in entries]
    asins, dropped = _asins(values, "Deals")
    drops = {}
    for entry in entries:
        drop = _price_drop(entry, price_type, date_range) if isinstance(entry, Mapping) else None
        if drop is not None and entry.get("asin") in asins:
            drops.setdefault(entry["asin"], drop)
    return Found(asins, dropped, drops=drops)


def _price_drop(entry: Mapping[str, Any], price_type: int, date_range: int) -> PriceDrop | None:
    """``delta[dateRange][priceType]`` and ``creationDate`` of one deal, or None where Keepa's
    fields are missing, not numbers or no drop (the ASIN is still found, with no weight)."""
    created = entry.get("creationDate")
    delta = entry.get("delta")
    try:
        value = delta[date_range][price_type]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (created, value)):
        return None
    if value <= 0:  # -1: Keepa has no data for it; 0 or less: no drop
        return None
    return PriceDrop(keepa_minutes_to_ms(created), value)


def parse_best_sellers(body: Mapping[str, Any]) -> Found:
    listing = body.get("bestSellersList")
    if listing is None:
        return Found(())  # Keepa has no list for the category
    if not isinstance(listing, Mapping):
        raise DiscoveryAnswerError("the Best Sellers answer's bestSellersList is not an object")
    return Found(*_asins(listing.get("asinList") or [], "Best Sellers"))
