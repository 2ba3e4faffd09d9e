"""The Keepa pull: products from Keepa (or the bundled sample) onto raw.keepa_updates."""

import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from arbitrage.accounts import elasticsearch_as, kafka_as
from arbitrage.clients.keepa_ledger import REFRESH_PURPOSE, ledger
from arbitrage.clients.keepa_pull import PullProgress, PullTotals, iter_pull
from arbitrage.clients.keepa_sources import KeepaHttpClient
from arbitrage.clients.token_planning import PlannedMinute, plan_now
from arbitrage.domain import topics
from arbitrage.domain.access import KEEPA_PULL
from arbitrage.domain.discovery_config import load_discovery_config
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.token_plan import PlanConfig
from arbitrage.settings import Settings
from assets.keys import GROUP_INGEST, KEEPA_PRODUCTS_KEY, RAW_UPDATES_KEY
from resources.elasticsearch import ElasticsearchResource
from resources.kafka import KafkaResource
from resources.keepa import KeepaResource

MAX_REPORTED_LINES = 20

keepa_products = dg.AssetSpec(
    KEEPA_PRODUCTS_KEY,
    description="Product offers on Amazon EU marketplaces, as Keepa's /product API reports them.",
    kinds={"api"},
    group_name=GROUP_INGEST,
    metadata={"url": "https://keepa.com/#!discuss/t/request-products/110"},
)


class KeepaPullConfig(dg.Config):
    max_asins: int | None = Field(
        default=None, description="Pull only the first N ASINs of the list (quick checks)."
    )


def _tokens_table(totals: PullTotals) -> dg.MetadataValue:
    """Per market: ASINs asked, tokens Keepa reported, tokens its documented costs predict."""
    asked = totals.asins_requested
    lines = [
        "| market | ASINs asked | products received | tokens (Keepa) | per ASIN (Keepa) "
        "| tokens (estimated) | per ASIN (estimated) |",
        "|---|---|---|---|---|---|---|",
    ]
    for market, estimated in totals.tokens_estimated_per_market.items():
        consumed = totals.tokens_consumed_per_market.get(market, 0)
        lines.append(
            f"| {market} | {asked} | {totals.per_market_received.get(market, 0)} | {consumed} "
            f"| {_per(consumed, asked)} | {estimated} | {_per(estimated, asked)} |"
        )
    return dg.MetadataValue.md("\n".join(lines))


def _per(tokens: int, asins: int) -> float:
    return round(tokens / asins, 3) if asins else 0.0


def _offsets_table(spans: dict[int, tuple[int, int]]) -> dg.MetadataValue:
    lines = ["| partition | first offset | last offset | messages |", "|---|---|---|---|"]
    lines += [f"| {p} | {low} | {high} | {high - low + 1} |" for p, (low, high) in spans.items()]
    return dg.MetadataValue.md("\n".join(lines))


