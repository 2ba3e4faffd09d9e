"""Sensors that turn consumer lag into stage runs, one offset range per topic-partition.

Each tick is cheap and bounded: the group's committed offsets and the topic's watermarks (admin
requests, no message bodies) plus a few run-storage queries. For each partition with lag and no
run of it queued or in progress, the sensor requests one run of its stage over
``[committed, min(high, committed + max_records))``, tagged with the topic-partition so that
dagster.yaml's tag concurrency limit also allows at most one such run at a time.

A ``run_key`` is de-duplicated forever, so keys carry a per-partition request counter from the
cursor: a range whose run failed is requested again, after an exponential, capped backoff.
"""

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

from assets.keepa_pull import automation_default
from assets.keys import PRODUCTS_ENRICHED, RAW_UPDATES
from assets.stages import (
    LIVE_GROUP,
    PARTITION_TAG,
    STAGE_TAG,
    arbitrage_job,
    arbitrage_stage,
    enrichment_job,
    enrichment_stage,
)
from resources.kafka import KafkaResource
from resources.kafka_offsets import KafkaUnavailableError, LagReaderCrashedError, PartitionLag
from resources.stage_runner import ARBITRAGE, ENRICHMENT, SOURCE_TOPIC

# Tunables, read once when the code location loads (like KEEPA_PULL_CRON).
SENSOR_INTERVAL_ENV = "ARBITRAGE_SENSOR_INTERVAL_S"
MAX_RECORDS_ENV = "ARBITRAGE_SENSOR_MAX_RECORDS"
# The sensor daemon loops every 5 s and ticks a sensor when its minimum interval has passed
# since the last tick; an interval of 5 s aliases to ticks every 10 s, so ask for less to tick
# on every loop (every ~5 s).
DEFAULT_INTERVAL_S = 3
DEFAULT_MAX_RECORDS = 20_000
DEFAULT_BACKOFF_BASE_S = 15.0
DEFAULT_BACKOFF_CAP_S = 600.0
# A live range run that takes this long is stuck: run monitoring cancels it, which frees its
# topic-partition's concurrency slot so the range is retried. A full 20 000-record range takes
# seconds; the default run launcher cannot see a dead worker whose code server died with it,
# so this bound is what unblocks the partition then.
DEFAULT_MAX_RUNTIME_S = 300
# Idle lag is reported at least this often, changed lag on every tick.
OBSERVATION_HEARTBEAT_S = 60.0

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
# define_asset_job's return type is not exported by dagster; only `.name` and `target=` are used.
AssetJob = Any
# Live runs go ahead of queued replay (backfill) runs.
LIVE_RUN_PRIORITY = "10"


def sensor_default_status() -> dg.DefaultSensorStatus:
    """Running in the demo (ARBITRAGE_AUTOMATION=on), stopped in tests and fresh deployments."""
    return dg.DefaultSensorStatus(automation_default().value)


