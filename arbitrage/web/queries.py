"""What the opportunities page reads from Elasticsearch: the alerts, the products' current prices
and categories, and the price observations. Query bodies are built by pure functions (tested
without a cluster); the functions taking the resource run them.

The alerts index holds each opportunity's current state (arbitrage/domain/lifecycle.py): the page
lists the open ones, and the closed ones with their reason on request. Documents from before
the lifecycle have no opportunity id and are not shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from elasticsearch import NotFoundError

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.domain import topics
from arbitrage.domain.lifecycle import is_open
from arbitrage.domain.markets import MARKETPLACES

# The page reads at most this many alerts matching its filters, best first (open ones are
# picked from them); more is a query to narrow, not a page to scroll.
MAX_ALERTS = 1000
# Price observations drawn per ASIN: one per pull (plus one per change in Keepa's history when
# the pulls asked for it, KEEPA_HISTORY_DAYS), ~2 years of 15-minute pulls would be far more;
# the newest are kept.
MAX_OBSERVATIONS = 5000
# Products per category looked up for the category filter.
MAX_CATEGORY_PRODUCTS = 10_000

SORTS: dict[str, str] = {
    "profit": "profit_eur_cents",
    "roi": "roi",
    "sales": "signals.monthly_sales",
    "detected": "detected_at",
}


class FilterError(ValueError):
    """A query parameter the page cannot use; the text says which and why."""


@dataclass(frozen=True)
class AlertFilters:
    buy_market: str = ""
    sell_market: str = ""
    min_profit_eur_cents: int | None = None
    min_roi: Decimal | None = None  # a ratio: 0.25 = 25 %
    category: str = ""
    min_monthly_sales: int | None = None
    sort: str = "profit"
    descending: bool = True
    include_moved: bool = False

    def query_string(self, **changes: Any) -> str:
        """These filters (with ``changes``) as the page's query string."""
        shown = replace(self, **changes)
        params: dict[str, str] = {}
        if shown.buy_market:
            params["buy"] = shown.buy_market
        if shown.sell_market:
            params["sell"] = shown.sell_market
        if shown.min_profit_eur_cents is not None:
            params["min_profit"] = f"{Decimal(shown.min_profit_eur_cents) / 100}"
        if shown.min_roi is not None:
            params["min_roi"] = f"{(shown.min_roi * 100).normalize():f}"
        if shown.category:
            params["category"] = shown.category
        if shown.min_monthly_sales is not None:
            params["min_sales"] = str(shown.min_monthly_sales)
        params["sort"] = shown.sort
        params["order"] = "desc" if shown.descending else "asc"
        if shown.include_moved:
            params["moved"] = "1"
        return urlencode(params)


def _market(params: Mapping[str, str], name: str) -> str:
    code = params.get(name, "").strip().upper()
    if code and code not in MARKETPLACES:
        raise FilterError(f"{name}={code[:8]!r} is not a marketplace ({', '.join(MARKETPLACES)})")
    return code


def _decimal(params: Mapping[str, str], name: str) -> Decimal | None:
    text = params.get(name, "").strip().replace(",", ".")
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise FilterError(f"{name}={text[:20]!r} is not a number") from None
    if not value.is_finite() or abs(value) > 10**7:
        raise FilterError(f"{name}={text[:20]!r} is out of range")
    return value


def parse_filters(params: Mapping[str, str]) -> AlertFilters:
    """The list page's query string: ``buy``, ``sell`` (market codes), ``min_profit`` (EUR),
    ``min_roi`` (percent), ``category``, ``min_sales`` (a month), ``sort``, ``order``,
    ``moved`` (1: also alerts whose prices have moved since)."""
    profit = _decimal(params, "min_profit")
    roi = _decimal(params, "min_roi")
    sales = _decimal(params, "min_sales")
    sort = params.get("sort", "profit").strip() or "profit"
    if sort not in SORTS:
        raise FilterError(f"sort={sort[:20]!r}: sort by one of {', '.join(SORTS)}")
    order = params.get("order", "desc").strip() or "desc"
    if order not in ("asc", "desc"):
        raise FilterError(f"order={order[:8]!r}: use asc or desc")
    return AlertFilters(
        buy_market=_market(params, "buy"),
        sell_market=_market(params, "sell"),
        min_profit_eur_cents=None if profit is None else int(profit * 100),
        min_roi=None if roi is None else roi / 100,
        category=params.get("category", "").strip()[:200],
        min_monthly_sales=None if sales is None else int(sales),
        sort=sort,
        descending=order == "desc",
        include_moved=params.get("moved", "") in ("1", "on", "true"),
    )


