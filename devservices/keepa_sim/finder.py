"""Keepa's discovery requests over the simulated market: Product Finder (``/query``), Deals
(``/deal``) and Best Sellers (``/bestsellers``), with their documented paging and limits.

A selection field the simulator does not implement is refused with a sentence, never ignored:
a selection that silently matched more than asked would make a measurement wrong.

The limits and costs here are written again from Keepa's documentation, not imported from the
client (arbitrage/domain/keepa_discovery.py): a client that misread them would otherwise agree
with its own simulator, and no test could catch it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from devservices.keepa_sim.catalog import Catalog
from devservices.keepa_sim.market import MarketState, state_at
from devservices.keepa_sim.products import keepa_minute
from tools.sample_catalog import CATEGORIES

# Product Finder: 50 to 10 000 ASINs a page, and no further than the 10 000th result.
MIN_PER_PAGE = 50
MAX_RESULTS = 10_000
# Deals: at most 150 per page (Keepa's DealRequest documentation).
DEALS_PER_PAGE = 150
# Best Sellers: the top of the category by sales rank.
BEST_SELLERS_LENGTH = 500
# Keepa's deal dateRange: 0 = the last day, 1 = week, 2 = month, 3 = 90 days (in minutes).
DEAL_DATE_RANGE_MIN = {0: 1_440, 1: 10_080, 2: 43_200, 3: 129_600}
# priceTypes of a deal request → the csv index whose price changed (AMAZON, NEW, BUY_BOX).
DEAL_PRICE_TYPES = {0: "amazon", 1: "new", 18: "buy_box"}
# A deal's current, delta, deltaPercent and avg are indexed by Keepa's CsvType (0 AMAZON ...
# 18 BUY_BOX_SHIPPING ...); the simulator fills the asked type and gives -1 (no data) elsewhere.
DEAL_CSV_TYPES = 36


class SelectionError(ValueError):
    """A selection the simulator cannot answer exactly (→ HTTP 400 with the reason)."""


# Finder fields: (state or catalog attribute, whether it is per market).
_RANGES: dict[str, str] = {
    "current_AMAZON": "amazon",
    "current_NEW": "new",
    "current_BUY_BOX_SHIPPING": "buy_box",
    "current_SALES": "rank",
    "monthlySold": "monthly_sold",
}
_SORTABLE = {**_RANGES}
_PAGING = {"page", "perPage", "sort"}


@dataclass(frozen=True)
class FinderAnswer:
    asins: list[str]
    total_results: int


def _column(state: MarketState, catalog: Catalog, name: str) -> npt.NDArray[np.int64]:
    if name == "monthly_sold":
        return catalog.monthly_sold[state.indexes]
    values = state.new if name == "new" else getattr(state, name)
    return np.asarray(values)[:, 0]


def _int(selection: Mapping[str, Any], key: str) -> int:
    value = selection[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SelectionError(f"{key} must be an integer, got {value!r}")
    return value


def product_finder(
    catalog: Catalog, market: str, minute: float, selection: Mapping[str, Any]
) -> FinderAnswer:
    """The ASINs matching ``selection`` now in ``market``, sorted and paged as Keepa does."""
    if not isinstance(selection, Mapping):
        raise SelectionError("the selection must be a JSON object")
    known = {f"{name}_{end}" for name in _RANGES for end in ("gte", "lte")}
    known |= _PAGING | {"rootCategory"}
    unknown = sorted(set(selection) - known)
    if unknown:
        raise SelectionError(
            f"the simulator does not implement the selection field(s) {', '.join(unknown)}; "
            f"it knows {', '.join(sorted(known))}"
        )
    per_page = _int(selection, "perPage") if "perPage" in selection else MIN_PER_PAGE
    page = _int(selection, "page") if "page" in selection else 0
    if per_page < MIN_PER_PAGE or page < 0 or (page + 1) * per_page > MAX_RESULTS:
        raise SelectionError(
            f"perPage must be ≥ {MIN_PER_PAGE} and (page + 1) × perPage ≤ {MAX_RESULTS}; "
            f"got page {page}, perPage {per_page}"
        )
    candidates = np.arange(catalog.size, dtype=np.int64)
    roots = selection.get("rootCategory")
    if roots is not None:
        wanted = set(roots if isinstance(roots, list) else [roots])
        in_root = np.array([c.roots[market][0] in wanted for c in CATEGORIES])
        candidates = candidates[in_root[catalog.category]]
    state = state_at(catalog, candidates, minute, (market,))
    keep = state.listed[:, 0].copy()
    for name, attribute in _RANGES.items():
        values = None
        for end, compare in (("gte", np.greater_equal), ("lte", np.less_equal)):
            key = f"{name}_{end}"
            if key in selection:
                values = _column(state, catalog, attribute) if values is None else values
                keep &= compare(values, _int(selection, key)) & (values >= 0)
    matched = candidates[keep]
    order = np.arange(len(matched))
    sort = selection.get("sort") or []
    if sort:
        field, direction = _sort_key(sort)
        values = _column(state, catalog, _SORTABLE[field])[keep]
        order = np.argsort(-values if direction == "desc" else values, kind="stable")
    page_rows = order[page * per_page : (page + 1) * per_page]
    return FinderAnswer(catalog.asins(matched[page_rows]), len(matched))


def _sort_key(sort: Any) -> tuple[str, str]:
    if (
        not isinstance(sort, list)
        or len(sort) != 1
        or not isinstance(sort[0], list)
        or len(sort[0]) != 2
        or sort[0][0] not in _SORTABLE
        or sort[0][1] not in ("asc", "desc")
    ):
        raise SelectionError(
            f'sort must be [[<field>, "asc"|"desc"]] with one of {", ".join(_SORTABLE)}; '
            f"got {sort!r}"
        )
    return sort[0][0], sort[0][1]


def finder_cost(returned: int) -> int:
    """10 tokens, plus 1 per 100 ASINs returned (a part of 100 counts as 100)."""
    return 10 + -(-returned // 100)


def deals(
    catalog: Catalog, market: str, minute: float, request: Mapping[str, Any], start_ms: int
) -> list[dict[str, Any]]:
    """One page of deals: products whose price of one of ``priceTypes`` dropped by a share in
    ``deltaPercentRange`` with the drop within ``dateRange``. The simulator's drops are its
    promotions: the delta is measured against the price the same spell would have without it."""
    known = {
        "page",
        "domainId",
        "priceTypes",
        "deltaPercentRange",
        "dateRange",
        "currentRange",
        "includeCategories",
        "isRangeEnabled",
        "isFilterEnabled",
        "sortType",
    }
    unknown = sorted(set(request) - known)
    if unknown:
        raise SelectionError(
            f"the simulator does not implement the deal field(s) {', '.join(unknown)}"
        )
    page = request.get("page", 0)
    price_types = request.get("priceTypes", [0])
    if not isinstance(price_types, list) or len(price_types) != 1:
        raise SelectionError("priceTypes must name one price type, as Keepa requires")
    price = DEAL_PRICE_TYPES.get(price_types[0])
    if price is None:
        raise SelectionError(
            f"priceTypes {price_types[0]!r}: the simulator knows "
            f"{', '.join(map(str, DEAL_PRICE_TYPES))}"
        )
    low, high = request.get("deltaPercentRange", [0, 100])
    date_range = DEAL_DATE_RANGE_MIN.get(request.get("dateRange", 0))
    if date_range is None:
        raise SelectionError("dateRange must be 0, 1, 2 or 3")
    state = state_at(catalog, np.arange(catalog.size, dtype=np.int64), minute, (market,))
    promoted = state.promotion[:, 0] & (minute - state.spell_start[:, 0] <= date_range)
    rows = np.flatnonzero(promoted)
    current = _column(state, catalog, price)[rows]
    # Without the promotion, the same spell's price is current / depth: the draws are shared.
    usual = _usual_price(catalog, state.indexes[rows], minute, market, price)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta_pct = np.where(usual > 0, np.round((usual - current) * 100 / usual), 0)
    keep = (current > 0) & (delta_pct >= low) & (delta_pct <= high)
    if "currentRange" in request:
        cur_low, cur_high = request["currentRange"]
        keep &= (current >= cur_low) & (current <= cur_high)
    rows, current, usual, delta_pct = rows[keep], current[keep], usual[keep], delta_pct[keep]
    order = _deal_order(
        request.get("sortType", 4),
        newest=state.spell_start[rows, 0],
        delta=usual - current,
        rank=state.rank[rows, 0],
        delta_pct=delta_pct,
    )
    chosen = order[page * DEALS_PER_PAGE : (page + 1) * DEALS_PER_PAGE]
    interval = request.get("dateRange", 0)
    return [
        {
            "asin": catalog.asin(int(state.indexes[rows[i]])),
            "title": catalog.title(int(state.indexes[rows[i]])),
            "rootCat": catalog.root_category(int(state.indexes[rows[i]]), market),
            "current": _by_csv_type(price_types[0], int(current[i])),
            "delta": _by_interval(interval, price_types[0], int(usual[i] - current[i])),
            "deltaPercent": _by_interval(interval, price_types[0], int(delta_pct[i])),
            "avg": _by_interval(interval, price_types[0], int(usual[i])),
            # The drop began with the promotion's spell (Keepa minutes, as Keepa gives them).
            "creationDate": keepa_minute(start_ms + float(state.spell_start[rows[i], 0]) * 60_000),
            "lastUpdate": keepa_minute(start_ms + minute * 60_000),
        }
        for i in chosen
    ]


def _by_csv_type(csv_type: int, value: int) -> list[int]:
    """Keepa's deal arrays are indexed by CsvType; the simulator knows the asked type only."""
    values = [-1] * DEAL_CSV_TYPES
    values[csv_type] = value
    return values


