"""Asset checks on the Kafka side of the pipeline, and the schedule that runs them.

- consumer lag of each live group under a threshold (on the group's source topic asset);
- DLQ topics not growing since the previous evaluation (its end offsets are kept in the check's
  metadata and read back from the instance), with the newest reasons;
- the newest raw.keepa_updates message younger than twice the Keepa pull interval.

They run every 5 minutes in their own job, never inside the stage runs (whose jobs exclude them).
"""

import itertools
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.retention_losses import open_losses
from arbitrage.domain import topics
from arbitrage.domain.stage_specs import STAGES, StageSpec
from arbitrage.engine.offset_anomalies import acknowledge_command, reset_command
from assets.keys import topic_asset_key
from resources.elasticsearch import ElasticsearchResource
from resources.kafka import KafkaResource

DEFAULT_MAX_LAG = 10_000
NEWEST_REASONS = 5
# The group the DLQ check reads the newest dead letters with (it commits nothing).
DLQ_READER_GROUP = topics.tool_name("checks")


# ---------------------------------------------------------------------------- consumer lag


class LagCheckConfig(dg.Config):
    max_lag: int = Field(
        default=DEFAULT_MAX_LAG, description="Most unprocessed messages (all partitions) allowed."
    )


def _lag_check(spec: StageSpec) -> dg.AssetChecksDefinition:
    group, topic = spec.live_group, spec.source_topic

    @dg.asset_check(
        asset=topic_asset_key(topic),
        name="consumer_lag_under_threshold",
        description=f"Messages on {topic} not yet committed by group '{group}' stay under max_lag.",
        metadata={"consumer_group": group, "threshold_max_lag": DEFAULT_MAX_LAG},
    )
    def _check(
        config: LagCheckConfig,
        kafka: KafkaResource,
        elasticsearch: ElasticsearchResource,
    ) -> dg.AssetCheckResult:
        kafka_client = kafka.get_client()
        elasticsearch_client = elasticsearch.get_client()
        lags = kafka_client.lag(group, topic)
        total = sum(lag.lag for lag in lags)
        description = f"group '{group}' lags {total} messages (threshold {config.max_lag})"
        # Lag 0 is not "healthy" when the group sits past the end of the log (records below
        # its offset are being skipped) or retention is deleting records before it reads them.
        ahead = [lag.partition for lag in lags if lag.ahead_of_log]
        lost = sum(lag.lost_to_retention for lag in lags)
        if ahead:
            description += (
                f"; committed past the end of the log on partition(s) {ahead}: stages stop "
                f"there until `{reset_command(group, topic)}`"
            )
        if lost:
            description += f"; {lost} records deleted by retention before the group read them"
        # Losses a run already went past stay red until a person acknowledges them.
        unseen = open_losses(elasticsearch_client, group, topic)
        if unseen:
            description += (
                f"; {sum(loss['records'] for loss in unseen)} records lost to retention not yet "
                f"acknowledged (`{acknowledge_command(group, topic)}`)"
            )
        return dg.AssetCheckResult(
            passed=total <= config.max_lag and not ahead and not lost and not unseen,
            severity=dg.AssetCheckSeverity.ERROR if ahead else dg.AssetCheckSeverity.WARN,
            description=description,
            metadata={
                "consumer_group": group,
                "threshold_max_lag": dg.MetadataValue.int(config.max_lag),
                "lag": dg.MetadataValue.int(total),
                "lag_by_partition": dg.MetadataValue.json(
                    {str(lag.partition): lag.lag for lag in lags}
                ),
                "partitions_ahead_of_log": dg.MetadataValue.json(ahead),
                "records_lost_to_retention": dg.MetadataValue.int(lost),
                "unacknowledged_retention_losses": dg.MetadataValue.json(
                    [
                        {k: loss[k] for k in ("partition", "from_offset", "to_offset", "records")}
                        for loss in unseen
                    ]
                ),
            },
        )

    return _check


# ---------------------------------------------------------------------------- DLQ growth

DLQ_CHECK_NAME = "dlq_not_growing"