def alerts_search(filters: AlertFilters, asins: Sequence[str] | None = None) -> dict[str, Any]:
    """The alerts search for ``filters``; ``asins``: only these (the category's products)."""
    # Opportunities of the lifecycle only (documents from before it have no opportunity id).
    clauses: list[dict[str, Any]] = [{"exists": {"field": "opportunity_id"}}]
    if filters.buy_market:
        clauses.append({"term": {"buy_market": filters.buy_market}})
    if filters.sell_market:
        clauses.append({"term": {"sell_market": filters.sell_market}})
    if filters.min_profit_eur_cents is not None:
        clauses.append({"range": {"profit_eur_cents": {"gte": filters.min_profit_eur_cents}}})
    if filters.min_roi is not None:
        clauses.append({"range": {"roi": {"gte": float(filters.min_roi)}}})
    if filters.min_monthly_sales is not None:
        clauses.append({"range": {"signals.monthly_sales": {"gte": filters.min_monthly_sales}}})
    if asins is not None:
        clauses.append({"terms": {"asin": list(asins)}})
    order = "desc" if filters.descending else "asc"
    return {
        "query": {"bool": {"filter": clauses}},
        "sort": [
            {SORTS[filters.sort]: {"order": order, "missing": "_last"}},
            {"profit_eur_cents": {"order": "desc"}},
            {"alert_id": {"order": "asc"}},
        ],
        "size": MAX_ALERTS,
        "track_total_hits": True,
    }


@dataclass
class Opportunity:
    alert: dict[str, Any]
    category: str | None
    open: bool
    # The discovery sources that found its ASIN (the registry): (source, kind), by name.
    found_by: tuple[tuple[str, str], ...] = ()


@dataclass
class OpportunityList:
    rows: list[Opportunity]
    matched: int  # alerts matching the filters, open or not
    open: int
    newest_detected_at: str | None = None
    categories: list[str] = field(default_factory=list)


_PRODUCT_FIELDS = [
    "asin",
    "title",
    "category.name",
    "source_timestamp",
    *(f"markets.{code}.{name}" for code in MARKETPLACES for name in ("buy_price", "sell_price")),
]


