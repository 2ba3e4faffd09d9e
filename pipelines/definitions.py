"""The one place the Dagster system is assembled: assets, jobs, schedules, sensors, resources.

Settings are read once, here (``Settings.from_env()``), and handed to the resources and the
factories (the few reads made elsewhere, and why: docs/design.md, "Settings").
``build_definitions`` takes other settings for tests that need them.
"""

from __future__ import annotations

import dagster as dg

from arbitrage.domain.discovery_config import load_discovery_config
from arbitrage.domain.stage_specs import STAGES
from arbitrage.domain.token_plan import PlanConfig
from arbitrage.engine.faults import FaultInjector
from arbitrage.engine.runner import Following
from arbitrage.settings import Settings
from assets.checks import build_pipeline_checks
from assets.digest import build_digest_schedule, daily_digest, daily_digest_job
from assets.discovery import build_discovery
from assets.keepa_pull import (
    build_keepa_pull_schedule,
    keepa_products,
    keepa_pull_job,
    raw_keepa_updates,
)
from assets.sensors import build_stage_sensor
from assets.stage_assets import build_stage_assets, build_stage_job
from resources.elasticsearch import elasticsearch_resource
from resources.fees import fee_model_resource
from resources.kafka import kafka_resource
from resources.keepa import keepa_resource
from resources.notify import notifications_resource

# How long past ARBITRAGE_RUN_MAX_S a following run may take before run monitoring cancels it.
RUN_MAX_GRACE_S = 300


def build_definitions(settings: Settings) -> dg.Definitions:
    sensor_status = (
        dg.DefaultSensorStatus.RUNNING if settings.automation else dg.DefaultSensorStatus.STOPPED
    )
    schedule_status = (
        dg.DefaultScheduleStatus.RUNNING
        if settings.automation
        else dg.DefaultScheduleStatus.STOPPED
    )
    FaultInjector.parse(settings.fault_point)  # a bad value fails at load, with a sentence
    following = Following(
        idle_s=settings.run_idle_s,
        max_s=settings.run_max_s,
        linger_s=settings.batch_linger_ms / 1000,
    )
    stage_assets = [build_stage_assets(spec, settings.fault_point, following) for spec in STAGES]
    stage_jobs = [
        build_stage_job(spec, assets) for spec, assets in zip(STAGES, stage_assets, strict=True)
    ]
    sensors = [
        build_stage_sensor(
            spec,
            job,
            assets,
            max_records=settings.sensor_max_records,
            minimum_interval_seconds=settings.sensor_interval_s,
            default_status=sensor_status,
            # Run monitoring cancels a run stuck past its limit (a run that ends its follow
            # window finishes its last batch within seconds).
            max_runtime_s=settings.run_max_s + RUN_MAX_GRACE_S,
            upstream=next((up for up in STAGES if up.output_topic == spec.source_topic), None),
        )
        for spec, job, assets in zip(STAGES, stage_jobs, stage_assets, strict=True)
    ]
    checks, checks_job, checks_schedule = build_pipeline_checks(
        settings.keepa_pull_cron,
        settings.checks_cron,
        schedule_status,
        PlanConfig.min_refresh_minutes if settings.keepa_pull_mode == "planner" else 0,
    )
    # A bad discovery file fails here, at load, with the sentence naming the mistake.
    discovery_assets, discovery_jobs, discovery_schedules = build_discovery(
        load_discovery_config(settings.discovery_file),
        settings.keepa_own_list_cron,
        schedule_status,
    )
    return dg.Definitions(
        assets=[
            keepa_products,
            raw_keepa_updates,
            *stage_assets,
            daily_digest,
            *discovery_assets,
        ],
        asset_checks=checks,
        jobs=[keepa_pull_job, *stage_jobs, checks_job, daily_digest_job, *discovery_jobs],
        schedules=[
            build_keepa_pull_schedule(settings.keepa_pull_cron, schedule_status),
            checks_schedule,
            build_digest_schedule(settings.digest_cron, schedule_status),
            *discovery_schedules,
        ],
        sensors=sensors,
        resources={
            "keepa": keepa_resource(settings),
            "kafka": kafka_resource(settings),
            "elasticsearch": elasticsearch_resource(settings),
            "fee_model": fee_model_resource(settings),
            "notifications": notifications_resource(settings),
        },
        # Every job here is one step (or a few quick checks): running it in the run's own
        # process saves a subprocess start per run, seconds that count against the
        # produce-to-alert latency.
        executor=dg.in_process_executor,
    )


defs = build_definitions(Settings.from_env())
