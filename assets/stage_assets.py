"""The stages as multi-assets over Kafka offset ranges, built from their specs.

Topics are single continuous logs, so the Kafka assets are unpartitioned; the Elasticsearch
assets are partitioned by the hour of the source messages' Kafka timestamps.

A run without a partition key is a live run: it processes the offset ranges in its config (the
sensors fill them in) or, with no config, drains every partition from the group's committed
offset to the high watermark seen at start, and records the hours it indexed as partition
materializations. A run with an hourly partition key is a replay (a backfill): it reads exactly
the source messages whose Kafka timestamps fall in that hour, under the stage's replay group,
so the live group's offsets never move.
"""

# No `from __future__ import annotations` in the asset modules: Dagster resolves the config and
# resource annotations of functions defined inside factories at runtime.
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from assets.keys import index_asset_key, topic_asset_key
from assets.partitions import HOURLY, hour_partition_key
from engine.faults import FaultInjector
from engine.offset_anomalies import OffsetAheadOfLogError, acknowledge_command, check_offsets
from engine.ranges import PartitionRange, plan_ranges
from engine.runner import StageRunner
from engine.stats import StageStats
from pipelines import topics
from pipelines.messages.timestamps import utc_now_iso
from pipelines.stage_specs import StageSpec
from resources.elasticsearch import ElasticsearchResource
from resources.fees import FeeModelResource
from resources.kafka import KafkaResource
from resources.retention_losses import RetentionLoss, record_losses

# Run tag naming the topic-partition a run works on; dagster.yaml limits it to one run per value.
PARTITION_TAG = "arbitrage/topic_partition"
STAGE_TAG = "arbitrage/stage"


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


def stage_op_name(spec: StageSpec) -> str:
    return f"{spec.name}_stage"


def stage_run_config(spec: StageSpec, ranges: list[PartitionRange]) -> dg.RunConfig:
    """Typed run config of a stage run over the given ranges (what the sensors request)."""
    config = StageRunConfig(
        offset_ranges=[OffsetRange(partition=r.partition, start=r.start, end=r.end) for r in ranges]
    )
    return dg.RunConfig(ops={stage_op_name(spec): config})


def _is_replay(context: dg.AssetExecutionContext) -> bool:
    """One hour (a partition key) or several (a single-run backfill's key range)."""
    return context.has_partition_key or context.has_partition_key_range


def _ranges_for_run(
    context: dg.AssetExecutionContext,
    spec: StageSpec,
    config: StageRunConfig,
    kafka: KafkaResource,
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
    es: ElasticsearchResource,
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


def _index_materializations(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    stats: StageStats,
    metadata: dict[str, Any],
) -> Iterator[dg.MaterializeResult]:
    """A replay materializes its own hours; a live run records each hour it indexed."""
    if _is_replay(context):
        yield dg.MaterializeResult(asset_key=key, metadata=metadata)
        return
    for hour_ms, count in sorted(stats.records_by_hour.items()):
        context.log_event(
            dg.AssetMaterialization(
                asset_key=key,
                partition=hour_partition_key(hour_ms),
                metadata={**metadata, "records_in_this_hour": dg.MetadataValue.int(count)},
            )
        )


def build_stage_assets(spec: StageSpec, fault_point: str = "") -> dg.AssetsDefinition:
    """The stage's multi-asset: its index, output topic and DLQ, all fed by its source topic.
    ``fault_point`` arms a kill point for the fault suite (engine/faults.py); empty otherwise."""
    source_key = topic_asset_key(spec.source_topic)
    index_key = index_asset_key(spec.index)
    output_key = topic_asset_key(spec.output_topic)
    dlq_key = topic_asset_key(spec.dlq_topic)

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
            dg.AssetSpec(
                output_key,
                deps=[source_key],
                description=spec.output_description,
                kinds={"kafka"},
                group_name=spec.name,
                metadata={"topic": spec.output_topic},
            ),
            dg.AssetSpec(
                dlq_key,
                deps=[source_key],
                description=topics.TOPIC_BY_NAME[spec.dlq_topic].description,
                kinds={"kafka"},
                group_name=spec.name,
                metadata={"topic": spec.dlq_topic},
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
    ) -> Iterator[dg.MaterializeResult]:
        kafka.ensure_topics()
        elasticsearch.ensure_indices()
        try:
            group, planned, lost = _ranges_for_run(context, spec, config, kafka)
        except OffsetAheadOfLogError as exc:
            raise dg.Failure(str(exc)) from None
        if lost:
            _report_retention_loss(context, spec, lost, elasticsearch)
        context.log.info(
            f"{spec.name}: {sum(r.size for r in planned)} records in {len(planned)} partition "
            f"range(s) under group {group}"
        )
        runner = StageRunner(
            spec,
            kafka,
            elasticsearch,
            fee_model.load(),
            batch_size=config.batch_size,
            logger=context.log,
            max_reject_ratio=config.max_reject_ratio,
            faults=FaultInjector.parse(fault_point),
        )
        stats = runner.run(group, planned)
        common = _common_metadata(stats, planned, group)
        yield from _index_materializations(
            context,
            index_key,
            stats,
            {
                **common,
                "index": spec.index,
                "indexed": dg.MetadataValue.int(stats.indexed),
                "unchanged": dg.MetadataValue.int(stats.unchanged),
                "es_item_retries": dg.MetadataValue.int(stats.es_retries),
            },
        )
        spans = stats.deliveries.per_partition(spec.output_topic)
        yield dg.MaterializeResult(
            asset_key=output_key,
            metadata={
                **common,
                "topic": spec.output_topic,
                "produced": dg.MetadataValue.int(stats.produced(spec.output_topic)),
                **{name: dg.MetadataValue.int(n) for name, n in stats.counters.items()},
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

    return _stage


def build_stage_job(spec: StageSpec, stage_assets: dg.AssetsDefinition) -> Any:
    """The stage's job; its asset checks run on their own schedule, not after every range."""
    return dg.define_asset_job(
        spec.name,
        selection=dg.AssetSelection.assets(stage_assets).without_checks(),
        description=f"Process {spec.source_topic} offset ranges: {spec.summary}",
        tags={STAGE_TAG: spec.name},
    )