def products_by_asin(es: ElasticsearchClient, asins: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not asins:
        return {}
    found = es.client().mget(
        index=topics.PRODUCTS_INDEX, ids=list(dict.fromkeys(asins)), source_includes=_PRODUCT_FIELDS
    )
    return {doc["_id"]: doc["_source"] for doc in found["docs"] if doc.get("found")}


def sources_by_asin(
    es: ElasticsearchClient, asins: Sequence[str]
) -> dict[str, tuple[tuple[str, str], ...]]:
    """The discovery sources that found each ASIN (the registry of tracked ASINs; none before
    discovery has run)."""
    if not asins:
        return {}
    found = (
        es.client()
        .options(ignore_status=404)
        .search(
            index=topics.TRACKED_ASINS_INDEX,
            size=10_000,
            query={"terms": {"asin": sorted(set(asins))}},
            source=["asin", "source", "kind"],
        )
    )
    by_asin: dict[str, set[tuple[str, str]]] = {}
    for hit in found.get("hits", {}).get("hits", []):
        doc = hit["_source"]
        by_asin.setdefault(doc["asin"], set()).add((doc["source"], doc["kind"]))
    return {asin: tuple(sorted(pairs)) for asin, pairs in by_asin.items()}


def category_asins(es: ElasticsearchClient, category: str) -> list[str]:
    found = es.client().search(
        index=topics.PRODUCTS_INDEX,
        query={"term": {"category.name": category}},
        size=MAX_CATEGORY_PRODUCTS,
        source=False,
    )
    return [hit["_id"] for hit in found["hits"]["hits"]]


def categories(es: ElasticsearchClient) -> list[str]:
    """Category names of the products that have alerts (for the filter's choices)."""
    asins = es.client().search(
        index=topics.ALERTS_INDEX,
        size=0,
        aggs={"asins": {"terms": {"field": "asin", "size": MAX_CATEGORY_PRODUCTS}}},
    )["aggregations"]["asins"]["buckets"]
    found = es.client().search(
        index=topics.PRODUCTS_INDEX,
        size=0,
        query={"ids": {"values": [bucket["key"] for bucket in asins]}},
        aggs={"names": {"terms": {"field": "category.name", "size": 500}}},
    )
    return sorted(bucket["key"] for bucket in found["aggregations"]["names"]["buckets"])


def list_opportunities(es: ElasticsearchClient, filters: AlertFilters) -> OpportunityList:
    """The alerts matching ``filters``, each with its product's category and open state; only
    the open ones unless ``filters.include_moved``."""
    asins = category_asins(es, filters.category) if filters.category else None
    found = es.client().search(index=topics.ALERTS_INDEX, **alerts_search(filters, asins))
    alerts = [hit["_source"] for hit in found["hits"]["hits"]]
    products = products_by_asin(es, [alert["asin"] for alert in alerts])
    found_by = sources_by_asin(es, [alert["asin"] for alert in alerts])
    rows = []
    for alert in alerts:
        product = products.get(alert["asin"])
        category = ((product or {}).get("category") or {}).get("name")
        rows.append(Opportunity(alert, category, is_open(alert), found_by.get(alert["asin"], ())))
    open_count = sum(1 for row in rows if row.open)
    shown = rows if filters.include_moved else [row for row in rows if row.open]
    newest = max((row.alert["detected_at"] for row in rows), default=None)
    return OpportunityList(shown, int(found["hits"]["total"]["value"]), open_count, newest)


def alerts_state(es: ElasticsearchClient) -> dict[str, Any]:
    """What the list page polls: the number of alerts and the newest detection time. Any new
    alert changes it; the page then fetches its rows again."""
    found = es.client().search(
        index=topics.ALERTS_INDEX,
        size=0,
        track_total_hits=True,
        aggs={"newest": {"max": {"field": "detected_at"}}},
    )
    newest = found["aggregations"]["newest"]
    return {
        "alerts": int(found["hits"]["total"]["value"]),
        "newest_detected_at": newest.get("value_as_string"),
    }


@dataclass
class ProductDetail:
    asin: str
    product: dict[str, Any] | None
    routes: list[Opportunity]
    # market → [(observed_at ms, buy EUR cents, sell EUR cents)], oldest first
    history: dict[str, list[tuple[int, int | None, int | None]]]


_HISTORY_PRICES = ["buy_price_eur_cents", "sell_price_eur_cents"]


def history_search(asin: str) -> dict[str, Any]:
    return {
        "query": {"term": {"asin": asin}},
        "sort": [{"observed_at": {"order": "desc"}}],
        "size": MAX_OBSERVATIONS,
        "source": [
            "observed_at",
            "markets",
            "market",
            "buy_price_eur_cents",
            "sell_price_eur_cents",
        ],
    }


def price_history(
    es: ElasticsearchClient, asin: str
) -> dict[str, list[tuple[int, int | None, int | None]]]:
    """market → [(observed_at ms, buy EUR cents, sell EUR cents)], oldest first."""
    found = es.client().search(index=topics.PRICE_OBSERVATIONS_INDEX, **history_search(asin))
    history: dict[str, list[tuple[int, int | None, int | None]]] = {}
    for hit in reversed(found["hits"]["hits"]):
        source = hit["_source"]
        at = int(source["observed_at"])
        # One document per pull with every market; before 2026-11-29, one per market.
        markets = source.get("markets") or {source["market"]: source}
        for code, prices in sorted(markets.items()):
            point = (at, prices.get("buy_price_eur_cents"), prices.get("sell_price_eur_cents"))
            history.setdefault(code, []).append(point)
    return history


def product_detail(es: ElasticsearchClient, asin: str) -> ProductDetail:
    product: dict[str, Any] | None
    try:
        product = es.client().get(index=topics.PRODUCTS_INDEX, id=asin)["_source"]
    except NotFoundError:  # alerts of a product no longer indexed (after a reset)
        product = None
    found = es.client().search(
        index=topics.ALERTS_INDEX,
        query={"bool": {"filter": [{"term": {"asin": asin}}, {"exists": {"field": "status"}}]}},
        sort=[{"profit_eur_cents": "desc"}, {"alert_id": "asc"}],
        size=200,
    )
    category = ((product or {}).get("category") or {}).get("name")
    routes = [
        Opportunity(hit["_source"], category, is_open(hit["_source"]))
        for hit in found["hits"]["hits"]
    ]
    routes.sort(key=lambda row: not row.open)  # open first, each part best profit first
    return ProductDetail(asin, product, routes, price_history(es, asin))