@dg.asset(
    key=RAW_UPDATES_KEY,
    deps=[KEEPA_PRODUCTS_KEY],
    kinds={"kafka"},
    group_name=GROUP_INGEST,
    metadata={"topic": topics.RAW_UPDATES},
)
def raw_keepa_updates(
    context: dg.AssetExecutionContext,
    config: KeepaPullConfig,
    keepa: KeepaResource,
    kafka: KafkaResource,
    elasticsearch: ElasticsearchResource,
) -> dg.MaterializeResult:
    """One raw update per tracked ASIN per pull on raw.keepa_updates, keyed by ASIN."""
    started = time.perf_counter()
    # Its own account when the environment names one.
    kafka_client = kafka_as(kafka.get_client(), KEEPA_PULL)
    kafka_client.ensure_topics()
    markets = keepa.market_list()
    source = keepa.client(context.log)
    planned: PlannedMinute | None = None
    if keepa.pull_mode == "planner":
        assert isinstance(source, KeepaHttpClient)  # the resource refuses planner + sample
        planned = _plan(context, source, elasticsearch, markets, keepa.reserve_tokens)
        if not planned.plan.refreshes:
            return dg.MaterializeResult(metadata=_plan_metadata(planned))
        asins, problems = [r.asin for r in planned.plan.refreshes], []
    else:
        asins, problems = keepa.tracked_asins()
    # Each problem names its line and a redacted preview; a file that is no ASIN list at all
    # would otherwise flood the run log.
    for problem in problems[:MAX_REPORTED_LINES]:
        context.log.warning(f"{keepa.asins_path()}: {problem} (skipped)")
    if len(problems) > MAX_REPORTED_LINES:
        context.log.warning(
            f"{keepa.asins_path()}: {len(problems) - MAX_REPORTED_LINES} more lines are not "
            "ASINs (skipped)"
        )
    if config.max_asins is not None:
        asins = asins[: config.max_asins]
    if not asins:
        raise dg.Failure(f"no valid ASINs to pull in {keepa.asins_path()}")
    context.log.info(f"pulling {len(asins)} ASINs from {', '.join(markets)} ({keepa.mode} source)")

    def report(progress: PullProgress) -> None:
        if progress.market == markets[-1]:
            context.log.info(
                f"Keepa: {progress.asins_done}/{progress.asins_total} ASINs done, "
                f"{progress.requests_made} requests, tokens left {progress.tokens_left}"
            )

    totals = PullTotals()
    # The planner keeps Keepa's time (its answers' timestamp), so a refresh is dated by it.
    pulled_at = (
        datetime.fromtimestamp(planned.plan.now_ms / 1000, UTC) if planned else datetime.now(UTC)
    )
    with ExitStack() as spending:
        if isinstance(source, KeepaHttpClient):
            # Every answered request into the token ledger, also when the pull fails later.
            es_client = elasticsearch_as(elasticsearch.get_client(), KEEPA_PULL)
            source.observer = spending.enter_context(
                ledger(es_client, context.run.run_id, REFRESH_PURPOSE)
            ).record
        with kafka_client.producer() as producer:
            for update in iter_pull(source, asins, markets, pulled_at, context.log, report, totals):
                producer.produce(topics.RAW_UPDATES, update["asin"], encode(update))
    delivered = producer.report
    spans = delivered.per_partition(topics.RAW_UPDATES)
    seconds = time.perf_counter() - started
    context.log.info(
        f"produced {delivered.delivered} raw updates in {seconds:.1f}s; "
        + ", ".join(f"partition {p}: {hi - lo + 1}" for p, (lo, hi) in spans.items())
    )
    return dg.MaterializeResult(
        metadata={
            "source": keepa.mode,
            "markets": ",".join(markets),
            "asins_requested": dg.MetadataValue.int(totals.asins_requested),
            "asins_skipped_invalid": dg.MetadataValue.int(len(problems)),
            "asins_not_found": dg.MetadataValue.int(len(totals.not_found)),
            "products_received_per_market": dg.MetadataValue.json(totals.per_market_received),
            "messages_produced": dg.MetadataValue.int(delivered.delivered),
            "offsets_written": _offsets_table(spans),
            "keepa_requests": dg.MetadataValue.int(totals.requests_made),
            "tokens_consumed": dg.MetadataValue.int(totals.tokens_consumed),
            "tokens_left": dg.MetadataValue.int(totals.tokens_left or 0),
            # Keepa's documented cost of one ASIN in one market (1 + 2 for buybox=1; stats and
            # history free)
            "tokens_per_asin_per_market": dg.MetadataValue.int(totals.tokens_per_product),
            "tokens_estimated": dg.MetadataValue.int(totals.tokens_estimated),
            "tokens_per_asin": dg.MetadataValue.float(
                _per(totals.tokens_consumed, totals.asins_requested)
            ),
            "tokens_estimated_per_asin": dg.MetadataValue.float(
                _per(totals.tokens_estimated, totals.asins_requested)
            ),
            "tokens_per_market": _tokens_table(totals),
            # Keepa's csv price histories (KEEPA_HISTORY_DAYS; 0 = not asked for, no extra
            # token cost either way): points sent, markets with a history, series dropped.
            "history_days": dg.MetadataValue.int(totals.history_days),
            "history_points": dg.MetadataValue.int(totals.history.points),
            "history_markets": dg.MetadataValue.int(totals.history.markets),
            "history_points_truncated": dg.MetadataValue.int(totals.history.truncated),
            "history_series_dropped": dg.MetadataValue.json(dict(totals.history.dropped)),
            "duration_s": dg.MetadataValue.float(round(seconds, 3)),
            **(_plan_metadata(planned) if planned else {"pull_mode": "list"}),
        }
    )


