"""The one place the Dagster system is assembled: assets, jobs, schedules, sensors, resources."""

from __future__ import annotations

import dagster as dg

from assets.stages import arbitrage_job, arbitrage_stage, enrichment_job, enrichment_stage
from resources.elasticsearch import ElasticsearchResource
from resources.fees import FeeModelResource
from resources.kafka import KafkaResource

defs = dg.Definitions(
    assets=[enrichment_stage, arbitrage_stage],
    jobs=[enrichment_job, arbitrage_job],
    resources={
        "kafka": KafkaResource(),
        "elasticsearch": ElasticsearchResource(),
        "fee_model": FeeModelResource(),
    },
)
