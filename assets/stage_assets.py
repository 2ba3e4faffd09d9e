"""The stages as multi-assets over Kafka offset ranges, built from their specs.

Topics are single continuous logs, so the Kafka assets are unpartitioned; the Elasticsearch
assets are partitioned by the hour of the source messages' Kafka timestamps.

A run without a partition key is a live run: it processes the offset ranges in its config or,
with no config, drains every partition from the group's committed offset to the high watermark
seen at start, and records the hours it indexed as partition materializations. The sensors'
runs *follow* their one partition: they stay on it past their range until it has been idle or
the run is old (arbitrage/engine/runner.py, ``Following``), so an update is processed within a
fraction of a second instead of waiting for a run to start. Materializations and progress lines are
emitted per window of ``EVENT_WINDOW_S`` and at the end, never per batch, so a steady stream does
not grow the event log with its throughput. SIGINT/SIGTERM (a run terminated from the UI or by run
monitoring, Ctrl-C on the CLI) stop a run after the batch it is working on is committed.

A run with an hourly partition key is a replay (a backfill): it reads exactly the source
messages whose Kafka timestamps fall in that hour, under the stage's replay group, so the live
group's offsets never move.
"""

# No `from __future__ import annotations` in the asset modules: Dagster resolves the config and
# resource annotations of functions defined inside factories at runtime.
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from pydantic import Field

from arbitrage.accounts import elasticsearch_as, kafka_as
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.retention_losses import RetentionLoss, record_losses
from arbitrage.domain import topics
from arbitrage.domain.messages.timestamps import utc_now_iso
from arbitrage.domain.stage_specs import ARBITRAGE, NOTIFICATIONS, StageSpec
from arbitrage.engine.faults import FaultInjector
from arbitrage.engine.offset_anomalies import (
    OffsetAheadOfLogError,
    acknowledge_command,
    check_offsets,
)
from arbitrage.engine.processors import (
    FILTERED_PREFIX,
    OBSERVATIONS_INDEXED,
    OBSERVATIONS_UNCHANGED,
)
from arbitrage.engine.ranges import PartitionRange, plan_ranges
from arbitrage.engine.runner import Following, StageRunner
from arbitrage.engine.stats import StageStats
from assets.keys import index_asset_key, topic_asset_key
from assets.partitions import HOURLY, hour_partition_key
from resources.elasticsearch import ElasticsearchResource
from resources.fees import FeeModelResource
from resources.kafka import KafkaResource
from resources.notify import NotificationsResource

# Run tag naming the topic-partition a run works on; dagster.yaml limits it to one run per value.
PARTITION_TAG = "arbitrage/topic_partition"
STAGE_TAG = "arbitrage/stage"
# A long-lived run reports materializations at most this often (and at its end).
EVENT_WINDOW_S = 30.0


class OffsetRange(dg.Config):
    partition: int = Field(description="Source topic partition.")
    start: int = Field(description="First offset to process.")
    end: int = Field(description="Offset after the last one to process (exclusive).")


class StageRunConfig(dg.Config):
    offset_ranges: list[OffsetRange] = Field(
        default=[],
        description="Offset ranges to process. Empty: drain every partition from the committed "
        "offset up to the high watermark seen at start.",
    )
    batch_size: int = Field(
        default=5000, description="Records read, written and committed together."
    )
    max_records_per_partition: int | None = Field(
        default=None, description="When draining, stop each partition after this many records."
    )
    max_reject_ratio: float = Field(
        default=0.5,
        description="Fail the run instead of dead-lettering more than this share of a batch "
        "(batches of 100 records or more).",
    )
    follow: bool = Field(
        default=False,
        description="Stay on the one partition of offset_ranges past its end, processing what "
        "arrives, until idle for ARBITRAGE_RUN_IDLE_S or running for ARBITRAGE_RUN_MAX_S "
        "(what the sensors request).",
    )


def stage_op_name(spec: StageSpec) -> str:
    return f"{spec.name}_stage"