def _by_interval(interval: int, csv_type: int, value: int) -> list[list[int]]:
    """[DealInterval (day, week, month, 90 days)][CsvType]: the asked dateRange filled."""
    return [
        _by_csv_type(csv_type, value) if i == interval else [-1] * DEAL_CSV_TYPES
        for i in range(len(DEAL_DATE_RANGE_MIN))
    ]


def _deal_order(
    sort_type: Any,
    *,
    newest: npt.NDArray[np.float64],
    delta: npt.NDArray[np.int64],
    rank: npt.NDArray[np.int64],
    delta_pct: npt.NDArray[np.float64],
) -> npt.NDArray[np.int64]:
    """Keepa's sortType: 1 the newest deal first (not invertible), 2 the highest absolute drop,
    3 the lowest sales rank, 4 the highest percentage drop; negative inverts 2-4. Ties keep the
    catalog's order. Absent: 4 (the reading taken; Keepa's documentation names no default)."""
    if not isinstance(sort_type, int) or isinstance(sort_type, bool):
        raise SelectionError(f"sortType must be an integer, not {sort_type!r}")
    keys = {1: -newest, 2: -delta, 3: rank, 4: -delta_pct}
    if abs(sort_type) not in keys or sort_type == -1:
        raise SelectionError("sortType must be 1, 2, 3 or 4 (2-4 inverted when negative)")
    key = keys[abs(sort_type)]
    return np.argsort(key if sort_type > 0 else -key, kind="stable")


def _usual_price(
    catalog: Catalog,
    indexes: npt.NDArray[np.int64],
    minute: float,
    market: str,
    price: str,
) -> npt.NDArray[np.int64]:
    state = state_at(catalog, indexes, minute, (market,), promotions=False)
    return _column(state, catalog, price)


DEAL_COST = 5  # per page of up to 150 deals
BEST_SELLERS_COST = 50


def best_sellers(catalog: Catalog, market: str, minute: float, category: int) -> list[str]:
    """The category's best sellers now: listed products of that root category, best rank
    first, at most ``BEST_SELLERS_LENGTH``."""
    in_root = np.array([c.roots[market][0] == category for c in CATEGORIES])
    candidates = np.flatnonzero(in_root[catalog.category])
    if not len(candidates):
        return []
    state = state_at(catalog, candidates, minute, (market,))
    rank = np.where(state.rank[:, 0] > 0, state.rank[:, 0], np.iinfo(np.int64).max)
    order = np.argsort(rank, kind="stable")[:BEST_SELLERS_LENGTH]
    order = order[rank[order] < np.iinfo(np.int64).max]
    return catalog.asins(candidates[order])
