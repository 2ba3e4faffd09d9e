"""Backfills are replays: an hourly partition's run reads exactly the messages whose Kafka
timestamps fall in that hour, under the replay group, and changes nothing a reader can see."""

import json

import dagster as dg
import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.stage_specs import ARBITRAGE, ENRICHMENT
from assets.stage_assets import stage_op_name
from pipelines.definitions import defs
from tests.dagster.helpers import (
    hours_ago,
    materializations,
    opportunity,
    partition_key,
    produce_at,
    produce_updates,
    temp_instance,
)
from tests.factories import enriched, offer, steady_signals

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_pipeline")]
REPLAY_ENRICHMENT = ENRICHMENT.replay_group
REPLAY_ARBITRAGE = ARBITRAGE.replay_group
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def run(
    instance: dg.DagsterInstance,
    job: str,
    partition: str | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=partition, tags=tags, raise_on_error=False
    )
    assert result.success
    return result


def committed(kafka: KafkaClient, group: str, topic: str) -> dict[int, int | None]:
    return kafka.committed_offsets(group, topic)


def end_offsets(kafka: KafkaClient, topic: str) -> dict[int, int]:
    return {p: high for p, (_, high) in kafka.watermarks(topic).items()}


def test_replaying_an_hour_of_raw_updates_reads_exactly_that_window(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    early, late = hours_ago(3), hours_ago(2)
    # Two messages per partition in each hour, oldest first (Kafka timestamps rise per partition).
    stamps = [early.replace(minute=10 + n) for n in range(6)]
    stamps += [late.replace(minute=10 + n) for n in range(6)]
    updates = [opportunity(f"B0BF{n:06d}", at) for n, at in enumerate(stamps)]
    produce_updates(kafka, topics.RAW_UPDATES, updates, [n % 3 for n in range(12)], stamps)

    with temp_instance() as instance:
        run(instance, "enrichment")
        run(instance, "arbitrage")
        live = {
            group: committed(kafka, group, topic)
            for group, topic in (
                (ENRICHMENT.live_group, topics.RAW_UPDATES),
                (ARBITRAGE.live_group, topics.PRODUCTS_ENRICHED),
            )
        }
        assert live[ENRICHMENT.live_group] == {0: 4, 1: 4, 2: 4}
        assert es.count(topics.PRODUCTS_INDEX) == 12
        assert es.count(topics.ALERTS_INDEX) == 12
        alerts_end = end_offsets(kafka, topics.ARBITRAGE_ALERTS)

        replay = run(instance, "enrichment", partition=partition_key(early))

        # Exactly the early hour: offsets [0, 2) of every partition, under the replay group.
        by_key = materializations(replay, stage_op_name(ENRICHMENT))
        products = by_key["elasticsearch/products"]
        assert products.partition == partition_key(early)
        assert products.metadata["records_in"].value == 6
        assert products.metadata["consumer_group"].value == REPLAY_ENRICHMENT
        table = products.metadata["offset_ranges"].value
        for partition in range(3):
            assert f"| {partition} | 0–2 | 0–2 | 2 |" in table
        assert committed(kafka, REPLAY_ENRICHMENT, topics.RAW_UPDATES) == {0: 2, 1: 2, 2: 2}
        # Same documents (external versions), nothing new for readers, live offsets untouched.
        assert products.metadata["unchanged"].value == 6
        assert es.count(topics.PRODUCTS_INDEX) == 12
        assert (
            committed(kafka, ENRICHMENT.live_group, topics.RAW_UPDATES)
            == (live[ENRICHMENT.live_group])
        )
        assert (
            committed(kafka, ARBITRAGE.live_group, topics.PRODUCTS_ENRICHED)
            == (live[ARBITRAGE.live_group])
        )

        # The replay passed the six products on again; the live arbitrage stage knows their
        # alert ids, so no alert is doubled on the topic or in the index.
        downstream = run(instance, "arbitrage")
        alerts = materializations(downstream, "arbitrage_stage")["kafka/arbitrage_alerts"]
        assert alerts.metadata["alerts_raised"].value == 0
        assert alerts.metadata["records_already_seen"].value == 6
        assert es.count(topics.ALERTS_INDEX) == 12
        assert end_offsets(kafka, topics.ARBITRAGE_ALERTS) == alerts_end


def test_replaying_enriched_products_by_hour_and_by_range(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    config = load_fee_config()
    early, late = hours_ago(4), hours_ago(3)
    items = []
    for n in range(9):
        at = (early if n < 6 else late).replace(minute=5 + n)
        product = enriched(
            config,
            asin=f"B0BR{n:06d}",
            markets={
                "DE": offer("DE", new=4500, amazon=-1, buy_box=4700),
                "FR": offer("FR", buy_box=9000, new=8900, signals=steady_signals(9000)),
            },
        )
        items.append((product["asin"], json.dumps(product).encode(), n % 3, at))
    produce_at(kafka, topics.PRODUCTS_ENRICHED, items)

    with temp_instance() as instance:
        run(instance, "arbitrage")
        live = committed(kafka, ARBITRAGE.live_group, topics.PRODUCTS_ENRICHED)
        assert live == {0: 3, 1: 3, 2: 3}
        assert es.count(topics.ALERTS_INDEX) == 9
        alerts_end = end_offsets(kafka, topics.ARBITRAGE_ALERTS)

        hour = run(instance, "arbitrage", partition=partition_key(early))
        by_key = materializations(hour, "arbitrage_stage")
        assert by_key["elasticsearch/arbitrage_alerts"].partition == partition_key(early)
        assert by_key["kafka/arbitrage_alerts"].metadata["records_in"].value == 6
        assert by_key["kafka/arbitrage_alerts"].metadata["records_already_seen"].value == 6
        assert committed(kafka, REPLAY_ARBITRAGE, topics.PRODUCTS_ENRICHED) == {0: 2, 1: 2, 2: 2}

        # A single-run backfill of a range (what `--partition-range` and the UI's "single run"
        # launch) replays the whole window: both hours.
        span = run(
            instance,
            "arbitrage",
            tags={RANGE_START: partition_key(early), RANGE_END: partition_key(late)},
        )
        by_key = materializations(span, "arbitrage_stage")
        assert by_key["kafka/arbitrage_alerts"].metadata["records_in"].value == 9
        assert by_key["kafka/arbitrage_alerts"].metadata["alerts_raised"].value == 0
        indexed_hours = {
            m.partition for m in span.asset_materializations_for_node("arbitrage_stage")
        }
        assert {partition_key(early), partition_key(late)} <= indexed_hours
        assert committed(kafka, REPLAY_ARBITRAGE, topics.PRODUCTS_ENRICHED) == {0: 3, 1: 3, 2: 3}

        assert committed(kafka, ARBITRAGE.live_group, topics.PRODUCTS_ENRICHED) == live
        assert es.count(topics.ALERTS_INDEX) == 9
        assert end_offsets(kafka, topics.ARBITRAGE_ALERTS) == alerts_end
