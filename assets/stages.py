"""The enrichment and arbitrage stages as multi-assets over Kafka offset ranges.

Topics are single continuous logs, so the Kafka assets are unpartitioned; the Elasticsearch
assets are partitioned by the hour of the source messages' Kafka timestamps.

A run without a partition key is a live run: it processes the offset ranges in its config (the
sensors fill them in) or, with no config, drains every partition from the group's committed
offset to the high watermark seen at start, and records the hours it indexed as partition
materializations. A run with an hourly partition key is a replay (a backfill): it reads exactly
the source messages whose Kafka timestamps fall in that hour, under a separate consumer group,
so the live group's offsets never move.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from assets.keys import (
    ARBITRAGE_ALERTS,
    ES_ALERTS,
    ES_PRODUCTS,
    GROUP_ARBITRAGE,
    GROUP_ENRICHMENT,
    PRODUCTS_ENRICHED,
    PRODUCTS_ENRICHED_DLQ,
    RAW_UPDATES,
    RAW_UPDATES_DLQ,
)
from assets.partitions import HOURLY, hour_partition_key
from pipelines import topics
from resources.elasticsearch import ElasticsearchResource
from resources.fees import FeeModelResource
from resources.kafka import KafkaResource
from resources.stage_runner import (
    ARBITRAGE,
    ENRICHMENT,
    PartitionRange,
    StageRunner,
    StageStats,
    plan_ranges,
)

# Run tag naming the topic-partition a run works on; dagster.yaml limits it to one run per value.
PARTITION_TAG = "arbitrage/topic_partition"
STAGE_TAG = "arbitrage/stage"

LIVE_GROUP = {ENRICHMENT: topics.ENRICHMENT_GROUP, ARBITRAGE: topics.ARBITRAGE_GROUP}


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


def _is_replay(context: dg.AssetExecutionContext) -> bool:
    """One hour (a partition key) or several (a single-run backfill's key range)."""
    return context.has_partition_key or context.has_partition_key_range


def _ranges_for_run(
    context: dg.AssetExecutionContext,
    config: StageRunConfig,
    kafka: KafkaResource,
    stage: str,
    source_topic: str,
) -> tuple[str, list[PartitionRange]]:
    """The consumer group to commit under and the ranges to process."""
    if _is_replay(context):
        window = context.partition_time_window
        starts = kafka.offsets_for_time(source_topic, int(window.start.timestamp() * 1000))
        ends = kafka.offsets_for_time(source_topic, int(window.end.timestamp() * 1000))
        group = f"{topics.REPLAY_GROUP_PREFIX}{LIVE_GROUP[stage]}"
        ranges = [PartitionRange(p, starts[p], ends[p]) for p in sorted(starts)]
        context.log.info(
            f"replaying {source_topic} {window.start} – {window.end} under group {group}"
        )
        return group, ranges
    group = LIVE_GROUP[stage]
    if config.offset_ranges:
        return group, [PartitionRange(r.partition, r.start, r.end) for r in config.offset_ranges]
    return group, plan_ranges(
        kafka, group, source_topic, max_records=config.max_records_per_partition
    )


def _ranges_table(stats: StageStats, planned: list[PartitionRange]) -> dg.MetadataValue:
    lines = ["| partition | planned | processed | records |", "|---|---|---|---|"]
    for span in planned:
        done = stats.ranges.get(span.partition)
        processed = f"{done[0]}–{done[1]}" if done else "—"
        count = done[1] - done[0] if done else 0
        lines.append(f"| {span.partition} | {span.start}–{span.end} | {processed} | {count} |")
    return dg.MetadataValue.md("\n".join(lines))


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


def _offsets_written(stats: StageStats, topic: str) -> dg.MetadataValue:
    spans = stats.deliveries.per_partition(topic)
    return dg.MetadataValue.json({str(p): [low, high] for p, (low, high) in spans.items()})


def _dlq_metadata(stats: StageStats, topic: str) -> dict[str, Any]:
    return {
        "topic": topic,
        "messages_written": dg.MetadataValue.int(stats.produced(topic)),
        "newest_reasons": dg.MetadataValue.json(stats.dlq_reasons[-5:]),
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


def _run_stage(
    context: dg.AssetExecutionContext,
    stage: str,
    source_topic: str,
    config: StageRunConfig,
    kafka: KafkaResource,
    elasticsearch: ElasticsearchResource,
    fee_model: FeeModelResource,
) -> tuple[StageStats, str, list[PartitionRange]]:
    kafka.ensure_topics()
    elasticsearch.ensure_indices()
    group, planned = _ranges_for_run(context, config, kafka, stage, source_topic)
    context.log.info(
        f"{stage}: {sum(r.size for r in planned)} records in {len(planned)} partition range(s) "
        f"under group {group}"
    )
    runner = StageRunner(
        stage,
        kafka,
        elasticsearch,
        fee_model.load(),
        batch_size=config.batch_size,
        logger=context.log,
    )
    stats = runner.run(group, planned)
    return stats, group, planned


@dg.multi_asset(
    name="enrichment_stage",
    specs=[
        dg.AssetSpec(
            ES_PRODUCTS,
            deps=[RAW_UPDATES],
            description="Enriched products in Elasticsearch, one document per ASIN (newest wins).",
            kinds={"elasticsearch"},
            group_name=GROUP_ENRICHMENT,
            metadata={"index": topics.PRODUCTS_INDEX},
            partitions_def=HOURLY,
            skippable=True,
        ),
        dg.AssetSpec(
            PRODUCTS_ENRICHED,
            deps=[RAW_UPDATES],
            description="Validated, enriched products on Kafka, keyed by ASIN.",
            kinds={"kafka"},
            group_name=GROUP_ENRICHMENT,
            metadata={"topic": topics.PRODUCTS_ENRICHED},
        ),
        dg.AssetSpec(
            RAW_UPDATES_DLQ,
            deps=[RAW_UPDATES],
            description="Raw updates the enrichment stage could not use, with the reason.",
            kinds={"kafka"},
            group_name=GROUP_ENRICHMENT,
            metadata={"topic": topics.RAW_UPDATES_DLQ},
        ),
    ],
    can_subset=False,
    # A backfill of a range replays its whole time window in one run (and makes
    # `dagster asset materialize --partition-range` possible).
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def enrichment_stage(
    context: dg.AssetExecutionContext,
    config: StageRunConfig,
    kafka: KafkaResource,
    elasticsearch: ElasticsearchResource,
    fee_model: FeeModelResource,
) -> Iterator[dg.MaterializeResult]:
    """Validate and enrich raw updates; index them and pass them on; bad records to the DLQ."""
    stats, group, planned = _run_stage(
        context, ENRICHMENT, topics.RAW_UPDATES, config, kafka, elasticsearch, fee_model
    )
    common = _common_metadata(stats, planned, group)
    yield from _index_materializations(
        context,
        ES_PRODUCTS,
        stats,
        {
            **common,
            "index": topics.PRODUCTS_INDEX,
            "indexed": dg.MetadataValue.int(stats.indexed),
            "unchanged": dg.MetadataValue.int(stats.unchanged),
            "es_item_retries": dg.MetadataValue.int(stats.es_retries),
        },
    )
    yield dg.MaterializeResult(
        asset_key=PRODUCTS_ENRICHED,
        metadata={
            **common,
            "topic": topics.PRODUCTS_ENRICHED,
            "produced": dg.MetadataValue.int(stats.produced(topics.PRODUCTS_ENRICHED)),
            "offsets_written": _offsets_written(stats, topics.PRODUCTS_ENRICHED),
        },
    )
    yield dg.MaterializeResult(
        asset_key=RAW_UPDATES_DLQ,
        metadata={**common, **_dlq_metadata(stats, topics.RAW_UPDATES_DLQ)},
    )


@dg.multi_asset(
    name="arbitrage_stage",
    specs=[
        dg.AssetSpec(
            ARBITRAGE_ALERTS,
            deps=[PRODUCTS_ENRICHED],
            description="Profitable buy→sell routes after fees, VAT and FX, keyed by ASIN.",
            kinds={"kafka"},
            group_name=GROUP_ARBITRAGE,
            metadata={"topic": topics.ARBITRAGE_ALERTS},
        ),
        dg.AssetSpec(
            ES_ALERTS,
            deps=[PRODUCTS_ENRICHED],
            description="Alerts in Elasticsearch, one document per alert id (never doubled).",
            kinds={"elasticsearch"},
            group_name=GROUP_ARBITRAGE,
            metadata={"index": topics.ALERTS_INDEX},
            partitions_def=HOURLY,
            skippable=True,
        ),
        dg.AssetSpec(
            PRODUCTS_ENRICHED_DLQ,
            deps=[PRODUCTS_ENRICHED],
            description="Enriched products the arbitrage stage could not use, with the reason.",
            kinds={"kafka"},
            group_name=GROUP_ARBITRAGE,
            metadata={"topic": topics.PRODUCTS_ENRICHED_DLQ},
        ),
    ],
    can_subset=False,
    # A backfill of a range replays its whole time window in one run (and makes
    # `dagster asset materialize --partition-range` possible).
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def arbitrage_stage(
    context: dg.AssetExecutionContext,
    config: StageRunConfig,
    kafka: KafkaResource,
    elasticsearch: ElasticsearchResource,
    fee_model: FeeModelResource,
) -> Iterator[dg.MaterializeResult]:
    """Apply the fee model to enriched products and raise each new profitable route once."""
    stats, group, planned = _run_stage(
        context, ARBITRAGE, topics.PRODUCTS_ENRICHED, config, kafka, elasticsearch, fee_model
    )
    common = _common_metadata(stats, planned, group)
    yield dg.MaterializeResult(
        asset_key=ARBITRAGE_ALERTS,
        metadata={
            **common,
            "topic": topics.ARBITRAGE_ALERTS,
            "alerts_raised": dg.MetadataValue.int(stats.alerts_raised),
            "alerts_already_known": dg.MetadataValue.int(stats.alerts_already_known),
            "offsets_written": _offsets_written(stats, topics.ARBITRAGE_ALERTS),
        },
    )
    yield from _index_materializations(
        context,
        ES_ALERTS,
        stats,
        {
            **common,
            "index": topics.ALERTS_INDEX,
            "indexed": dg.MetadataValue.int(stats.indexed),
            "unchanged": dg.MetadataValue.int(stats.unchanged),
        },
    )
    yield dg.MaterializeResult(
        asset_key=PRODUCTS_ENRICHED_DLQ,
        metadata={**common, **_dlq_metadata(stats, topics.PRODUCTS_ENRICHED_DLQ)},
    )


# The asset checks run on their own schedule (assets/checks.py), not after every offset range.
enrichment_job = dg.define_asset_job(
    "enrichment",
    selection=dg.AssetSelection.assets(enrichment_stage).without_checks(),
    description="Process raw.keepa_updates offset ranges into Elasticsearch and products.enriched.",
    tags={STAGE_TAG: ENRICHMENT},
)
arbitrage_job = dg.define_asset_job(
    "arbitrage",
    selection=dg.AssetSelection.assets(arbitrage_stage).without_checks(),
    description="Process products.enriched offset ranges into arbitrage alerts.",
    tags={STAGE_TAG: ARBITRAGE},
)
