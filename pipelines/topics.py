"""Names and settings of the pipeline's Kafka topics, consumer groups and Elasticsearch indices."""

from __future__ import annotations

from dataclasses import dataclass

RAW_UPDATES = "raw.keepa_updates"
PRODUCTS_ENRICHED = "products.enriched"
ARBITRAGE_ALERTS = "arbitrage.alerts"
RAW_UPDATES_DLQ = "raw.keepa_updates.dlq"
PRODUCTS_ENRICHED_DLQ = "products.enriched.dlq"

ENRICHMENT_GROUP = "enrichment"
ARBITRAGE_GROUP = "arbitrage"
# Replays (backfills) consume under their own groups so the live offsets never move.
REPLAY_GROUP_PREFIX = "replay."

PRODUCTS_INDEX = "products"
ALERTS_INDEX = "arbitrage-alerts"

PARTITIONS = 3
RETENTION_MS = 7 * 24 * 60 * 60 * 1000
# Big enough for an oversize record to reach the DLQ whole (base64 adds a third).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str

    def config(self) -> dict[str, str]:
        return {
            "retention.ms": str(RETENTION_MS),
            "max.message.bytes": str(MAX_MESSAGE_BYTES),
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

DLQ_FOR = {RAW_UPDATES: RAW_UPDATES_DLQ, PRODUCTS_ENRICHED: PRODUCTS_ENRICHED_DLQ}
