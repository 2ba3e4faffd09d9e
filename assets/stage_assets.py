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
from arbitrage.domain.messages.timestamps import utc_now_iso
from arbitrage.domain.stage_specs import StageOutput, StageSpec
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
from arbitrage.engine.stage_setup import StageSetup
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


def output_asset_key(output: StageOutput) -> dg.AssetKey:
    """The asset of a topic or index a stage writes."""
    if output.store == "kafka":
        return topic_asset_key(output.name)
    return index_asset_key(output.name)


def _asset_spec(spec: StageSpec, output: StageOutput) -> dg.AssetSpec:
    return dg.AssetSpec(
        output_asset_key(output),
        deps=[topic_asset_key(spec.source_topic)],
        description=output.description,
        kinds={output.store},
        group_name=spec.name,
        metadata={"topic" if output.store == "kafka" else "index": output.name},
        partitions_def=HOURLY if output.hourly else None,
        # A run that indexes nothing of an hour does not materialize that hour.
        skippable=output.store == "elasticsearch",
    )


def _open_clients(
    spec: StageSpec, kafka: KafkaResource, elasticsearch: ElasticsearchResource
) -> tuple[KafkaClient, ElasticsearchClient]:
    """The stage's own accounts when the environment names them (arbitrage/accounts.py)."""
    kafka_client = kafka_as(kafka.get_client(), spec.name)
    shared_es = elasticsearch.get_client()
    own_es = elasticsearch_as(shared_es, spec.name)
    # Only looks when every topic exists (its account may not create).
    kafka_client.ensure_topics()
    if own_es is shared_es:
        shared_es.ensure_indices()  # the shared account provisions as it goes
    return kafka_client, own_es


def _stage_setup(
    spec: StageSpec,
    config: StageRunConfig,
    es: ElasticsearchClient,
    fee_model: FeeModelResource,
    notifications: NotificationsResource,
    fault_point: str,
) -> StageSetup:
    return StageSetup(
        spec,
        es,
        fee_model.load(),
        rules=fee_model.load_rules() if spec.reads_rules else None,
        channels=notifications.channels() if spec.delivers else None,
        batch_size=config.batch_size,
        max_reject_ratio=config.max_reject_ratio,
        faults=FaultInjector.parse(fault_point),
    )


def _final_results(
    context: dg.AssetExecutionContext,
    spec: StageSpec,
    stats: StageStats,
    common: dict[str, Any],
    reporter: WindowReporter,
) -> Iterator[dg.MaterializeResult]:
    """The run's totals, one result per output (a live run's index hours through ``reporter``)."""
    for output in spec.outputs:
        key = output_asset_key(output)
        if output.role == "index":
            metadata = {
                **common,
                "index": output.name,
                "indexed": dg.MetadataValue.int(stats.indexed),
                "unchanged": dg.MetadataValue.int(stats.unchanged),
                "es_item_retries": dg.MetadataValue.int(stats.es_retries),
            }
            if spec.output_topic is None:
                # Without an output topic the stage's own counts (notifications: per channel,
                # delivered / failed / skipped / filtered) go on its index.
                metadata.update(counter_metadata(stats))
            if _is_replay(context):
                yield dg.MaterializeResult(asset_key=key, metadata=metadata)  # its own hours
            else:
                reporter.report(stats, final=metadata)
        elif output.role == "output":
            spans = stats.deliveries.per_partition(output.name)
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    **common,
                    "topic": output.name,
                    "produced": dg.MetadataValue.int(stats.produced(output.name)),
                    **counter_metadata(stats),
                    "offsets_written": dg.MetadataValue.json(
                        {str(p): [low, high] for p, (low, high) in spans.items()}
                    ),
                },
            )
        elif output.role == "dlq":
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    **common,
                    "topic": output.name,
                    "messages_written": dg.MetadataValue.int(stats.produced(output.name)),
                    "newest_reasons": dg.MetadataValue.json(stats.dlq_reasons[-5:]),
                },
            )
        else:
            counters = stats.counters
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    **common,
                    "index": output.name,
                    "indexed": dg.MetadataValue.int(counters.get(OBSERVATIONS_INDEXED, 0)),
                    "unchanged": dg.MetadataValue.int(counters.get(OBSERVATIONS_UNCHANGED, 0)),
                },
            )


def build_stage_assets(
    spec: StageSpec, fault_point: str = "", following: Following | None = None
) -> dg.AssetsDefinition:
    """The stage's multi-asset: one asset per ``StageSpec.outputs`` (index, output topic, DLQ,
    side indices), all fed by its source topic. ``following`` bounds the runs that follow a
    partition (``follow`` in the run config); ``fault_point`` arms a kill point for the fault
    suite (arbitrage/engine/faults.py); empty otherwise."""
    following = following or Following()
    by_role = {output.role: output_asset_key(output) for output in spec.outputs}
    window_keys = (by_role["index"], by_role.get("output"), by_role["dlq"])

    @dg.multi_asset(
        name=stage_op_name(spec),
        specs=[_asset_spec(spec, output) for output in spec.outputs],
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
        kafka_client, es_client = _open_clients(spec, kafka, elasticsearch)
        try:
            group, planned, lost = _ranges_for_run(context, spec, config, kafka_client)
        except OffsetAheadOfLogError as exc:
            raise dg.Failure(str(exc)) from None
        if lost:
            _report_retention_loss(context, spec, lost, es_client)
        context.log.info(
            f"{spec.name}: {sum(r.size for r in planned)} records in {len(planned)} partition "
            f"range(s) under group {group}"
        )
        if config.follow and (len(planned) != 1 or _is_replay(context)):
            raise dg.Failure(
                f"follow: true needs a live run with exactly one offset range; this run has "
                f"{len(planned)} range(s){' and a partition key' if _is_replay(context) else ''}"
            )
        reporter = WindowReporter(context, spec, window_keys)
        setup = _stage_setup(spec, config, es_client, fee_model, notifications, fault_point)
        runner = StageRunner(setup, kafka_client, logger=context.log, on_batch=reporter.on_commit)
        with stop_on_interrupt() as stop_requested:
            stats = runner.run(
                group,
                planned,
                following=following if config.follow else None,
                stop_requested=stop_requested,
            )
            common = _common_metadata(stats, planned, group)
            yield from _final_results(context, spec, stats, common, reporter)

    return _stage


def build_stage_job(spec: StageSpec, stage_assets: dg.AssetsDefinition) -> Any:
    """The stage's job; its asset checks run on their own schedule, not after every range."""
    return dg.define_asset_job(
        spec.name,
        selection=dg.AssetSelection.assets(stage_assets).without_checks(),
        description=f"Process {spec.source_topic} offset ranges: {spec.summary}",
        tags={STAGE_TAG: spec.name},
    )
