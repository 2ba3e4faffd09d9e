"""The one place the Dagster system is assembled: assets, jobs, schedules, sensors, resources."""

from __future__ import annotations

import dagster as dg

from assets.keepa_pull import keepa_products, keepa_pull_job, keepa_pull_schedule, raw_keepa_updates
from assets.stages import arbitrage_job, arbitrage_stage, enrichment_job, enrichment_stage
from resources.elasticsearch import ElasticsearchResource
from resources.fees import FeeModelResource
from resources.kafka import KafkaResource
from resources.keepa import KeepaResource

defs = dg.Definitions(
    assets=[keepa_products, raw_keepa_updates, enrichment_stage, arbitrage_stage],
    jobs=[keepa_pull_job, enrichment_job, arbitrage_job],
    schedules=[keepa_pull_schedule],
    resources={
        "keepa": KeepaResource(),
        "kafka": KafkaResource(),
        "elasticsearch": ElasticsearchResource(),
        "fee_model": FeeModelResource(),
    },
)
