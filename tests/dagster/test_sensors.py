"""Sensor ticks against the real broker: ranges, tags, in-flight blocking, retries with backoff."""

import json
import time
from datetime import UTC, datetime

import dagster as dg
import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.sensor_decisions import SensorCursor
from arbitrage.domain.stage_specs import ENRICHMENT
from arbitrage.settings import Settings
from assets.keys import RAW_UPDATES_KEY
from assets.sensors import build_stage_sensor
from assets.stage_assets import PARTITION_TAG, STAGE_TAG, build_stage_assets, build_stage_job
from pipelines.definitions import RUN_MAX_GRACE_S, defs
from resources.kafka import kafka_resource
from tests.dagster.helpers import execute_request, opportunity, produce_updates, temp_instance

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_pipeline")]

UNREACHABLE_ES = ElasticsearchClient(url="http://127.0.0.1:9", max_retries=1)


def enrichment_sensor(name: str, **policy: float) -> dg.SensorDefinition:
    """The enrichment sensor with its own name and policy (max_records, backoff)."""
    assets = build_stage_assets(ENRICHMENT)
    return build_stage_sensor(
        ENRICHMENT,
        build_stage_job(ENRICHMENT, assets),
        assets,
        name=name,
        max_records=int(policy.pop("max_records", 20_000)),
        minimum_interval_seconds=3,
        default_status=dg.DefaultSensorStatus.STOPPED,
        **policy,
    )


def tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    kafka: KafkaClient,
    cursor: str | None = None,
) -> dg.SensorResult:
    # Closed after the tick: a context left open keeps the instance it opened from the
    # instance's ref as Dagster's current one, and a later definitions load in this process
    # fails on it once that instance is collected.
    with dg.build_sensor_context(
        instance=instance, resources={"kafka": kafka_resource(Settings.from_env())}, cursor=cursor
    ) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def skipped(result: dg.SensorResult) -> str:
    return result.skip_reason.skip_message or "" if result.skip_reason else ""


def ranges(result: dg.SensorResult, op: str = "enrichment_stage") -> dict[int, tuple[int, int]]:
    found = {}
    for request in result.run_requests or []:
        (span,) = request.run_config["ops"][op]["config"]["offset_ranges"]
        found[span["partition"]] = (span["start"], span["end"])
    return found


def produce_raw(kafka: KafkaClient, per_partition: dict[int, int], prefix: str) -> None:
    updates, partitions = [], []
    for partition, count in per_partition.items():
        for n in range(count):
            updates.append(opportunity(f"B0{prefix}{partition}{n:05d}", at=datetime.now(UTC)))
            partitions.append(partition)
    produce_updates(kafka, topics.RAW_UPDATES, updates, partitions)


