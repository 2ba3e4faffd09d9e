"""The daily digest: a day's top open opportunities as a table and a chart, sent through the
notification channels once a day (docs/notifications.md, "Daily digest"), one partition per
UTC day."""

import base64
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
from pydantic import Field

from arbitrage.accounts import elasticsearch_as
from arbitrage.clients.digest import FAILED, read_digest, send_digest
from arbitrage.domain.access import DIGEST
from arbitrage.domain.digest import DEFAULT_TOP_N, MAX_TOP_N, chart_png, table_text
from assets.keys import DIGEST_KEY, ES_ALERTS_KEY, GROUP_NOTIFICATIONS
from assets.partitions import DAILY
from resources.elasticsearch import ElasticsearchResource
from resources.notify import NotificationsResource

DIGESTS_DIR = "digests"


class DigestConfig(dg.Config):
    top_n: int = Field(
        default=DEFAULT_TOP_N,
        ge=1,
        le=MAX_TOP_N,
        description="How many opportunities the digest lists, best profit first.",
    )


def digest_png_path(storage_dir: str, day: date) -> Path:
    """Where a day's chart is kept: ``$DAGSTER_HOME/storage/digests/<day>.png``."""
    return Path(storage_dir) / DIGESTS_DIR / f"{day.isoformat()}.png"


@dg.asset(
    key=DIGEST_KEY,
    deps=[ES_ALERTS_KEY],
    kinds={"elasticsearch", "email"},
    group_name=GROUP_NOTIFICATIONS,
    partitions_def=DAILY,
)
def daily_digest(
    context: dg.AssetExecutionContext,
    config: DigestConfig,
    elasticsearch: ElasticsearchResource,
    notifications: NotificationsResource,
) -> dg.MaterializeResult:
    """The day's top open opportunities (table + chart) sent once to every digest channel."""
    elasticsearch_client = elasticsearch.get_client()
    day = date.fromisoformat(context.partition_key)
    channels = notifications.channels()
    # Its own account when the environment names one (arbitrage/accounts.py); that account
    # may not create indices, so only the shared one provisions here.
    own = elasticsearch_as(elasticsearch_client, DIGEST)
    if own is elasticsearch_client:
        elasticsearch_client.ensure_indices()
    elasticsearch_client = own
    digest = read_digest(elasticsearch_client, day, config.top_n)
    png = chart_png(digest)
    path = digest_png_path(context.instance.storage_directory(), day)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    context.log.info(f"{digest.title}; chart at {path}")
    deliveries = send_digest(elasticsearch_client, channels.senders, digest, png)
    for delivery in deliveries:
        context.log.info(
            f"digest {day} → {delivery.channel} ({delivery.channel_type}): {delivery.status}"
            + (f" ({delivery.error})" if delivery.error else "")
        )
    status = {d.channel: d.status for d in deliveries}
    metadata = {
        "day": day.isoformat(),
        "opportunities": dg.MetadataValue.int(len(digest.rows)),
        "opened_that_day": dg.MetadataValue.int(digest.opened or 0),
        "closed_that_day": dg.MetadataValue.int(digest.closed or 0),
        "channels": dg.MetadataValue.json(status),
        "opted_out": dg.MetadataValue.json(
            [s.channel.name for s in channels.senders if not s.channel.digest]
        ),
        "table": dg.MetadataValue.md(f"```\n{table_text(digest)}\n```"),
        "chart": dg.MetadataValue.md(
            f"![digest {day}](data:image/png;base64,{base64.b64encode(png).decode()})"
        ),
        "chart_path": dg.MetadataValue.path(str(path)),
    }
    failed = [d for d in deliveries if d.status == FAILED]
    if failed:
        # A rerun of the day sends only to these (the others are recorded delivered).
        raise dg.Failure(
            description="digest not delivered to "
            + ", ".join(f"{d.channel} ({d.error})" for d in failed),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


daily_digest_job = dg.define_asset_job(
    "daily_digest",
    selection=dg.AssetSelection.assets(DIGEST_KEY),
    description="Send a day's top open opportunities (table + chart) through the channels.",
)


def build_digest_schedule(
    cron: str, default_status: dg.DefaultScheduleStatus
) -> dg.ScheduleDefinition:
    """At ``cron`` (UTC), the digest of the day before the tick."""

    @dg.schedule(
        name="daily_digest_schedule",
        job=daily_digest_job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=default_status,
        description="The previous day's digest (env ARBITRAGE_DIGEST_CRON, default 07:00 UTC).",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = (context.scheduled_execution_time.date() - timedelta(days=1)).isoformat()
        return dg.RunRequest(run_key=day, partition_key=day)

    return _schedule
