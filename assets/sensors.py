"""Sensors that turn consumer lag into stage runs, one run per lagging topic-partition.

A run follows its partition (``follow`` in its run config): it stays on it, processing what
arrives, until the partition has been idle or the run is old; the sensor launches the next one
when lag returns and no run of that partition is in flight.

Each tick is cheap and bounded: the group's committed offsets and the topic's watermarks (read
in a child process, see arbitrage/clients/kafka_offsets.py) plus a few run-storage queries. What to
request is decided by arbitrage/domain/sensor_decisions.py; this module gathers its inputs from the
Dagster instance and turns the decision into a ``SensorResult``. Requests are tagged with the
topic-partition, so dagster.yaml's tag concurrency limit also allows one such run at a time.
"""

import time
from typing import Any

import dagster as dg

from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.kafka_offsets import (
    KafkaUnavailableError,
    LagReaderCrashedError,
    PartitionLag,
)
from arbitrage.domain.sensor_decisions import (
    FinishedRun,
    SensorCursor,
    SensorPolicy,
    decide_tick,
    partition_tag_value,
)
from arbitrage.domain.stage_specs import StageSpec
from arbitrage.engine.ranges import PartitionRange
from assets.keys import topic_asset_key
from assets.stage_assets import PARTITION_TAG, STAGE_TAG, stage_run_config
from resources.kafka import KafkaResource

DEFAULT_BACKOFF_BASE_S = 15.0
DEFAULT_BACKOFF_CAP_S = 600.0
# A live run that takes this long is stuck: run monitoring cancels it, which frees its
# topic-partition's concurrency slot so the partition gets a new run. The default run launcher
# cannot see a dead worker whose code server died with it, so this bound is what unblocks the
# partition then. pipelines/definitions.py sets it from ARBITRAGE_RUN_MAX_S.
DEFAULT_MAX_RUNTIME_S = 1200

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
# Bounds the tick's run-storage query; in-flight runs are a handful (tag limit: one per partition).
IN_FLIGHT_LIMIT = 1000
# Run tags Dagster sets on partitioned runs: such runs are replays under their own group.
_REPLAY_TAGS = ("dagster/partition", "dagster/asset_partition_range_start")
# Live runs go ahead of queued replay (backfill) runs.
LIVE_RUN_PRIORITY = "10"
# define_asset_job's return type is not exported by dagster; only `.name` and `target=` are used.
AssetJob = Any


def _busy_partitions(
    instance: dg.DagsterInstance, job_name: str, stage_keys: set[dg.AssetKey]
) -> tuple[set[str], bool]:
    """Topic-partition tags of this stage's in-flight runs, and whether an in-flight untagged
    live run (a manual drain) touches every partition."""
    busy: set[str] = set()
    draining = False
    for record in instance.get_run_records(
        dg.RunsFilter(statuses=IN_FLIGHT), limit=IN_FLIGHT_LIMIT
    ):
        run = record.dagster_run
        # Launched from the UI's asset graph a run belongs to the implicit asset job, so the
        # asset selection identifies the stage as well as the job name does.
        ours = run.job_name == job_name or bool(stage_keys & set(run.asset_selection or ()))
        if not ours:
            continue
        if PARTITION_TAG in run.tags:
            busy.add(run.tags[PARTITION_TAG])
        elif not any(tag in run.tags for tag in _REPLAY_TAGS):
            draining = True
    return busy, draining


def _last_finished_run(instance: dg.DagsterInstance, tag_value: str) -> FinishedRun | None:
    records = instance.get_run_records(
        dg.RunsFilter(tags={PARTITION_TAG: tag_value}, statuses=FINISHED), limit=1
    )
    if not records:
        return None
    run = records[0].dagster_run
    return FinishedRun(run.run_id, run.status == dg.DagsterRunStatus.SUCCESS, records[0].end_time)


def _upstream_running(
    instance: dg.DagsterInstance, spec: StageSpec, failed_within_s: float
) -> bool:
    """Whether ``spec``'s stage has a run queued or running, or is about to get one: its
    newest finished run did not fail within ``failed_within_s`` (with lag, its sensor launches
    on this very tick). A stage whose runs keep failing has lag too, but nothing is on its way
    from it: downstream runs started for it would only idle out and start again."""
    if instance.get_run_records(
        dg.RunsFilter(statuses=IN_FLIGHT, tags={STAGE_TAG: spec.name}), limit=1
    ):
        return True
    finished = instance.get_run_records(
        dg.RunsFilter(statuses=FINISHED, tags={STAGE_TAG: spec.name}), limit=1
    )
    if not finished or finished[0].dagster_run.status != dg.DagsterRunStatus.FAILURE:
        return True
    ended = finished[0].end_time
    return ended is not None and time.time() - ended > failed_within_s