def partition_tag_value(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


@dataclass
class PartitionState:
    """What a sensor remembers about one source partition between ticks."""

    requests: int = 0  # runs requested so far: makes every run_key unique
    failures: int = 0  # consecutive failed (or canceled) runs
    last_failed_run: str | None = None
    retry_after: float = 0.0  # epoch seconds; no new run before then


@dataclass
class SensorCursor:
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    observed_lag: dict[int, int] | None = None
    observed_at: float = 0.0

    @classmethod
    def parse(cls, raw: str | None) -> "SensorCursor":
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(
            partitions={int(p): PartitionState(**s) for p, s in data["partitions"].items()},
            observed_lag=(
                {int(p): lag for p, lag in data["observed_lag"].items()}
                if data.get("observed_lag") is not None
                else None
            ),
            observed_at=data.get("observed_at", 0.0),
        )

    def dump(self) -> str:
        return json.dumps(
            {
                "partitions": {str(p): asdict(s) for p, s in sorted(self.partitions.items())},
                "observed_lag": (
                    {str(p): lag for p, lag in sorted(self.observed_lag.items())}
                    if self.observed_lag is not None
                    else None
                ),
                "observed_at": self.observed_at,
            },
            sort_keys=True,
        )


def backoff_seconds(failures: int, base_s: float, cap_s: float) -> float:
    """base, 2·base, 4·base, … after 1, 2, 3, … consecutive failures, never above cap."""
    return min(cap_s, base_s * 2 ** max(0, failures - 1))


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


def _note_last_finished_run(
    instance: dg.DagsterInstance,
    tag_value: str,
    state: PartitionState,
    backoff_base_s: float,
    backoff_cap_s: float,
) -> None:
    """Fold the partition's newest finished run into its state: a new failure extends the
    backoff, a success clears it."""
    records = instance.get_run_records(
        dg.RunsFilter(tags={PARTITION_TAG: tag_value}, statuses=FINISHED), limit=1
    )
    if not records:
        return
    record = records[0]
    if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS:
        state.failures, state.last_failed_run, state.retry_after = 0, None, 0.0
        return
    if record.dagster_run.run_id == state.last_failed_run:
        return
    state.failures += 1
    state.last_failed_run = record.dagster_run.run_id
    ended = record.end_time or time.time()
    state.retry_after = ended + backoff_seconds(state.failures, backoff_base_s, backoff_cap_s)


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
    name: str,
    job: AssetJob,
    stage: str,
    stage_asset: dg.AssetsDefinition,
    source_asset: dg.AssetKey,
    *,
    max_records: int = DEFAULT_MAX_RECORDS,
    minimum_interval_seconds: int = DEFAULT_INTERVAL_S,
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
    backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S,
    max_runtime_s: int = DEFAULT_MAX_RUNTIME_S,
    default_status: dg.DefaultSensorStatus | None = None,
) -> dg.SensorDefinition:
    """A sensor requesting one ``job`` run per lagging partition of the stage's source topic."""
    group = LIVE_GROUP[stage]
    topic = SOURCE_TOPIC[stage]
    op_name = stage_asset.op.name
    stage_keys = set(stage_asset.keys)

    @dg.sensor(
        name=name,
        target=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status or sensor_default_status(),
        description=(
            f"Lag of group '{group}' on {topic} → one {job.name} run per lagging partition "
            f"(≤ {max_records} records each); reports the lag on {source_asset.to_user_string()}."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource) -> dg.SensorResult:
        cursor = SensorCursor.parse(context.cursor)
        try:
            # In a child process: a native crash in the Kafka client costs this tick only,
            # not the code server every sensor lives in.
            lags = kafka.lag_in_child_process(group, topic)
        except (KafkaUnavailableError, LagReaderCrashedError) as exc:
            # A fresh cluster has no topics until the first run creates them: nothing to do yet.
            return dg.SensorResult(skip_reason=str(exc), cursor=cursor.dump())
        now = time.time()

        events: list[dg.AssetObservation] = []
        current = {lag.partition: lag.lag for lag in lags}
        if current != cursor.observed_lag or now - cursor.observed_at >= OBSERVATION_HEARTBEAT_S:
            events.append(_lag_observation(source_asset, group, topic, lags))
            cursor.observed_lag, cursor.observed_at = current, now

        lagging = [lag for lag in lags if lag.lag > 0]
        if not lagging:
            return dg.SensorResult(
                skip_reason=f"no lag on {topic}", cursor=cursor.dump(), asset_events=events
            )
        busy, draining = _busy_partitions(context.instance, job.name, stage_keys)
        if draining:
            return dg.SensorResult(
                skip_reason=f"an untagged {job.name} run is draining every partition",
                cursor=cursor.dump(),
                asset_events=events,
            )

        requests: list[dg.RunRequest] = []
        waiting: list[str] = []
        for lag in lagging:
            tag_value = partition_tag_value(topic, lag.partition)
            if tag_value in busy:
                continue
            state = cursor.partitions.setdefault(lag.partition, PartitionState())
            _note_last_finished_run(
                context.instance, tag_value, state, backoff_base_s, backoff_cap_s
            )
            if now < state.retry_after:
                waiting.append(
                    f"{tag_value} after {state.failures} failure(s), "
                    f"retry in {state.retry_after - now:.0f}s"
                )
                continue
            start = lag.start_offset
            end = min(lag.high_watermark, start + max_records)
            state.requests += 1
            requests.append(
                dg.RunRequest(
                    run_key=f"{tag_value}:{start}-{end}#{state.requests}",
                    run_config={
                        "ops": {
                            op_name: {
                                "config": {
                                    "offset_ranges": [
                                        {"partition": lag.partition, "start": start, "end": end}
                                    ]
                                }
                            }
                        }
                    },
                    tags={
                        PARTITION_TAG: tag_value,
                        STAGE_TAG: stage,
                        "dagster/max_runtime": str(max_runtime_s),
                        "dagster/priority": LIVE_RUN_PRIORITY,
                    },
                )
            )
        if waiting:
            context.log.info("backing off: " + "; ".join(waiting))
        if not requests:
            reason = "; ".join(waiting) or "every lagging partition has a run in flight"
            return dg.SensorResult(skip_reason=reason, cursor=cursor.dump(), asset_events=events)
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump(), asset_events=events)

    return _sensor


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


enrichment_sensor = build_stage_sensor(
    "enrichment_sensor",
    enrichment_job,
    ENRICHMENT,
    enrichment_stage,
    RAW_UPDATES,
    max_records=_env_int(MAX_RECORDS_ENV, DEFAULT_MAX_RECORDS),
    minimum_interval_seconds=_env_int(SENSOR_INTERVAL_ENV, DEFAULT_INTERVAL_S),
)
arbitrage_sensor = build_stage_sensor(
    "arbitrage_sensor",
    arbitrage_job,
    ARBITRAGE,
    arbitrage_stage,
    PRODUCTS_ENRICHED,
    max_records=_env_int(MAX_RECORDS_ENV, DEFAULT_MAX_RECORDS),
    minimum_interval_seconds=_env_int(SENSOR_INTERVAL_ENV, DEFAULT_INTERVAL_S),
)
