"""The Definitions load, and every job, sensor, schedule and check the operations layer needs is
there and wired the way the design says (no services needed)."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets import checks, sensors
from assets.keys import (
    ES_ALERTS,
    ES_PRODUCTS,
    PRODUCTS_ENRICHED,
    PRODUCTS_ENRICHED_DLQ,
    RAW_UPDATES,
    RAW_UPDATES_DLQ,
)
from assets.stages import PARTITION_TAG, arbitrage_stage, enrichment_stage
from pipelines.definitions import defs

DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"


def test_definitions_load_with_every_job_sensor_schedule_and_check() -> None:
    dg.Definitions.validate_loadable(defs)
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"keepa_pull", "enrichment", "arbitrage", "pipeline_checks"} <= jobs
    assert defs.resolve_sensor_def("enrichment_sensor").job_name == "enrichment"
    assert defs.resolve_sensor_def("arbitrage_sensor").job_name == "arbitrage"
    assert defs.resolve_schedule_def("keepa_pull_schedule").job_name == "keepa_pull"
    schedule = defs.resolve_schedule_def("pipeline_checks_schedule")
    assert schedule.job_name == "pipeline_checks"
    assert schedule.cron_schedule == checks.DEFAULT_CHECKS_CRON
    assert defs.resolve_asset_graph().asset_check_keys == {
        dg.AssetCheckKey(RAW_UPDATES, "consumer_lag_under_threshold"),
        dg.AssetCheckKey(PRODUCTS_ENRICHED, "consumer_lag_under_threshold"),
        dg.AssetCheckKey(RAW_UPDATES_DLQ, "dlq_not_growing"),
        dg.AssetCheckKey(PRODUCTS_ENRICHED_DLQ, "dlq_not_growing"),
        dg.AssetCheckKey(RAW_UPDATES, "newest_message_fresh"),
    }


def test_stage_jobs_run_one_step_and_the_checks_job_only_checks() -> None:
    # The checks run on their schedule, never as extra steps of a live range run.
    assert defs.resolve_job_def("enrichment").graph.node_names() == ["enrichment_stage"]
    assert defs.resolve_job_def("arbitrage").graph.node_names() == ["arbitrage_stage"]
    check_nodes = set(defs.resolve_job_def("pipeline_checks").graph.node_names())
    assert check_nodes == {check.op.name for check in checks.pipeline_checks}


def test_stage_assets_replay_a_range_in_one_run() -> None:
    for stage in (enrichment_stage, arbitrage_stage):
        assert stage.backfill_policy == dg.BackfillPolicy.single_run()
    assert enrichment_stage.specs_by_key[ES_PRODUCTS].partitions_def is not None
    assert arbitrage_stage.specs_by_key[ES_ALERTS].partitions_def is not None


def test_sensors_tick_every_daemon_loop_and_follow_the_automation_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("enrichment_sensor", "arbitrage_sensor"):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.minimum_interval_seconds is not None
        assert sensor.minimum_interval_seconds < 5  # the daemon loop is 5 s
    monkeypatch.setenv("ARBITRAGE_AUTOMATION", "on")
    assert sensors.sensor_default_status() == dg.DefaultSensorStatus.RUNNING
    monkeypatch.delenv("ARBITRAGE_AUTOMATION")
    assert sensors.sensor_default_status() == dg.DefaultSensorStatus.STOPPED


def test_cursor_round_trip_and_capped_exponential_backoff() -> None:
    cursor = sensors.SensorCursor(
        partitions={2: sensors.PartitionState(requests=3, failures=1, last_failed_run="r")},
        observed_lag={0: 4, 2: 0},
        observed_at=12.5,
    )
    assert sensors.SensorCursor.parse(cursor.dump()) == cursor
    assert sensors.SensorCursor.parse(None) == sensors.SensorCursor()
    delays = [sensors.backoff_seconds(n, 15, 600) for n in range(1, 8)]
    assert delays == [15, 30, 60, 120, 240, 480, 600]


def test_freshness_threshold_is_twice_the_pull_interval() -> None:
    assert checks.longest_cron_gap("*/15 * * * *") == timedelta(minutes=15)
    assert checks.longest_cron_gap("5,50 * * * *") == timedelta(minutes=45)
    assert checks.longest_cron_gap("0 9 * * 1-5") == timedelta(days=3)
    gap = checks.longest_cron_gap(checks.PULL_CRON)
    assert timedelta(minutes=checks.DEFAULT_MAX_AGE_MINUTES) == 2 * gap


def test_dagster_yaml_is_valid_and_limits_one_run_per_topic_partition() -> None:
    settings = yaml.safe_load(DAGSTER_YAML.read_text())
    with dg.instance_for_test(overrides=settings) as instance:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert {
            "key": PARTITION_TAG,
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        } in queue.tag_concurrency_limits
        assert queue.max_concurrent_runs >= 2
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_monitoring_enabled
        assert instance.get_settings("sensors")["use_threads"]