def _previous_metadata(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey, run_id: str
) -> Mapping[str, dg.MetadataValue] | None:
    """Metadata of the check's newest evaluation before this run (its own is only planned)."""
    for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=5):
        evaluation = record.evaluation
        if record.run_id != run_id and isinstance(evaluation, dg.AssetCheckEvaluation):
            return evaluation.metadata
    return None


def _reasons_table(kafka: KafkaClient, dlq_topic: str) -> dg.MetadataValue:
    rows = ["| failed at | source | key | reason |", "|---|---|---|---|"]
    for message in reversed(kafka.newest_messages(dlq_topic, NEWEST_REASONS, DLQ_READER_GROUP)):
        try:
            entry = json.loads(message.value())
        except (TypeError, ValueError):
            rows.append(
                f"| — | {dlq_topic}[{message.partition()}]@{message.offset()} | — | "
                "not a DLQ envelope |"
            )
            continue
        source = f"{entry.get('source_topic')}[{entry.get('partition')}]@{entry.get('offset')}"
        reason = str(entry.get("error", "")).replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {entry.get('failed_at')} | {source} | {entry.get('key')} | {reason} |")
    return dg.MetadataValue.md("\n".join(rows))


# Reading a DLQ to count it is cheap while it is small; past this, offsets are reported.
COUNT_RETAINED_UP_TO = 50_000


def _dlq_check(dlq_topic: str) -> dg.AssetChecksDefinition:
    asset_key = topic_asset_key(dlq_topic)
    check_key = dg.AssetCheckKey(asset_key, DLQ_CHECK_NAME)

    @dg.asset_check(
        asset=asset_key,
        name=DLQ_CHECK_NAME,
        description=f"No new dead letters on {dlq_topic} since the previous evaluation.",
        metadata={"topic": dlq_topic, "threshold_new_messages": 0},
    )
    def _check(context: dg.AssetCheckExecutionContext, kafka: KafkaResource) -> dg.AssetCheckResult:
        kafka_client = kafka.get_client()
        marks = kafka_client.watermarks(dlq_topic)
        ends = {p: high for p, (_, high) in marks.items()}
        previous = _previous_metadata(context.instance, check_key, context.run.run_id)
        recorded = previous.get("end_offsets") if previous else None
        baseline = recorded.value if isinstance(recorded, dg.JsonMetadataValue) else None
        new = 0
        if baseline is not None:
            since: dict[int, tuple[int, int]] = {}
            for partition, (low, high) in marks.items():
                before = int(baseline.get(str(partition), 0))
                # An end offset that went back means the topic was recreated: all of it is new.
                since[partition] = (max(low, before) if high >= before else low, high)
            new = kafka_client.count_messages(dlq_topic, since)
        metadata: dict[str, Any] = {
            "topic": dlq_topic,
            "end_offsets": dg.MetadataValue.json({str(p): high for p, high in ends.items()}),
            "new_messages": dg.MetadataValue.int(new),
            "threshold_new_messages": dg.MetadataValue.int(0),
        }
        retained_offsets = sum(high - low for low, high in marks.values())
        if retained_offsets <= COUNT_RETAINED_UP_TO:
            retained = kafka_client.count_messages(dlq_topic, marks)
            metadata["messages_retained"] = dg.MetadataValue.int(retained)
        else:  # too many to read on every evaluation: offsets, an upper bound on messages
            metadata["offsets_retained"] = dg.MetadataValue.int(retained_offsets)
        if any(high > low for low, high in marks.values()):
            metadata["newest_reasons"] = _reasons_table(kafka_client, dlq_topic)
        if baseline is None:
            description = "first evaluation: end offsets recorded as the baseline"
        else:
            description = f"{new} new dead letter(s) on {dlq_topic} since the previous check"
        return dg.AssetCheckResult(
            passed=new == 0,
            severity=dg.AssetCheckSeverity.WARN,
            description=description,
            metadata=metadata,
        )

    return _check


# ---------------------------------------------------------------------------- freshness