def _plan(
    context: dg.AssetExecutionContext,
    client: KeepaHttpClient,
    elasticsearch: ElasticsearchResource,
    markets: tuple[str, ...],
    reserve_tokens: int,
) -> PlannedMinute:
    settings = Settings.from_env()
    es_client = elasticsearch_as(elasticsearch.get_client(), KEEPA_PULL)
    planned = plan_now(
        client,
        es_client,
        PlanConfig(markets=markets, reserve_tokens=reserve_tokens),
        load_fee_config(settings.fees_file),
        load_discovery_config(settings.discovery_file),
    )
    plan = planned.plan
    by_purpose = Counter(r.purpose for r in plan.refreshes)
    context.log.info(
        f"plan: {planned.tokens_left} tokens, reserve {planned.config.reserve_tokens}; "
        f"{len(plan.refreshes)} of {planned.tracked} tracked ASINs to refresh ("
        + ", ".join(f"{p} {n}" for p, n in by_purpose.most_common())
        + f"), {plan.tokens_discovery} tokens held for due discovery"
    )
    return planned


def _plan_metadata(planned: PlannedMinute) -> dict[str, Any]:
    """The plan beside the pull's own figures; numbers, so the UI plots them per run (one run
    a minute: the spend per minute)."""
    plan = planned.plan
    return {
        "pull_mode": "planner",
        "keepa_time": dg.MetadataValue.timestamp(plan.now_ms / 1000),
        "tokens_before_plan": dg.MetadataValue.int(planned.tokens_left),
        "reserve_tokens": dg.MetadataValue.int(planned.config.reserve_tokens),
        "tokens_planned": dg.MetadataValue.int(plan.tokens_refresh),
        "tokens_held_for_discovery": dg.MetadataValue.int(plan.tokens_discovery),
        "tracked_asins": dg.MetadataValue.int(planned.tracked),
        "refreshes_by_purpose": dg.MetadataValue.json(
            dict(Counter(r.purpose for r in plan.refreshes))
        ),
        **{
            f"tokens_{purpose}": dg.MetadataValue.int(tokens)
            for purpose, tokens in plan.tokens_by_purpose(planned.config).items()
        },
    }


# One pull at a time (dagster.yaml limits the tag to one run): two planner runs would spend
# the same balance twice.
PULL_TAG = "arbitrage/keepa_pull"
_ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

keepa_pull_job = dg.define_asset_job(
    "keepa_pull",
    tags={PULL_TAG: "pull"},
    # The lag and freshness checks on this topic run on their own schedule (assets/checks.py).
    selection=dg.AssetSelection.assets(RAW_UPDATES_KEY).without_checks(),
    description="Pull the tracked ASINs from Keepa (or the sample) onto raw.keepa_updates.",
)


def build_keepa_pull_schedule(
    cron: str, default_status: dg.DefaultScheduleStatus
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="keepa_pull_schedule",
        job=keepa_pull_job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=default_status,
        description="Pull from Keepa on a cron (env KEEPA_PULL_CRON: every 15 minutes for the "
        "list, every minute for the planner); skipped while a pull is queued or running.",
    )
    def keepa_pull_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        active = context.instance.get_run_records(
            dg.RunsFilter(job_name=keepa_pull_job.name, statuses=_ACTIVE), limit=1
        )
        if active:
            return dg.SkipReason(f"pull {active[0].dagster_run.run_id} has not finished")
        return dg.RunRequest()

    return keepa_pull_schedule