def _has_lag(kafka: KafkaClient, spec: StageSpec) -> bool:
    """Whether ``spec``'s live group has records to process (False when that cannot be read:
    this stage's own lag still starts its runs)."""
    try:
        return any(
            lag.lag > 0 for lag in kafka.lag_in_child_process(spec.live_group, spec.source_topic)
        )
    except (KafkaUnavailableError, LagReaderCrashedError):
        return False


def _lag_observation(
    asset_key: dg.AssetKey, group: str, topic: str, lags: list[PartitionLag]
) -> dg.AssetObservation:
    rows = ["| partition | committed | high watermark | lag |", "|---|---|---|---|"]
    rows += [
        f"| {lag.partition} | {'—' if lag.committed is None else lag.committed} "
        f"| {lag.high_watermark} | {lag.lag} |"
        for lag in lags
    ]
    metadata: dict[str, Any] = {
        "consumer_group": group,
        "topic": topic,
        "lag": dg.MetadataValue.int(sum(lag.lag for lag in lags)),
        "lag_by_partition": dg.MetadataValue.md("\n".join(rows)),
    }
    # One numeric entry per partition, so the UI can plot each partition's lag over time.
    metadata.update(
        {f"lag_partition_{lag.partition}": dg.MetadataValue.int(lag.lag) for lag in lags}
    )
    return dg.AssetObservation(asset_key=asset_key, metadata=metadata)


def build_stage_sensor(
    spec: StageSpec,
    job: AssetJob,
    stage_assets: dg.AssetsDefinition,
    *,
    name: str | None = None,
    max_records: int,
    minimum_interval_seconds: int,
    default_status: dg.DefaultSensorStatus,
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
    backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S,
    max_runtime_s: int = DEFAULT_MAX_RUNTIME_S,
    upstream: StageSpec | None = None,
) -> dg.SensorDefinition:
    """A sensor requesting one ``job`` run per lagging partition of the stage's source topic;
    with ``upstream`` (the stage writing that topic), also one per idle partition while the
    upstream stage has lag and a run working on it or about to start (on the same tick as
    the upstream's own run: both run starts overlap instead of following one another)."""
    group, topic = spec.live_group, spec.source_topic
    source_key = topic_asset_key(topic)
    stage_keys = set(stage_assets.keys)
    policy = SensorPolicy(max_records, backoff_base_s, backoff_cap_s)

    @dg.sensor(
        name=name or f"{spec.name}_sensor",
        target=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            f"Lag of group '{group}' on {topic} → one {job.name} run per lagging partition "
            f"(≤ {max_records} records each); reports the lag on {source_key.to_user_string()}."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource) -> dg.SensorResult:
        kafka_client = kafka.get_client()
        cursor = SensorCursor.parse(context.cursor)
        try:
            # In a child process: a native crash in the Kafka client costs this tick only,
            # not the code server every sensor lives in.
            lags = kafka_client.lag_in_child_process(group, topic)
        except (KafkaUnavailableError, LagReaderCrashedError) as exc:
            # A fresh cluster has no topics until the first run creates them: nothing to do yet.
            return dg.SensorResult(skip_reason=str(exc), cursor=cursor.dump())
        decision = decide_tick(
            job.name,
            topic,
            lags,
            cursor,
            time.time(),
            policy,
            in_flight=lambda: _busy_partitions(context.instance, job.name, stage_keys),
            last_finished=lambda tag: _last_finished_run(context.instance, tag),
            upstream_busy=upstream is not None
            and _has_lag(kafka_client, upstream)
            and _upstream_running(context.instance, upstream, backoff_cap_s),
        )
        events = [_lag_observation(source_key, group, topic, lags)] if decision.observe_lag else []
        if decision.waiting:
            context.log.info("backing off: " + "; ".join(decision.waiting))
        for anomaly in decision.anomalies:
            context.log.warning(anomaly)
        if not decision.requests:
            return dg.SensorResult(
                skip_reason=decision.skip_reason, cursor=cursor.dump(), asset_events=events
            )
        requests = [
            dg.RunRequest(
                run_key=request.run_key,
                run_config=stage_run_config(
                    spec,
                    [PartitionRange(request.partition, request.start, request.end)],
                    follow=True,
                ),
                tags={
                    PARTITION_TAG: partition_tag_value(topic, request.partition),
                    STAGE_TAG: spec.name,
                    "dagster/max_runtime": str(max_runtime_s),
                    "dagster/priority": LIVE_RUN_PRIORITY,
                },
            )
            for request in decision.requests
        ]
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump(), asset_events=events)

    return _sensor