def test_sensor_requests_one_bounded_range_per_lagging_partition(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    produce_raw(kafka, {0: 5, 1: 3}, "SA")
    sensor = defs.resolve_sensor_def("enrichment_sensor")
    with temp_instance() as instance:
        first = tick(sensor, instance, kafka)
        assert ranges(first) == {0: (0, 5), 1: (0, 3)}
        for request in first.run_requests or []:
            partition = request.run_config["ops"]["enrichment_stage"]["config"]["offset_ranges"]
            tag = f"{topics.RAW_UPDATES}-{partition[0]['partition']}"
            assert request.tags[PARTITION_TAG] == tag
            assert request.tags[STAGE_TAG] == ENRICHMENT.name
            assert request.run_key is not None and request.run_key.startswith(tag)
            # The run follows its partition past the range; run monitoring allows the window.
            assert request.run_config["ops"]["enrichment_stage"]["config"]["follow"] is True
            limit = Settings.from_env().run_max_s + RUN_MAX_GRACE_S
            assert request.tags["dagster/max_runtime"] == str(limit)
        # The lag is reported on the source topic asset, per partition.
        (observation,) = first.asset_events
        assert observation.asset_key == RAW_UPDATES_KEY
        assert observation.metadata["lag"].value == 8
        assert [observation.metadata[f"lag_partition_{p}"].value for p in range(3)] == [5, 3, 0]

        # A smaller max_records bounds each range.
        small = enrichment_sensor("small", max_records=2)
        assert ranges(tick(small, instance, kafka)) == {0: (0, 2), 1: (0, 2)}

        # Once the runs have committed, nothing is lagging; new messages start where they stopped.
        for request in first.run_requests or []:
            assert execute_request(instance, "enrichment", request).success
        idle = tick(sensor, instance, kafka, first.cursor)
        assert not idle.run_requests and "no lag" in skipped(idle)
        produce_raw(kafka, {0: 2}, "SB")
        again = tick(sensor, instance, kafka, idle.cursor)
        assert ranges(again) == {0: (5, 7)}
        assert again.run_requests and again.run_requests[0].run_key != first.run_requests[0].run_key

        # The arbitrage sensor then sees the enriched products, and its runs raise the alerts.
        arbitrage = defs.resolve_sensor_def("arbitrage_sensor")
        enriched = tick(arbitrage, instance, kafka)
        spans = ranges(enriched, "arbitrage_stage")
        # The ranges hold the 8 products (their offsets include the transactions' markers).
        assert kafka.count_messages(topics.PRODUCTS_ENRICHED, spans) == 8
        for request in enriched.run_requests or []:
            assert request.tags[PARTITION_TAG].startswith(topics.PRODUCTS_ENRICHED + "-")
            assert execute_request(instance, "arbitrage", request).success
        assert es.count(topics.ALERTS_INDEX) == 8


def test_a_run_in_flight_blocks_a_new_request_for_its_partition(kafka: KafkaClient) -> None:
    produce_raw(kafka, {0: 2, 1: 2}, "SC")
    sensor = defs.resolve_sensor_def("enrichment_sensor")
    job = defs.resolve_job_def("enrichment")
    with temp_instance() as instance:
        instance.create_run_for_job(
            job_def=job,
            tags={PARTITION_TAG: f"{topics.RAW_UPDATES}-0"},
            status=dg.DagsterRunStatus.STARTED,
        )
        assert ranges(tick(sensor, instance, kafka)) == {1: (0, 2)}

        # An untagged live run (a manual drain) may touch every partition: wait for it.
        instance.create_run_for_job(job_def=job, status=dg.DagsterRunStatus.STARTED)
        blocked = tick(sensor, instance, kafka)
        assert not blocked.run_requests and "draining" in skipped(blocked)


def test_a_failed_range_is_requested_again_after_a_growing_backoff(kafka: KafkaClient) -> None:
    produce_raw(kafka, {2: 3}, "SD")
    sensor = enrichment_sensor("retrying", backoff_base_s=1.0, backoff_cap_s=30.0)
    with temp_instance() as instance:
        first = tick(sensor, instance, kafka)
        (request,) = first.run_requests or []
        assert ranges(first) == {2: (0, 3)}
        failed = execute_request(instance, "enrichment", request, {"elasticsearch": UNREACHABLE_ES})
        assert not failed.success

        # Right after the failure the partition waits; then the same range is asked for again
        # under a new run_key (a run_key alone is de-duplicated forever).
        waiting = tick(sensor, instance, kafka, first.cursor)
        assert not waiting.run_requests and "1 failure" in skipped(waiting)
        state = SensorCursor.parse(waiting.cursor).partitions[2]
        assert state.failures == 1 and state.last_failed_run == failed.run_id
        time.sleep(max(0.0, state.retry_after - time.time()) + 0.1)
        retry = tick(sensor, instance, kafka, waiting.cursor)
        (second,) = retry.run_requests or []
        assert ranges(retry) == {2: (0, 3)} and second.run_key != request.run_key

        # A second failure doubles the wait.
        failed_again = execute_request(
            instance, "enrichment", second, {"elasticsearch": UNREACHABLE_ES}
        )
        assert not failed_again.success
        waiting = tick(sensor, instance, kafka, retry.cursor)
        state = SensorCursor.parse(waiting.cursor).partitions[2]
        ended = instance.get_run_record_by_id(failed_again.run_id).end_time
        assert state.failures == 2 and state.retry_after == pytest.approx(ended + 2.0)
        assert not waiting.run_requests

        # Success clears the backoff: the next lag is served at once.
        time.sleep(max(0.0, state.retry_after - time.time()) + 0.1)
        third = tick(sensor, instance, kafka, waiting.cursor)
        (request,) = third.run_requests or []
        assert execute_request(instance, "enrichment", request).success
        produce_raw(kafka, {2: 1}, "SE")
        served = tick(sensor, instance, kafka, third.cursor)
        assert ranges(served) == {2: (3, 4)}
        assert SensorCursor.parse(served.cursor).partitions[2].failures == 0
        assert json.loads(served.cursor)["partitions"]["2"]["requests"] == 4


def test_downstream_runs_start_on_the_upstream_tick_unless_the_upstream_keeps_failing(
    kafka: KafkaClient,
) -> None:
    """Raw updates waiting for enrichment: the arbitrage sensor starts its runs on the same
    tick as enrichment's (both run starts overlap), but not while enrichment's newest run has
    just failed (its runs would only idle out and start again)."""
    produce_raw(kafka, {0: 2}, "SU")
    sensor = defs.resolve_sensor_def("arbitrage_sensor")
    with temp_instance() as instance:
        started = tick(sensor, instance, kafka)
        assert sorted(r.tags[PARTITION_TAG] for r in started.run_requests or []) == [
            f"{topics.PRODUCTS_ENRICHED}-{partition}" for partition in range(3)
        ]

        run = instance.create_run_for_job(
            job_def=defs.resolve_job_def("enrichment"),
            tags={STAGE_TAG: ENRICHMENT.name},
            status=dg.DagsterRunStatus.STARTED,
        )
        instance.report_run_failed(run)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        waiting = tick(sensor, instance, kafka)
        assert not waiting.run_requests
