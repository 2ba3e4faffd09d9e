"""One run of a discovery source: its Keepa requests, page by page, then what they found into
the registry (arbitrage/clients/tracked_asins.py). Plain Python; the Dagster assets
(assets/discovery.py) and the tests call it alike."""

from __future__ import annotations

from dataclasses import dataclass, field

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.keepa_sources import Discovered, KeepaHttpClient
from arbitrage.clients.tracked_asins import record_found
from arbitrage.domain.discovery_config import DiscoverySource
from arbitrage.domain.keepa_discovery import DEALS_PER_PAGE, PriceDrop


@dataclass
class DiscoveryRun:
    """What one run of a source did: Keepa's answers summed, and the registry's writes."""

    source: str
    asins: list[str] = field(default_factory=list)
    pages: int = 0
    tokens_consumed: int = 0
    dropped: int = 0  # entries of Keepa's answers that were not ASINs
    total_results: int | None = None  # Product Finder: matches of the whole selection
    at_ms: int = 0  # Keepa's clock at the last answer
    registry_written: int = 0
    drops: dict[str, PriceDrop] = field(default_factory=dict)  # deals: each ASIN's newest


def _request(client: KeepaHttpClient, source: DiscoverySource, page: int) -> Discovered:
    if source.kind == "finder":
        return client.product_finder(source.market, source.finder_selection(page))
    if source.kind == "deals":
        return client.deals(source.deal_request(page))
    return client.best_sellers(source.market, source.category)


def _last_page(source: DiscoverySource, returned: int) -> bool:
    if source.kind == "finder":
        return returned < source.per_page
    if source.kind == "deals":
        return returned < DEALS_PER_PAGE
    return True  # one list


def run_source(
    client: KeepaHttpClient, es: ElasticsearchClient, source: DiscoverySource
) -> DiscoveryRun:
    """Request the source's pages (stopping at a short one), then record what was found."""
    run = DiscoveryRun(source.name)
    for page in range(source.pages if source.kind != "best_sellers" else 1):
        answer = _request(client, source, page)
        run.pages += 1
        run.tokens_consumed += answer.tokens.tokens_consumed
        run.dropped += answer.found.dropped
        if answer.found.total_results is not None:
            run.total_results = answer.found.total_results
        if answer.tokens.timestamp_ms is not None:
            run.at_ms = max(run.at_ms, answer.tokens.timestamp_ms)
        run.asins.extend(answer.found.asins)
        for asin, drop in answer.found.drops.items():
            if asin not in run.drops or drop.since_ms > run.drops[asin].since_ms:
                run.drops[asin] = drop
        if _last_page(source, len(answer.found.asins)):
            break
    run.asins = list(dict.fromkeys(run.asins))
    if run.asins:
        if not run.at_ms:
            raise ValueError(
                f"discovery source {source.name}: Keepa's answers carried no timestamp, and "
                "the registry keeps Keepa's time"
            )
        run.registry_written = record_found(es, source, run.asins, run.at_ms, run.drops).written
    return run
