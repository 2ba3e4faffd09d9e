"""What the token planner (arbitrage/domain/token_plan.py) plans from, read from the services:
the registry's tracked ASINs, each one's last refresh (the ``products`` index: the pull time of
its newest enriched update), its open opportunities (``arbitrage-alerts``), the newest price
drop a deal source reported (the registry), and when each discovery source is due (its cron).
Keepa's own time and balance come from ``/token``. ``plan_now`` is one planner run's decision
(the planned pull, assets/keepa_pull.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.keepa_ledger import REFRESH_PURPOSE, recent_refreshes
from arbitrage.clients.keepa_sources import KeepaHttpClient
from arbitrage.clients.tracked_asins import tracked
from arbitrage.domain import cron
from arbitrage.domain.discovery_config import DiscoveryConfig
from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.money import convert_to_eur_cents
from arbitrage.domain.token_plan import (
    MINUTE_MS,
    Candidate,
    CandidateTable,
    DueDiscovery,
    MinutePlan,
    PlanConfig,
    plan_minute,
    profile,
)
from arbitrage.domain.topics import ALERTS_INDEX, PRODUCTS_INDEX

RECENT_MS = 3_600_000


def _open_profit(es: ElasticsearchClient, page: int = 10_000) -> dict[str, int]:
    """The best open opportunity's profit per ASIN, every ASIN (a composite aggregation paged
    by its after key: a terms aggregation would stop at its size)."""
    profit: dict[str, int] = {}
    after: dict[str, Any] | None = None
    while True:
        composite: dict[str, Any] = {
            "size": page,
            "sources": [{"asin": {"terms": {"field": "asin"}}}],
        }
        if after is not None:
            composite["after"] = after
        answer = (
            es.client()
            .options(ignore_status=404)
            .search(
                index=ALERTS_INDEX,
                size=0,
                query={"term": {"status": "open"}},
                aggs={
                    "asins": {
                        "composite": composite,
                        "aggs": {"best": {"max": {"field": "profit_eur_cents"}}},
                    }
                },
            )
        )
        asins = answer.get("aggregations", {}).get("asins", {})
        for bucket in asins.get("buckets", []):
            profit[bucket["key"]["asin"]] = int(bucket["best"]["value"] or 0)
        after = asins.get("after_key")
        if after is None or len(asins.get("buckets", [])) < page:
            return profit


def _newest_drop(finding_by_source: dict[str, dict], fees: FeeConfig) -> tuple[int | None, int]:
    """The newest price drop any deal source reported for an ASIN, in EUR cents."""
    best: tuple[int | None, int] = (None, 0)
    for finding in finding_by_source.values():
        since = finding.get("deal_ms")
        if since is None or (best[0] is not None and since <= best[0]):
            continue
        currency = MARKETPLACES[finding["market"]].currency
        best = (since, convert_to_eur_cents(finding["deal_drop_minor"], fees.fx(currency)))
    return best


# What ``token_plan.profile`` reads of a product, and its last refresh.
_PROFILE_FIELDS = [
    "source_timestamp_ms",
    "spread_eur_cents",
    "cheapest_market",
    "markets.*.buy_price_eur_cents",
    "markets.*.buy_box",
    "markets.*.new",
    "markets.*.signals.sales_rank_drops30",
    "markets.*.signals.buy_box_avg30",
    "markets.*.signals.new_avg30",
]


def candidates(
    es: ElasticsearchClient, now_ms: int, fees: FeeConfig, config: PlanConfig
) -> CandidateTable:
    """Every ASIN tracked at ``now_ms`` (Keepa's time), with what the planner weighs: its last
    refresh, its best open opportunity, the newest price drop a deal reported, and what its
    product says (``token_plan.profile``: sales, volatility, a near miss)."""
    found = tracked(es, now_ms)
    asins = [t.asin for t in found]
    products = es.sources_by_id(PRODUCTS_INDEX, asins, _PROFILE_FIELDS)
    refreshed = {
        asin: doc["source_timestamp_ms"]
        for asin, doc in products.items()
        if "source_timestamp_ms" in doc
    }
    # The products index learns of a refresh once enrichment has run; the ledger's own record
    # of the last hour's refreshes fills the gap, so a lagging stage never makes the planner
    # buy the same refresh twice.
    for asin, at in recent_refreshes(es, now_ms - RECENT_MS, REFRESH_PURPOSE).items():
        refreshed[asin] = max(refreshed.get(asin, at), at)
    profit = _open_profit(es)
    rows = []
    for t in found:
        deal_ms, drop = _newest_drop(t.sources, fees)
        read = profile(products.get(t.asin, {}))
        open_profit = profit.get(t.asin, 0)
        # A long field comes back from JSON as an int; None: never refreshed.
        rows.append(
            Candidate(
                t.asin,
                refreshed.get(t.asin),
                open_profit_eur_cents=open_profit,
                near_miss=not open_profit and read.margin >= config.near_miss_margin,
                volatility=read.volatility,
                monthly_sold=read.monthly_sold,
                deal_ms=deal_ms,
                deal_drop_eur_cents=drop,
            )
        )
    return CandidateTable.of(rows)


def due_by_minute(
    config: DiscoveryConfig, now_ms: int, minutes: int = 60
) -> list[list[DueDiscovery]]:
    """For each minute from ``now_ms``: the discovery sources whose schedule fires in it."""
    due: list[list[DueDiscovery]] = [[] for _ in range(minutes)]
    for source in config.sources:
        for at in cron.fires(source.schedule, now_ms, minutes):
            due[(at - now_ms) // MINUTE_MS].append(
                DueDiscovery(source.name, source.market, source.most_tokens)
            )
    return due


@dataclass(frozen=True)
class PlannedMinute:
    """One planner run's decision, with what it was decided from (the pull's metadata)."""

    plan: MinutePlan
    config: PlanConfig
    tokens_left: int
    refill_rate: int
    tracked: int


def plan_now(
    client: KeepaHttpClient,
    es: ElasticsearchClient,
    config: PlanConfig,
    fees: FeeConfig,
    discovery: DiscoveryConfig,
) -> PlannedMinute:
    """What this minute's tokens buy: Keepa's balance and time (``/token``, free), the
    registry's candidates, and the discovery runs due in this minute (their tokens are held
    back for them; they run on their own schedules)."""
    status = client.token_status()
    if status.timestamp_ms is None or status.tokens_left is None or status.refill_rate is None:
        raise ValueError("Keepa's /token answer lacked its time or balance; nothing planned")
    now = status.timestamp_ms
    table = candidates(es, now, fees, config)
    due = due_by_minute(discovery, now, 1)[0]
    plan = plan_minute(now, status.tokens_left, table, due, config)
    return PlannedMinute(plan, config, status.tokens_left, status.refill_rate, len(table))
