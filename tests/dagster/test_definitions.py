"""The Definitions load, and every job, sensor, schedule and check the operations layer needs is
there and wired the way the design says (no services needed)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import yaml

from arbitrage.settings import Settings
from assets import checks
from assets.keys import (
    ARBITRAGE_ALERTS_DLQ_KEY,
    ARBITRAGE_ALERTS_KEY,
    DIGEST_KEY,
    ES_ALERTS_KEY,
    ES_DELIVERIES_KEY,
    ES_PRODUCTS_KEY,
    PRODUCTS_ENRICHED_DLQ_KEY,
    PRODUCTS_ENRICHED_KEY,
    RAW_UPDATES_DLQ_KEY,
    RAW_UPDATES_KEY,
)
from assets.stage_assets import PARTITION_TAG
from pipelines.definitions import build_definitions, defs

DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"


def test_definitions_load_with_every_job_sensor_schedule_and_check() -> None:
    dg.Definitions.validate_loadable(defs)
    jobs = {job.name for job in defs.resolve_all_job_defs()}
    assert {"keepa_pull", "enrichment", "arbitrage", "pipeline_checks"} <= jobs
    assert defs.resolve_sensor_def("enrichment_sensor").job_name == "enrichment"
    assert defs.resolve_sensor_def("arbitrage_sensor").job_name == "arbitrage"
    assert defs.resolve_sensor_def("notifications_sensor").job_name == "notifications"
    assert defs.resolve_schedule_def("keepa_pull_schedule").job_name == "keepa_pull"
    schedule = defs.resolve_schedule_def("pipeline_checks_schedule")
    assert schedule.job_name == "pipeline_checks"
    assert schedule.cron_schedule == Settings().checks_cron
    assert defs.resolve_asset_graph().asset_check_keys == {
        dg.AssetCheckKey(RAW_UPDATES_KEY, "consumer_lag_under_threshold"),
        dg.AssetCheckKey(PRODUCTS_ENRICHED_KEY, "consumer_lag_under_threshold"),
        dg.AssetCheckKey(RAW_UPDATES_DLQ_KEY, "dlq_not_growing"),
        dg.AssetCheckKey(PRODUCTS_ENRICHED_DLQ_KEY, "dlq_not_growing"),
        dg.AssetCheckKey(RAW_UPDATES_KEY, "newest_message_fresh"),
        dg.AssetCheckKey(ARBITRAGE_ALERTS_KEY, "consumer_lag_under_threshold"),
        dg.AssetCheckKey(ARBITRAGE_ALERTS_DLQ_KEY, "dlq_not_growing"),
    }


def test_notifications_come_after_the_alerts_in_the_lineage() -> None:
    graph = defs.resolve_asset_graph()
    for key in (ES_DELIVERIES_KEY, ARBITRAGE_ALERTS_DLQ_KEY):
        assert graph.get(key).parent_keys == {ARBITRAGE_ALERTS_KEY}
        assert graph.get(key).group_name == "notifications"


def test_the_daily_digest_job_and_schedule_follow_the_alerts_index() -> None:
    graph = defs.resolve_asset_graph()
    assert graph.get(DIGEST_KEY).parent_keys == {ES_ALERTS_KEY}
    assert graph.get(DIGEST_KEY).group_name == "notifications"
    job = defs.resolve_job_def("daily_digest")
    assert job.graph.node_names() == ["notifications__daily_digest"]
    assert job.partitions_def is not None
    assert job.partitions_def.get_partition_keys()[0] == "2026-11-01"
    schedule = defs.resolve_schedule_def("daily_digest_schedule")
    assert schedule.job_name == "daily_digest"
    assert schedule.cron_schedule == Settings().digest_cron == "0 7 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED  # like the others
    # At 07:00 on the 30th, the 29th's digest (a whole day).
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 30, 7, tzinfo=UTC),
        repository_def=defs.get_repository_def(),
    )
    requests = list(schedule.evaluate_tick(context).run_requests or [])
    assert [(r.partition_key, r.run_key) for r in requests] == [("2026-11-29", "2026-11-29")]
    built = build_definitions(Settings.from_env({"ARBITRAGE_DIGEST_CRON": "30 6 * * 1-5"}))
    assert built.resolve_schedule_def("daily_digest_schedule").cron_schedule == "30 6 * * 1-5"


def test_stage_jobs_run_one_step_and_the_checks_job_only_checks() -> None:
    # The checks run on their schedule, never as extra steps of a live range run.
    assert defs.resolve_job_def("enrichment").graph.node_names() == ["enrichment_stage"]
    assert defs.resolve_job_def("arbitrage").graph.node_names() == ["arbitrage_stage"]
    check_ops = {
        defs.get_asset_checks_def(key).op.name
        for key in defs.resolve_asset_graph().asset_check_keys
    }
    assert set(defs.resolve_job_def("pipeline_checks").graph.node_names()) == check_ops


def test_stage_assets_replay_a_range_in_one_run() -> None:
    for index_key in (ES_PRODUCTS_KEY, ES_ALERTS_KEY):
        stage = defs.resolve_assets_def(index_key)
        assert stage.backfill_policy == dg.BackfillPolicy.single_run()
        assert stage.specs_by_key[index_key].partitions_def is not None


def test_sensors_tick_every_daemon_loop_and_follow_the_automation_switch() -> None:
    for name in ("enrichment_sensor", "arbitrage_sensor"):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.minimum_interval_seconds is not None
        assert sensor.minimum_interval_seconds < 5  # the daemon loop is 5 s
    for automation, sensor_status, schedule_status in (
        ("on", dg.DefaultSensorStatus.RUNNING, dg.DefaultScheduleStatus.RUNNING),
        ("", dg.DefaultSensorStatus.STOPPED, dg.DefaultScheduleStatus.STOPPED),
    ):
        built = build_definitions(Settings.from_env({"ARBITRAGE_AUTOMATION": automation}))
        assert built.resolve_sensor_def("enrichment_sensor").default_status == sensor_status
        assert built.resolve_schedule_def("keepa_pull_schedule").default_status == schedule_status


def test_settings_reach_the_schedules_and_the_freshness_threshold() -> None:
    built = build_definitions(
        Settings.from_env({"KEEPA_PULL_CRON": "5,50 * * * *", "ARBITRAGE_CHECKS_CRON": "0 * * * *"})
    )
    assert built.resolve_schedule_def("keepa_pull_schedule").cron_schedule == "5,50 * * * *"
    assert built.resolve_schedule_def("pipeline_checks_schedule").cron_schedule == "0 * * * *"
    fresh = dg.AssetCheckKey(RAW_UPDATES_KEY, "newest_message_fresh")
    spec = built.resolve_asset_graph().get_check_spec(fresh)
    assert spec.metadata["threshold_max_age_minutes"] == 90  # twice the 45-minute gap


def test_freshness_threshold_is_twice_the_pull_interval() -> None:
    assert checks.longest_cron_gap("*/15 * * * *") == timedelta(minutes=15)
    assert checks.longest_cron_gap("5,50 * * * *") == timedelta(minutes=45)
    assert checks.longest_cron_gap("0 9 * * 1-5") == timedelta(days=3)
    assert checks.longest_cron_gap("* * * * *") == timedelta(minutes=1)  # 11 520 ticks


def test_dagster_yaml_is_valid_and_limits_one_run_per_topic_partition() -> None:
    settings = yaml.safe_load(DAGSTER_YAML.read_text())
    # The PostgreSQL storage needs the server: tests/integration/test_dagster_postgres.py.
    storage = settings.pop("storage")["custom"]
    assert (storage["module"], storage["class"]) == (
        "pipelines.instance_storage",
        "PooledPostgresStorage",
    )
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
