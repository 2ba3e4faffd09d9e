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
from typing import Literal

from arbitrage.domain import topics

# Replays (backfills) consume under their own groups so the live offsets never move.
REPLAY_GROUP_PREFIX = "replay."


@dataclass(frozen=True)
class SideIndex:
    """An index a stage writes besides its own, in the same bulk requests (same commit rule)."""

    name: str
    description: str


# What a stage writes, by role: its own index (partitioned by hour: replays rebuild it), its
# output topic, its dead-letter topic, and indices written in the same bulk requests.
OutputRole = Literal["index", "output", "dlq", "side"]


@dataclass(frozen=True)
class StageOutput:
    """One thing a stage writes, as the Dagster layer shows it (one asset each)."""

    role: OutputRole
    name: str  # the index or topic
    description: str

    @property
    def store(self) -> Literal["elasticsearch", "kafka"]:
        return "kafka" if self.role in ("output", "dlq") else "elasticsearch"

    @property
    def hourly(self) -> bool:
        """Partitioned by the hour of the source messages (a replay rebuilds one hour)."""
        return self.role == "index"


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
    # What the stage's batch function reads besides the fee config: the alert rules
    # (ARBITRAGE_RULES_FILE) and the delivery channels (the notifications file). Read only where
    # they apply: a bad rules file does not stop enrichment.
    reads_rules: bool = False
    delivers: bool = False

    @property
    def outputs(self) -> tuple[StageOutput, ...]:
        """Everything the stage writes: index, output topic (if any), DLQ, side indices."""
        own: list[StageOutput] = [StageOutput("index", self.index, self.index_description)]
        if self.output_topic is not None:
            own.append(StageOutput("output", self.output_topic, self.output_description))
        own.append(
            StageOutput("dlq", self.dlq_topic, topics.TOPIC_BY_NAME[self.dlq_topic].description)
        )
        own.extend(StageOutput("side", side.name, side.description) for side in self.side_indices)
        return tuple(own)

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
    reads_rules=True,
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
    delivers=True,
)

STAGES: tuple[StageSpec, ...] = (ENRICHMENT, ARBITRAGE, NOTIFICATIONS)
PIPELINE_GROUPS: tuple[str, ...] = tuple(group for spec in STAGES for group in spec.groups)
