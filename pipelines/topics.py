"""Names and settings of the pipeline's Kafka topics and Elasticsearch indices.

Which stage reads and writes which of them (and under which consumer groups) is stated in
pipelines/stage_specs.py.
"""

from __future__ import annotations

from dataclasses import dataclass

RAW_UPDATES = "raw.keepa_updates"
PRODUCTS_ENRICHED = "products.enriched"
ARBITRAGE_ALERTS = "arbitrage.alerts"
RAW_UPDATES_DLQ = "raw.keepa_updates.dlq"
PRODUCTS_ENRICHED_DLQ = "products.enriched.dlq"

PRODUCTS_INDEX = "products"
ALERTS_INDEX = "arbitrage-alerts"
# The operator's indices: the DLQ redrive ledger (cli/redrive.py), acknowledged retention losses
# (resources/retention_losses.py).
REDRIVE_LEDGER_INDEX = "dlq-redrives"
RETENTION_LOSS_INDEX = "retention-losses"

PARTITIONS = 3
RETENTION_MS = 7 * 24 * 60 * 60 * 1000
# The broker's limit per message (topic max.message.bytes), far above the largest record a stage
# accepts: an oversize record still reaches the DLQ whole (base64 adds a third).
TOPIC_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str

    def config(self) -> dict[str, str]:
        return {
            "retention.ms": str(RETENTION_MS),
            "max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES),
            "cleanup.policy": "delete",
            # Producer time (our producers stamp at produce): replays find an hour's window with
            # offsets_for_times, and tests can write messages into past hours.
            "message.timestamp.type": "CreateTime",
        }


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(RAW_UPDATES, "One raw update per ASIN per Keepa pull, keyed by ASIN."),
    TopicSpec(PRODUCTS_ENRICHED, "Validated, enriched products keyed by ASIN."),
    TopicSpec(ARBITRAGE_ALERTS, "Profitable buy→sell routes after fees, keyed by ASIN."),
    TopicSpec(RAW_UPDATES_DLQ, "Raw updates the enrichment stage could not use, with the reason."),
    TopicSpec(
        PRODUCTS_ENRICHED_DLQ,
        "Enriched products the arbitrage stage could not use, with the reason.",
    ),
)
TOPIC_BY_NAME = {spec.name: spec for spec in TOPICS}
