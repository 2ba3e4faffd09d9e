"""The one place the Dagster system is assembled: assets, jobs, schedules, sensors, resources."""

from __future__ import annotations

import dagster as dg

from assets.checks import pipeline_checks, pipeline_checks_job, pipeline_checks_schedule
from assets.keepa_pull import keepa_products, keepa_pull_job, keepa_pull_schedule, raw_keepa_updates
from assets.sensors import arbitrage_sensor, enrichment_sensor
from assets.stages import arbitrage_job, arbitrage_stage, enrichment_job, enrichment_stage
from resources.elasticsearch import ElasticsearchResource
from resources.fees import FeeModelResource
from resources.kafka import KafkaResource
from resources.keepa import KeepaResource

defs = dg.Definitions(
    assets=[keepa_products, raw_keepa_updates, enrichment_stage, arbitrage_stage],
    asset_checks=pipeline_checks,
    jobs=[keepa_pull_job, enrichment_job, arbitrage_job, pipeline_checks_job],
    schedules=[keepa_pull_schedule, pipeline_checks_schedule],
    sensors=[enrichment_sensor, arbitrage_sensor],
    resources={
        "keepa": KeepaResource(),
        "kafka": KafkaResource(),
        "elasticsearch": ElasticsearchResource(),
        "fee_model": FeeModelResource(),
    },
    # Every job here is one step (or a few quick checks): running it in the run's own process
    # saves a subprocess start per run, seconds that count against the produce-to-alert latency.
    executor=dg.in_process_executor,
)
