"""Runs that follow their partition (what the sensors launch): an update that arrives while the
run is live is processed by that run at once; the run stops when idle, on request, or on
SIGINT (Dagster's termination), always after committing the batch it has."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.stage_specs import ENRICHMENT
from arbitrage.engine.ranges import PartitionRange
from arbitrage.engine.runner import Following, StageRunner
from arbitrage.engine.stage_setup import StageSetup
from arbitrage.engine.stats import StageStats
from tests.faults.audit import audit_enrichment, stage_process
from tests.integration.kafka_io import produce, read_all
from tests.integration.test_stages import good_updates, run_job

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_pipeline")]


def partition_of(kafka: KafkaClient) -> dict[str, int]:
    """Where each ASIN's updates went (keys are ASINs, so later updates go there too)."""
    return {m.key: m.partition for m in read_all(kafka, topics.RAW_UPDATES) if m.key}


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f}s")


def enriched_asins(kafka: KafkaClient) -> Counter[str]:
    return Counter(m.key for m in read_all(kafka, topics.PRODUCTS_ENRICHED) if m.key)


class FollowingRun:
    """A following enrichment run of one partition, in a thread."""

    def __init__(
        self,
        kafka: KafkaClient,
        es: ElasticsearchClient,
        partition: int,
        idle_s: float,
        stop_after_commits: int | None = None,
    ) -> None:
        """``stop_after_commits``: the stop is requested once that many batches committed
        (from the run's own commit callback: a test polling for it saw the run reach the
        partition's end first)."""
        self.stop = threading.Event()
        self.stats: StageStats | None = None

        def on_batch(stats: StageStats) -> None:
            if stop_after_commits is not None and stats.batches >= stop_after_commits:
                self.stop.set()

        runner = StageRunner(
            StageSetup(ENRICHMENT, es, load_fee_config(), batch_size=100), kafka, on_batch=on_batch
        )
        span = PartitionRange(partition, 0, kafka.watermarks(topics.RAW_UPDATES)[partition][1])

        def work() -> None:
            self.stats = runner.run(
                ENRICHMENT.live_group,
                [span],
                Following(idle_s=idle_s, max_s=120.0, linger_s=0.2),
                self.stop.is_set,
            )

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()


def test_a_following_run_takes_updates_as_they_arrive_and_ends_when_idle(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    first = good_updates(30)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in first])
    where = partition_of(kafka)
    partition = where[first[0]["asin"]]
    ours = [u for u in first if where[u["asin"]] == partition]
    run = FollowingRun(kafka, es, partition, idle_s=4.0)
    wait_for(lambda: sum(enriched_asins(kafka).values()) == len(ours), "the backlog indexed")

    # A newer update of one of the partition's products, produced while the run is live.
    later = good_updates(1, timestamp="2026-11-26T11:00:00.000Z")[0]
    later["asin"] = ours[0]["asin"]
    produce(kafka, topics.RAW_UPDATES, [(later["asin"], encode(later))])
    wait_for(lambda: enriched_asins(kafka)[later["asin"]] == 2, "the live update enriched", 30.0)
    assert run.thread.is_alive(), "the update was processed by the run that was already live"

    run.thread.join(timeout=60)
    assert not run.thread.is_alive(), "the run ended once its partition was idle"
    assert run.stats is not None and run.stats.records_in == len(ours) + 1
    high = kafka.watermarks(topics.RAW_UPDATES)[partition][1]
    committed = kafka.committed_offsets(ENRICHMENT.live_group, topics.RAW_UPDATES)
    assert committed[partition] == high  # past the transaction markers too: lag 0
    assert enriched_asins(kafka) == Counter({u["asin"]: 1 for u in ours} | {later["asin"]: 2})


def test_a_stop_request_ends_the_run_after_its_batch_and_the_next_run_goes_on(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    updates = good_updates(3000)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in updates])
    run = FollowingRun(kafka, es, 0, idle_s=30.0, stop_after_commits=1)
    run.thread.join(timeout=30)
    assert not run.thread.is_alive(), "the run stopped on request, not when idle"
    assert run.stats is not None
    committed = kafka.committed_offsets(ENRICHMENT.live_group, topics.RAW_UPDATES)[0]
    high = kafka.watermarks(topics.RAW_UPDATES)[0][1]
    assert run.stats.records_in < high, "it stopped before the partition's end"
    assert committed >= run.stats.records_in  # everything it read was committed

    assert run_job("enrichment").success  # drains the rest, from the committed offset
    audit_enrichment(
        "enrichment: following run stopped on request", kafka, es, [u["asin"] for u in updates]
    ).assert_exactly_once()


def test_sigint_from_dagster_termination_stops_the_run_after_committing_its_batch(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    """What terminating a run from the UI (or run monitoring) does: SIGINT to the run."""
    updates = good_updates(3000)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in updates])
    high = kafka.watermarks(topics.RAW_UPDATES)[0][1]
    process = stage_process(
        "enrichment",
        batch_size=50,
        stage_config={
            "follow": True,
            "offset_ranges": [{"partition": 0, "start": 0, "end": high}],
        },
    )
    try:
        wait_for(
            lambda: kafka.committed_offsets(ENRICHMENT.live_group, topics.RAW_UPDATES).get(0),
            "a first commit",
            120.0,
        )
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert "a stop was requested" in output
    assert "RUN_CANCELED" in output or "RUN_FAILURE" in output
    assert "Traceback" not in output.split("a stop was requested")[0][-2000:]

    assert run_job("enrichment").success
    audit_enrichment(
        "enrichment: following run sent SIGINT", kafka, es, [u["asin"] for u in updates]
    ).assert_exactly_once()