def longest_cron_gap(cron: str) -> timedelta:
    """The longest wait between two ticks of a cron schedule, over a sample week.

    Dagster's time-window partitions enumerate cron ticks with the same parser the schedule
    uses, so any cron the schedule accepts works here too.
    """
    start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
    fmt = "%Y-%m-%d-%H:%M"
    ticks = dg.TimeWindowPartitionsDefinition(
        cron_schedule=cron, start=start, fmt=fmt, timezone="UTC"
    )
    keys = ticks.get_partition_keys(current_time=start + timedelta(days=8))
    # Each key is a tick; the gaps are between consecutive keys (a window per key would cost
    # a search per key: 25 s for the 11 520 ticks of an every-minute cron).
    times = [datetime.strptime(key, fmt).replace(tzinfo=UTC) for key in keys]
    if keys:  # the last window's end: the tick after the last key
        times.append(ticks.time_window_for_partition_key(keys[-1]).end)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    return max(gaps, default=timedelta(days=7))


class FreshnessCheckConfig(dg.Config):
    max_age_minutes: int | None = Field(
        default=None,
        description="Oldest the newest raw update may be (default: twice the pull interval).",
    )


def _freshness_check(pull_cron: str, quiet_minutes: int) -> dg.AssetChecksDefinition:
    # The planner may have nothing due for its minimum refresh interval (quiet_minutes).
    gap = max(longest_cron_gap(pull_cron), timedelta(minutes=quiet_minutes))
    default_max_age = int(2 * gap / timedelta(minutes=1))

    @dg.asset_check(
        asset=topic_asset_key(topics.RAW_UPDATES),
        name="newest_message_fresh",
        description="The newest raw update is younger than twice the Keepa pull interval.",
        metadata={"threshold_max_age_minutes": default_max_age, "pull_cron": pull_cron},
    )
    def _check(config: FreshnessCheckConfig, kafka: KafkaResource) -> dg.AssetCheckResult:
        kafka_client = kafka.get_client()
        max_age = config.max_age_minutes or default_max_age
        newest = kafka_client.newest_timestamp_ms(topics.RAW_UPDATES)
        metadata: dict[str, Any] = {
            "threshold_max_age_minutes": dg.MetadataValue.int(max_age),
            "pull_cron": pull_cron,
        }
        if newest is None:
            return dg.AssetCheckResult(
                passed=False,
                description=f"{topics.RAW_UPDATES} holds no messages",
                metadata=metadata,
            )
        age_min = (time.time() * 1000 - newest) / 60_000
        metadata["newest_message_at"] = datetime.fromtimestamp(newest / 1000, tz=UTC).isoformat()
        metadata["age_minutes"] = dg.MetadataValue.float(round(age_min, 1))
        return dg.AssetCheckResult(
            passed=age_min <= max_age,
            description=f"newest raw update is {age_min:.1f} min old (threshold {max_age} min)",
            metadata=metadata,
        )

    return _check


# ---------------------------------------------------------------------------- job and schedule


def build_pipeline_checks(
    pull_cron: str,
    checks_cron: str,
    default_status: dg.DefaultScheduleStatus,
    quiet_minutes: int = 0,
) -> tuple[list[dg.AssetChecksDefinition], Any, dg.ScheduleDefinition]:
    """Every stage's lag and DLQ checks and the raw freshness check, their job and schedule;
    ``quiet_minutes``: the longest a pull may produce nothing (the planner's minimum refresh
    interval), beside the cron's own gaps."""
    checks = [_lag_check(spec) for spec in STAGES]
    checks += [_dlq_check(spec.dlq_topic) for spec in STAGES]
    checks.append(_freshness_check(pull_cron, quiet_minutes))
    job = dg.define_asset_job(
        "pipeline_checks",
        selection=dg.AssetSelection.checks(*checks),
        description="Lag, DLQ growth and freshness checks of the Kafka topics (no asset is run).",
    )
    schedule = dg.ScheduleDefinition(
        name="pipeline_checks_schedule",
        job=job,
        cron_schedule=checks_cron,
        execution_timezone="UTC",
        default_status=default_status,
        description="Run the pipeline's asset checks (env ARBITRAGE_CHECKS_CRON).",
    )
    return checks, job, schedule
