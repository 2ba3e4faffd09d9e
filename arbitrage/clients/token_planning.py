"""What the token planner (arbitrage/domain/token_plan.py) plans from, read from the services:
the registry's tracked ASINs, each one's last refresh (the ``products`` index: the pull time of
its newest enriched update), its open opportunities (``arbitrage-alerts``), and when each
discovery source is due (its cron). Keepa's own time and balance come from ``/token``."""

from __future__ import annotations

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.tracked_asins import tracked
from arbitrage.domain import cron
from arbitrage.domain.discovery_config import DiscoveryConfig
from arbitrage.domain.token_plan import MINUTE_MS, Candidate, DueDiscovery
from arbitrage.domain.topics import ALERTS_INDEX, PRODUCTS_INDEX


def _open_profit(es: ElasticsearchClient) -> dict[str, int]:
    """The best open opportunity's profit per ASIN."""
    answer = (
        es.client()
        .options(ignore_status=404)
        .search(
            index=ALERTS_INDEX,
            size=0,
            query={"term": {"status": "open"}},
            aggs={
                "asins": {
                    "terms": {"field": "asin", "size": 65_000},
                    "aggs": {"best": {"max": {"field": "profit_eur_cents"}}},
                }
            },
        )
    )
    buckets = answer.get("aggregations", {}).get("asins", {}).get("buckets", [])
    return {b["key"]: int(b["best"]["value"] or 0) for b in buckets}


def candidates(es: ElasticsearchClient, now_ms: int) -> list[Candidate]:
    """Every ASIN tracked at ``now_ms`` (Keepa's time), with what the planner weighs."""
    asins = [t.asin for t in tracked(es, now_ms)]
    refreshed = es.field_by_id(PRODUCTS_INDEX, asins, "source_timestamp_ms")
    profit = _open_profit(es)
    # A long field comes back from JSON as an int; None: never refreshed.
    return [Candidate(a, refreshed.get(a), open_profit_eur_cents=profit.get(a, 0)) for a in asins]


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
