"""Discovery as assets: one per source of config/discovery.toml (ARBITRAGE_DISCOVERY_FILE), each
on its own schedule and tagged so one source never runs twice at once, plus the seller's own
list; all of them feed the registry of tracked ASINs (Elasticsearch ``tracked-asins``), shown as
the asset they lead to. The work is arbitrage/clients/discovery.py's; here only the wiring."""

import time
from datetime import UTC, datetime

import dagster as dg

from arbitrage.accounts import elasticsearch_as
from arbitrage.clients.discovery import run_source
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.keepa_ledger import ledger
from arbitrage.clients.keepa_sources import KeepaHttpClient
from arbitrage.clients.tracked_asins import record_own_list, tracked_count
from arbitrage.domain import topics
from arbitrage.domain.access import KEEPA_PULL
from arbitrage.domain.discovery_config import OWN_LIST, DiscoveryConfig, DiscoverySource
from assets.keys import index_asset_key
from resources.elasticsearch import ElasticsearchResource
from resources.keepa import KeepaResource

GROUP_DISCOVERY = "discovery"
SOURCE_TAG = "arbitrage/discovery_source"
REGISTRY_KEY = index_asset_key(topics.TRACKED_ASINS_INDEX)


def source_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["keepa", "discovery", name.replace("-", "_")])


def _keepa_api(keepa: KeepaResource, context: dg.AssetExecutionContext) -> KeepaHttpClient:
    client = keepa.client(context.log)
    if not isinstance(client, KeepaHttpClient):
        raise dg.Failure(
            "discovery asks Keepa's API (Product Finder, Deals, Best Sellers), which the "
            "bundled sample does not have: set KEEPA_SOURCE=api (with KEEPA_API_KEY), e.g. "
            "the local Keepa simulator (KEEPA_SIM=1 make services-up, docs/keepa-simulator.md)"
        )
    return client


def _source_asset(source: DiscoverySource) -> dg.AssetsDefinition:
    @dg.asset(
        key=source_key(source.name),
        group_name=GROUP_DISCOVERY,
        kinds={"keepa"},
        description=source.why or f"{source.kind} in {source.market}",
        metadata={
            "kind": source.kind,
            "market": source.market,
            "schedule": source.schedule,
            "max_age_hours": source.max_age_hours,
            "most_tokens_per_run": source.most_tokens,
        },
    )
    def _discover(
        context: dg.AssetExecutionContext,
        keepa: KeepaResource,
        elasticsearch: ElasticsearchResource,
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        es = elasticsearch_as(elasticsearch.get_client(), KEEPA_PULL)
        client = _keepa_api(keepa, context)
        with ledger(es, context.run.run_id, f"discovery:{source.name}") as book:
            client.observer = book.record
            run = run_source(client, es, source)
        context.log.info(
            f"{source.name}: {len(run.asins)} ASINs in {run.pages} page(s) for "
            f"{run.tokens_consumed} tokens; {run.registry_written} findings written"
        )
        _observe_registry(context, es, run.at_ms, source.name, len(run.asins))
        return dg.MaterializeResult(
            metadata={
                "asins_found": dg.MetadataValue.int(len(run.asins)),
                "pages": dg.MetadataValue.int(run.pages),
                "tokens_consumed": dg.MetadataValue.int(run.tokens_consumed),
                "not_asins_dropped": dg.MetadataValue.int(run.dropped),
                "total_results": dg.MetadataValue.int(run.total_results or 0),
                "keepa_time": datetime.fromtimestamp(run.at_ms / 1000, UTC).isoformat()
                if run.at_ms
                else "",
                "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
            }
        )

    return _discover


@dg.asset(
    key=source_key(OWN_LIST),
    group_name=GROUP_DISCOVERY,
    kinds={"keepa"},
    description="The seller's own list (KEEPA_ASINS_FILE): tracked while on the list.",
)
def own_list(
    context: dg.AssetExecutionContext,
    keepa: KeepaResource,
    elasticsearch: ElasticsearchResource,
) -> dg.MaterializeResult:
    asins, problems = keepa.tracked_asins()
    for problem in problems[:20]:
        context.log.warning(f"{keepa.asins_path()}: {problem} (skipped)")
    client = keepa.client(context.log)
    # Keepa's clock when there is one (the API's /token is free); the sample has none.
    at_ms = (
        client.token_status().timestamp_ms if isinstance(client, KeepaHttpClient) else None
    ) or int(time.time() * 1000)
    es = elasticsearch_as(elasticsearch.get_client(), KEEPA_PULL)
    record_own_list(es, asins, at_ms)
    _observe_registry(context, es, at_ms, OWN_LIST, len(asins))
    return dg.MaterializeResult(
        metadata={
            "asins": dg.MetadataValue.int(len(asins)),
            "lines_skipped": dg.MetadataValue.int(len(problems)),
        }
    )


def _observe_registry(
    context: dg.AssetExecutionContext,
    es: ElasticsearchClient,
    at_ms: int,
    source: str,
    found: int,
) -> None:
    """The registry's size after a source wrote to it, on the registry's asset."""
    context.log_event(
        dg.AssetObservation(
            asset_key=REGISTRY_KEY,
            metadata={
                "source": source,
                "found_by_source": dg.MetadataValue.int(found),
                "tracked": dg.MetadataValue.int(tracked_count(es, at_ms) if at_ms else 0),
            },
        )
    )


def build_discovery(
    config: DiscoveryConfig, own_list_cron: str, default_status: dg.DefaultScheduleStatus
) -> tuple[list[dg.AssetsDefinition | dg.AssetSpec], list, list[dg.ScheduleDefinition]]:
    """Assets (each source, the own list, the registry), their jobs and schedules (the own
    list's on ``own_list_cron``: KEEPA_OWN_LIST_CRON)."""
    source_assets = [_source_asset(source) for source in config.sources]
    registry = dg.AssetSpec(
        REGISTRY_KEY,
        deps=[source_key(s.name) for s in config.sources] + [source_key(OWN_LIST)],
        group_name=GROUP_DISCOVERY,
        kinds={"elasticsearch"},
        description="The registry of tracked ASINs: one document per (ASIN, source that found "
        "it), with when and why; an ASIN no source finds again ages out.",
        metadata={"index": topics.TRACKED_ASINS_INDEX},
    )
    jobs = []
    schedules = []
    for source, asset in zip([*config.sources, None], [*source_assets, own_list], strict=True):
        name = OWN_LIST if source is None else source.name
        job = dg.define_asset_job(
            f"discover_{name.replace('-', '_')}",
            selection=dg.AssetSelection.assets(asset),
            tags={SOURCE_TAG: name},
            description=f"Discovery: {name}",
        )
        jobs.append(job)
        schedules.append(
            dg.ScheduleDefinition(
                name=f"discover_{name.replace('-', '_')}_schedule",
                job=job,
                cron_schedule=own_list_cron if source is None else source.schedule,
                execution_timezone="UTC",
                default_status=default_status,
            )
        )
    return [*source_assets, own_list, registry], jobs, schedules
