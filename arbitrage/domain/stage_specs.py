"""What a stage is, stated once.

A stage reads one source topic partition by partition, writes its results to an output topic
and an Elasticsearch index, and dead-letters what it cannot use. Everything else is derived
from these values: the engine's topics and groups (arbitrage/engine/), the Dagster assets, jobs,
sensors and checks (assets/), the operator CLI and the reset tool (arbitrage/cli/). A new stage is
one more ``StageSpec`` here, its pure batch function in arbitrage/domain/transforms.py, and its
processor in arbitrage/engine/processors.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from arbitrage.domain import topics

# Replays (backfills) consume under their own groups so the live offsets never move.
REPLAY_GROUP_PREFIX = "replay."


@dataclass(frozen=True)
class SideIndex:
    """An index a stage writes besides its own, in the same bulk requests (same commit rule)."""

    name: str
    description: str


@dataclass(frozen=True)
class StageSpec:
    name: str  # also the Dagster job, asset group and multi-asset name stem
    source_topic: str
    output_topic: str | None  # None: the stage's output leaves the pipeline (notifications)
    dlq_topic: str
    index: str
    live_group: str
    summary: str  # one line: what a run of the stage does
    output_description: str
    index_description: str
    side_indices: tuple[SideIndex, ...] = ()

    @property
    def indices(self) -> tuple[str, ...]:
        """Every index the stage writes: its own, then its side indices."""
        return (self.index, *(side.name for side in self.side_indices))

    @property
    def replay_group(self) -> str:
        return topics.named(REPLAY_GROUP_PREFIX + topics.plain_name(self.live_group))

    @property
    def groups(self) -> tuple[str, str]:
        return (self.live_group, self.replay_group)


ENRICHMENT = StageSpec(
    name="enrichment",
    source_topic=topics.RAW_UPDATES,
    output_topic=topics.PRODUCTS_ENRICHED,
    dlq_topic=topics.RAW_UPDATES_DLQ,
    index=topics.PRODUCTS_INDEX,
    live_group=topics.named("enrichment"),
    summary="Validate and enrich raw updates; index them and pass them on; bad records to the DLQ.",
    output_description="Validated, enriched products on Kafka, keyed by ASIN.",
    index_description="Enriched products in Elasticsearch, one document per ASIN (newest wins).",
    side_indices=(
        SideIndex(
            topics.PRICE_OBSERVATIONS_INDEX,
            "Each pull's buy and sell prices per market (and Keepa's own history points when "
            "the pull asked for them), one document per (ASIN, time): the opportunities page's "
            "price history.",
        ),
    ),
)

ARBITRAGE = StageSpec(
    name="arbitrage",
    source_topic=topics.PRODUCTS_ENRICHED,
    output_topic=topics.ARBITRAGE_ALERTS,
    dlq_topic=topics.PRODUCTS_ENRICHED_DLQ,
    index=topics.ALERTS_INDEX,
    live_group=topics.named("arbitrage"),
    summary="Apply the fee model and the rules to enriched products; open, update and close "
    "opportunities.",
    output_description="Opportunity events (opened, updated, closed) after fees, VAT and FX, "
    "keyed by ASIN.",
    index_description="Each opportunity's current state, one document per opportunity.",
)

NOTIFICATIONS = StageSpec(
    name="notifications",
    source_topic=topics.ARBITRAGE_ALERTS,
    output_topic=None,
    dlq_topic=topics.ARBITRAGE_ALERTS_DLQ,
    index=topics.DELIVERIES_INDEX,
    live_group=topics.named("notifications"),
    summary="Deliver alert events to the configured channels (webhook, chat, e-mail), each once.",
    output_description="",
    index_description="Deliveries in Elasticsearch, one document per (channel, alert event).",
)

STAGES: tuple[StageSpec, ...] = (ENRICHMENT, ARBITRAGE, NOTIFICATIONS)
PIPELINE_GROUPS: tuple[str, ...] = tuple(group for spec in STAGES for group in spec.groups)