def stage_run_config(
    spec: StageSpec, ranges: list[PartitionRange], *, follow: bool = False
) -> dg.RunConfig:
    """Typed run config of a stage run over the given ranges (what the sensors request)."""
    config = StageRunConfig(
        offset_ranges=[
            OffsetRange(partition=r.partition, start=r.start, end=r.end) for r in ranges
        ],
        follow=follow,
    )
    return dg.RunConfig(ops={stage_op_name(spec): config})


@contextmanager
def stop_on_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn SIGINT/SIGTERM into a request the runner hears between batches.

    Dagster terminates a run (from the UI, or run monitoring) with SIGINT and would interrupt
    the batch wherever it is; nothing would be lost (the open transaction is aborted), but the
    batch's work would be thrown away and redone. Here the batch finishes and commits first,
    then the signal is raised again so Dagster marks the run canceled.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False  # signal handlers can only be set from the main thread
        return
    received: list[int] = []

    def note(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        signal.raise_signal(received[0])


def _is_replay(context: dg.AssetExecutionContext) -> bool:
    """One hour (a partition key) or several (a single-run backfill's key range)."""
    return context.has_partition_key or context.has_partition_key_range


def _ranges_for_run(
    context: dg.AssetExecutionContext,
    spec: StageSpec,
    config: StageRunConfig,
    kafka: KafkaClient,
) -> tuple[str, list[PartitionRange], list[RetentionLoss]]:
    """The consumer group to commit under, the ranges to process, and the records retention
    removed before the live group read them (per partition)."""
    if _is_replay(context):
        window = context.partition_time_window
        starts = kafka.offsets_for_time(spec.source_topic, int(window.start.timestamp() * 1000))
        ends = kafka.offsets_for_time(spec.source_topic, int(window.end.timestamp() * 1000))
        ranges = [PartitionRange(p, starts[p], ends[p]) for p in sorted(starts)]
        context.log.info(
            f"replaying {spec.source_topic} {window.start} – {window.end} "
            f"under group {spec.replay_group}"
        )
        return spec.replay_group, ranges, []
    lags = kafka.lag(spec.live_group, spec.source_topic)
    if config.offset_ranges:
        ranges = [PartitionRange(r.partition, r.start, r.end) for r in config.offset_ranges]
        wanted = {r.partition for r in ranges}
        lost = check_offsets(spec.live_group, [lag for lag in lags if lag.partition in wanted])
        return spec.live_group, ranges, lost
    lost = check_offsets(spec.live_group, lags)
    return (
        spec.live_group,
        plan_ranges(lags, max_records=config.max_records_per_partition),
        lost,
    )


def _ranges_table(stats: StageStats, planned: list[PartitionRange]) -> dg.MetadataValue:
    lines = ["| partition | planned | processed | records |", "|---|---|---|---|"]
    for span in planned:
        done = stats.ranges.get(span.partition)
        processed = f"{done[0]}–{done[1]}" if done else "—"
        count = done[1] - done[0] if done else 0
        lines.append(f"| {span.partition} | {span.start}–{span.end} | {processed} | {count} |")
    return dg.MetadataValue.md("\n".join(lines))


def _report_retention_loss(
    context: dg.AssetExecutionContext,
    spec: StageSpec,
    losses: list[RetentionLoss],
    es: ElasticsearchClient,
) -> None:
    """Log it, observe it on the source topic, and keep it until someone acknowledges it."""
    total = sum(loss.records for loss in losses)
    by_partition = ", ".join(
        f"partition {loss.partition}: {loss.records} (offsets {loss.from_offset}-{loss.to_offset})"
        for loss in losses
    )
    context.log.warning(
        f"retention removed {total} records of {spec.source_topic} before group "
        f"{spec.live_group} read them ({by_partition}); going on from the oldest retained "
        "record. The lag check stays red until "
        f"`{acknowledge_command(spec.live_group, spec.source_topic)}`"
    )
    record_losses(es, losses, context.run.run_id, utc_now_iso())
    context.log_event(
        dg.AssetObservation(
            asset_key=topic_asset_key(spec.source_topic),
            metadata={
                "consumer_group": spec.live_group,
                "records_lost_to_retention": dg.MetadataValue.int(total),
                "lost_by_partition": dg.MetadataValue.json(
                    {str(loss.partition): loss.records for loss in losses}
                ),
            },
        )
    )


class WindowReporter:
    """Materializations of a long-lived run per window of ``EVENT_WINDOW_S``: what the window
    added to the index (per hour partition), the output topic and the DLQ. The output topic's
    window also carries the run's totals so far of the routes the rules removed
    (``filtered_<reason>``, exact), so a reader needs only a run's latest materialization. The
    run's final ``MaterializeResult``s carry its totals."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        spec: StageSpec,
        keys: tuple[dg.AssetKey, dg.AssetKey | None, dg.AssetKey],
        window_s: float = EVENT_WINDOW_S,
    ) -> None:
        self.context, self.spec, self.keys, self.window_s = context, spec, keys, window_s
        self.started = self.window_start = time.monotonic()
        self.seen = StageStats(spec.name)  # the totals already reported
        self.windows = 0

    def on_commit(self, stats: StageStats) -> None:
        if time.monotonic() - self.window_start >= self.window_s:
            self.report(stats)

    def report(self, stats: StageStats, final: dict[str, Any] | None = None) -> None:
        """Emit what happened since the last window (nothing when nothing did). ``final``: the
        run's own metadata for the index's hours; the topics' totals are the run's results."""
        index_key, output_key, dlq_key = self.keys
        seen = self.seen
        records_in = stats.records_in - seen.records_in
        self.window_start = time.monotonic()
        if records_in == 0 and stats.to_dlq == seen.to_dlq:
            return
        self.windows += 1
        window = {
            "consumer_group": self.spec.live_group,
            "window": dg.MetadataValue.int(self.windows),
            "records_in": dg.MetadataValue.int(records_in),
            "to_dlq": dg.MetadataValue.int(stats.to_dlq - seen.to_dlq),
        }
        # Without an output topic, the run's counts so far ride on the index's windows.
        totals = counter_metadata(stats) if output_key is None and final is None else {}
        for hour_ms, count in sorted(stats.records_by_hour.items()):
            added = count - seen.records_by_hour.get(hour_ms, 0)
            if added:
                self.context.log_event(
                    dg.AssetMaterialization(
                        asset_key=index_key,
                        partition=hour_partition_key(hour_ms),
                        metadata={
                            **window,
                            **(final or {}),
                            **totals,
                            "records_in_this_hour": dg.MetadataValue.int(added),
                        },
                    )
                )
        output, dlq = self.spec.output_topic, self.spec.dlq_topic
        filtered = filtered_metadata(stats)
        filtered_moved = filtered != filtered_metadata(seen)
        topic_keys = [] if final is not None else [(output_key, output), (dlq_key, dlq)]
        for key, topic in topic_keys:
            if key is None or topic is None:
                continue
            produced = stats.produced(topic) - seen.produced(topic)
            extra = filtered if topic == output else {}
            if produced or (extra and filtered_moved):
                self.context.log_event(
                    dg.AssetMaterialization(
                        asset_key=key,
                        metadata={**window, "produced": dg.MetadataValue.int(produced), **extra},
                    )
                )
        seen.records_in, seen.to_dlq = stats.records_in, stats.to_dlq
        seen.records_by_hour = dict(stats.records_by_hour)
        seen.counters = dict(stats.counters)
        seen.deliveries.delivered_by_topic = dict(stats.deliveries.delivered_by_topic)


def filtered_metadata(stats: StageStats) -> dict[str, Any]:
    """The run's totals of routes the rules removed, per reason (arbitrage only)."""
    return {
        name: dg.MetadataValue.int(count)
        for name, count in sorted(stats.counters.items())
        if name.startswith(FILTERED_PREFIX)
    }


def counter_metadata(stats: StageStats) -> dict[str, Any]:
    """The stage's own counts (alerts_raised, filtered_<reason>, delivered:<channel>, …)."""
    return {name: dg.MetadataValue.int(n) for name, n in sorted(stats.counters.items())}


def _common_metadata(
    stats: StageStats, planned: list[PartitionRange], group: str
) -> dict[str, Any]:
    return {
        "consumer_group": group,
        "offset_ranges": _ranges_table(stats, planned),
        "records_in": dg.MetadataValue.int(stats.records_in),
        "to_dlq": dg.MetadataValue.int(stats.to_dlq),
        "records_per_s": dg.MetadataValue.float(round(stats.records_per_s, 1)),
        "seconds": dg.MetadataValue.float(round(stats.seconds, 3)),
    }


def build_stage_assets(
    spec: StageSpec, fault_point: str = "", following: Following | None = None
) -> dg.AssetsDefinition:
    """The stage's multi-asset: its index, output topic and DLQ, all fed by its source topic.
    ``following`` bounds the runs that follow a partition (``follow`` in the run config);
    ``fault_point`` arms a kill point for the fault suite (arbitrage/engine/faults.py); empty
    otherwise."""
    following = following or Following()
    source_key = topic_asset_key(spec.source_topic)
    index_key = index_asset_key(spec.index)
    output_key = None if spec.output_topic is None else topic_asset_key(spec.output_topic)
    dlq_key = topic_asset_key(spec.dlq_topic)
    side_keys = [(side, index_asset_key(side.name)) for side in spec.side_indices]

    @dg.multi_asset(
        name=stage_op_name(spec),
        specs=[
            dg.AssetSpec(
                index_key,
                deps=[source_key],
                description=spec.index_description,
                kinds={"elasticsearch"},
                group_name=spec.name,
                metadata={"index": spec.index},
                partitions_def=HOURLY,
                skippable=True,
            ),
            # A stage whose output leaves the pipeline (notifications) has no output topic.
            *(
                [
                    dg.AssetSpec(
                        output_key,
                        deps=[source_key],
                        description=spec.output_description,
                        kinds={"kafka"},
                        group_name=spec.name,
                        metadata={"topic": spec.output_topic},
                    )
                ]
                if output_key is not None
                else []
            ),
            dg.AssetSpec(
                dlq_key,
                deps=[source_key],
                description=topics.TOPIC_BY_NAME[spec.dlq_topic].description,
                kinds={"kafka"},
                group_name=spec.name,
                metadata={"topic": spec.dlq_topic},
            ),
            # Indices written in the stage's bulk requests beside its own (price history).
            *(
                dg.AssetSpec(
                    key,
                    deps=[source_key],
                    description=side.description,
                    kinds={"elasticsearch"},
                    group_name=spec.name,
                    metadata={"index": side.name},
                    skippable=True,
                )
                for side, key in side_keys
            ),
        ],
        can_subset=False,
        # A backfill of a range replays its whole time window in one run (and makes
        # `dagster asset materialize --partition-range` possible).
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=spec.summary,
    )
    def _stage(
        context: dg.AssetExecutionContext,
        config: StageRunConfig,
        kafka: KafkaResource,
        elasticsearch: ElasticsearchResource,
        fee_model: FeeModelResource,
        notifications: NotificationsResource,
    ) -> Iterator[dg.MaterializeResult]:
        # The stage's own accounts when the environment names them (arbitrage/accounts.py).
        kafka_client = kafka_as(kafka.get_client(), spec.name)
        elasticsearch_client = elasticsearch.get_client()
        own_es = elasticsearch_as(elasticsearch_client, spec.name)
        # Only looks when every topic exists (its account may not create).
        kafka_client.ensure_topics()
        if own_es is elasticsearch_client:
            elasticsearch_client.ensure_indices()  # the shared account provisions as it goes
        elasticsearch_client = own_es
        try:
            group, planned, lost = _ranges_for_run(context, spec, config, kafka_client)
        except OffsetAheadOfLogError as exc:
            raise dg.Failure(str(exc)) from None
        if lost:
            _report_retention_loss(context, spec, lost, elasticsearch_client)
        context.log.info(
            f"{spec.name}: {sum(r.size for r in planned)} records in {len(planned)} partition "
            f"range(s) under group {group}"
        )
        if config.follow and (len(planned) != 1 or _is_replay(context)):
            raise dg.Failure(
                f"follow: true needs a live run with exactly one offset range; this run has "
                f"{len(planned)} range(s){' and a partition key' if _is_replay(context) else ''}"
            )
        reporter = WindowReporter(context, spec, (index_key, output_key, dlq_key))
        runner = StageRunner(
            spec,
            kafka_client,
            elasticsearch_client,
            fee_model.load(),
            batch_size=config.batch_size,
            logger=context.log,
            on_batch=reporter.on_commit,
            max_reject_ratio=config.max_reject_ratio,
            faults=FaultInjector.parse(fault_point),
            # Read only where they apply: a bad rules file does not stop enrichment.
            rules=fee_model.load_rules() if spec.name == ARBITRAGE.name else None,
            channels=notifications.channels() if spec.name == NOTIFICATIONS.name else None,
        )
        with stop_on_interrupt() as stop_requested:
            stats = runner.run(
                group,
                planned,
                following=following if config.follow else None,
                stop_requested=stop_requested,
            )
            common = _common_metadata(stats, planned, group)
            index_metadata = {
                **common,
                "index": spec.index,
                "indexed": dg.MetadataValue.int(stats.indexed),
                "unchanged": dg.MetadataValue.int(stats.unchanged),
                "es_item_retries": dg.MetadataValue.int(stats.es_retries),
            }
            if output_key is None:
                # Without an output topic the stage's own counts (notifications: per channel,
                # delivered / failed / skipped / filtered) go on its index.
                index_metadata.update(counter_metadata(stats))
            if _is_replay(context):
                # A replay materializes its own hours.
                yield dg.MaterializeResult(asset_key=index_key, metadata=index_metadata)
            else:
                reporter.report(stats, final=index_metadata)
            if output_key is not None and spec.output_topic is not None:
                spans = stats.deliveries.per_partition(spec.output_topic)
                yield dg.MaterializeResult(
                    asset_key=output_key,
                    metadata={
                        **common,
                        "topic": spec.output_topic,
                        "produced": dg.MetadataValue.int(stats.produced(spec.output_topic)),
                        **counter_metadata(stats),
                        "offsets_written": dg.MetadataValue.json(
                            {str(p): [low, high] for p, (low, high) in spans.items()}
                        ),
                    },
                )
            yield dg.MaterializeResult(
                asset_key=dlq_key,
                metadata={
                    **common,
                    "topic": spec.dlq_topic,
                    "messages_written": dg.MetadataValue.int(stats.produced(spec.dlq_topic)),
                    "newest_reasons": dg.MetadataValue.json(stats.dlq_reasons[-5:]),
                },
            )
            counters = stats.counters
            for side, key in side_keys:
                yield dg.MaterializeResult(
                    asset_key=key,
                    metadata={
                        **common,
                        "index": side.name,
                        "indexed": dg.MetadataValue.int(counters.get(OBSERVATIONS_INDEXED, 0)),
                        "unchanged": dg.MetadataValue.int(counters.get(OBSERVATIONS_UNCHANGED, 0)),
                    },
                )

    return _stage


def build_stage_job(spec: StageSpec, stage_assets: dg.AssetsDefinition) -> Any:
    """The stage's job; its asset checks run on their own schedule, not after every range."""
    return dg.define_asset_job(
        spec.name,
        selection=dg.AssetSelection.assets(stage_assets).without_checks(),
        description=f"Process {spec.source_topic} offset ranges: {spec.summary}",
        tags={STAGE_TAG: spec.name},
    )
