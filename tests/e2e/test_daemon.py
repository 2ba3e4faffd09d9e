"""The pipeline under Dagster's own daemon: code server, webserver and daemon with the sensors
on, real Kafka and Elasticsearch, runs observed through the webserver's GraphQL API.

These tests only start processes and read state; every stage run is launched by the sensors.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import dagster as dg
import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.keepa_parsing import merge_market_products
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.validation import validate_raw_update
from arbitrage.domain.rules_config import load_rules_config
from arbitrage.domain.stage_specs import ARBITRAGE, ENRICHMENT
from arbitrage.domain.transforms import opportunity_events
from arbitrage.settings import Settings
from assets.sensors import DEFAULT_BACKOFF_BASE_S
from assets.stage_assets import PARTITION_TAG, STAGE_TAG
from devservices.dagster_processes import TERMINATE_MUTATION
from tests.definitions import SAMPLE_DEFS
from tests.e2e.dagster_api import Dagster, Run, StartDagster
from tests.factories import strip_time
from tests.integration.kafka_io import ReadMessage, produce, read_all
from tools.sample_generator import iter_products

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_pipeline")]

CONFIG = load_fee_config()
# The rules the stages' processes run with (ARBITRAGE_RULES_FILE, default rules_v1).
RULES = load_rules_config(Settings.from_env().rules_file)
MAX_RECORDS_ENV = "ARBITRAGE_SENSOR_MAX_RECORDS"
ENRICHMENT_SENSOR = "enrichment_sensor"
ARBITRAGE_SENSOR = "arbitrage_sensor"
SENSORS = (ENRICHMENT_SENSOR, ARBITRAGE_SENSOR)
# sensor → (job, op, consumer group, source topic)
STAGES = {
    ENRICHMENT_SENSOR: (
        "enrichment",
        "enrichment_stage",
        ENRICHMENT.live_group,
        topics.RAW_UPDATES,
    ),
    ARBITRAGE_SENSOR: (
        "arbitrage",
        "arbitrage_stage",
        ARBITRAGE.live_group,
        topics.PRODUCTS_ENRICHED,
    ),
}
# The run worker's first engine event (the code server spawns it).
WORKER_PID = re.compile(r"^Started process for run \(pid: (\d+)\)")


# ---------------------------------------------------------------------------------- helpers


def expected_alerts(raw_values: Iterable[bytes]) -> dict[str, dict[str, Any]]:
    """The events the domain functions make of these raw updates (one pull: each opportunity
    opens once), by event id."""
    products = [enrich(validate_raw_update(json.loads(value)), CONFIG) for value in raw_values]
    events = opportunity_events(products, CONFIG, RULES, "ignored").events
    return {e["event_id"]: strip_time(e) for e in events}


def assert_every_alert_once(
    kafka: KafkaClient, es: ElasticsearchClient, raw: list[ReadMessage]
) -> dict[str, dict[str, Any]]:
    """Every event the domain functions make of ``raw``, once, on arbitrage.alerts, and each
    opportunity's state in the alerts index (and more than 50 of them); returns them by id."""
    expected = expected_alerts(m.value for m in raw)
    assert len(expected) > 50
    on_topic = [m.json() for m in read_all(kafka, topics.ARBITRAGE_ALERTS)]
    assert len(on_topic) == len(expected)
    assert {a["event_id"]: strip_time(a) for a in on_topic} == expected
    hits = es.client().search(index=topics.ALERTS_INDEX, size=10_000)["hits"]["hits"]
    assert {hit["_source"]["event_id"]: strip_time(hit["_source"]) for hit in hits} == expected
    assert {hit["_id"] for hit in hits} == {e["opportunity_id"] for e in expected.values()}
    return expected


def lag_summary(kafka: KafkaClient) -> str:
    parts = []
    for _, _, group, topic in STAGES.values():
        lags = kafka.lag(group, topic)
        parts.append(
            f"{group}: "
            + ", ".join(f"p{x.partition} {x.committed}/{x.high_watermark}" for x in lags)
        )
    return "; ".join(parts)


def runs_summary(runs: list[Run]) -> str:
    return "\n".join(
        f"  {run.job_name} {run.status} {run.tags.get(PARTITION_TAG)} "
        f"{run.tags.get('dagster/run_key')} {run.run_id}"
        for run in runs
    )


def wait_until_settled(
    dev: Dagster,
    kafka: KafkaClient,
    deadline: float,
    allowed_failures: frozenset[str] = frozenset(),
) -> list[Run]:
    """Poll until both groups have no lag and no sensor run is in flight, twice in a row.

    Fails at once on a sensor run that failed (other than ``allowed_failures``), with its log.
    """
    settled = 0
    while True:
        # Lag first, runs after: a run still in flight when the lag was read is seen below.
        lags = [sum(x.lag for x in kafka.lag(g, t)) for _, _, g, t in STAGES.values()]
        runs = dev.sensor_runs(*SENSORS)
        failed = [r for r in runs if r.status in {"FAILURE", "CANCELED"}]
        failed = [r for r in failed if r.run_id not in allowed_failures]
        if failed:
            messages = "\n".join(dev.run_messages(failed[0].run_id)[-15:])
            raise AssertionError(
                f"sensor run(s) failed:\n{runs_summary(failed)}\nlast messages of the first:\n"
                f"{messages}"
            )
        in_flight = [r for r in runs if not r.finished]
        done = not any(lags) and not in_flight and runs
        settled = settled + 1 if done else 0
        if settled >= 2:
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the sensors did not carry the data through in time; lag {lag_summary(kafka)}\n"
                f"runs:\n{runs_summary(runs)}\n{dev.log_tails(30)}"
            )
        time.sleep(1.5)


def assert_no_two_runs_of_a_partition_overlap(runs: list[Run]) -> None:
    by_partition: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        assert PARTITION_TAG in run.tags, f"run {run.run_id} has no {PARTITION_TAG} tag"
        if run.start_time is not None:  # a run that never started occupied nothing
            by_partition[run.tags[PARTITION_TAG]].append(run)
    for tag, group in by_partition.items():
        ordered = sorted(group, key=lambda run: run.start_time or 0.0)
        for previous, following in pairwise(ordered):
            assert previous.end_time is not None, f"{tag}: {previous.run_id} never ended"
            assert following.start_time is not None
            assert following.start_time >= previous.end_time, (
                f"{tag}: run {following.run_id} started at {following.start_time:.3f}, before "
                f"run {previous.run_id} ended at {previous.end_time:.3f}"
            )


def ranges_by_partition(runs: list[Run], sensor: str) -> dict[int, list[tuple[int, int]]]:
    _, op, _, _ = STAGES[sensor]
    found: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for run in runs:
        if run.tags.get("dagster/sensor_name") == sensor:
            partition, start, end = run.offset_range(op)
            found[partition].append((start, end))
    return {p: sorted(spans) for p, spans in found.items()}


def assert_committed_equals_high_watermark(kafka: KafkaClient) -> None:
    for _, _, group, topic in STAGES.values():
        lags = kafka.lag(group, topic)
        assert all(x.committed == x.high_watermark for x in lags if x.high_watermark), lags
        assert sum(x.lag for x in lags) == 0, lags


def dlq_sizes(kafka: KafkaClient) -> dict[str, int]:
    return {
        topic: sum(high - low for low, high in kafka.watermarks(topic).values())
        for topic in (topics.RAW_UPDATES_DLQ, topics.PRODUCTS_ENRICHED_DLQ)
    }


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f}s")
        time.sleep(poll_s)


def assert_the_pull_carried_through(
    kafka: KafkaClient,
    es: ElasticsearchClient,
    runs: list[Run],
    max_runs_per_partition: int,
) -> dict[str, dict[str, Any]]:
    """After the sensors settled on one pull of the bundled sample: every run they launched
    succeeded, carries its stage's tags and follows its partition from offset 0, no two runs of
    a partition overlapped, offsets are at the end, every alert is there once, every product is
    indexed, and nothing was dead-lettered. Returns the alerts by id."""
    assert {run.status for run in runs} == {"SUCCESS"}, runs_summary(runs)
    for run in runs:
        sensor = run.tags["dagster/sensor_name"]
        job, op, _, topic = STAGES[sensor]
        partition, _, _ = run.offset_range(op)
        assert run.job_name == job
        assert run.tags[PARTITION_TAG] == f"{topic}-{partition}"
        assert run.tags[STAGE_TAG] == job
        assert run.run_config["ops"][op]["config"]["follow"] is True
    for sensor, topic in (
        (ENRICHMENT_SENSOR, topics.RAW_UPDATES),
        (ARBITRAGE_SENSOR, topics.PRODUCTS_ENRICHED),
    ):
        spans = ranges_by_partition(runs, sensor)
        for partition in kafka.watermarks(topic):
            starts = [start for start, _ in spans.get(partition, [])]
            assert starts and starts[0] == 0, (sensor, partition, spans.get(partition))
            assert len(starts) <= max_runs_per_partition, (
                f"{sensor} p{partition}: {len(starts)} runs for one pull"
            )
    assert_no_two_runs_of_a_partition_overlap(runs)
    assert_committed_equals_high_watermark(kafka)

    raw = read_all(kafka, topics.RAW_UPDATES)
    expected = assert_every_alert_once(kafka, es, raw)
    assert es.count(topics.PRODUCTS_INDEX) == len({m.key for m in raw}) == 500
    assert dlq_sizes(kafka) == dict.fromkeys(dlq_sizes(kafka), 0)
    return expected


def worker_pid(dev: Dagster, run_id: str) -> int | None:
    for message in dev.run_messages(run_id):
        match = WORKER_PID.match(message)
        if match:
            return int(match.group(1))
    return None


def generated_updates(count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` raw updates from the sample generator, through the pull's own merge code."""
    pulled_at = datetime.now(UTC).replace(microsecond=0)
    items = []
    for product in iter_products(count, seed, pulled_at):
        update = merge_market_products(product.asin, product.per_market, pulled_at, "sample")
        items.append((update["asin"], encode(update)))
    return items


def assert_sensors_running(dev: Dagster) -> None:
    for sensor in SENSORS:
        assert dev.sensor_status(sensor) == "RUNNING", f"{sensor} is not running"


# ---------------------------------------------------------------------------------- tests


# The supervised test (test_supervised.py) makes the same assertions on a pull carried through
# while the code server and the daemon are killed; this undisturbed case runs with the slow ones.
@pytest.mark.slow
def test_sensors_carry_a_pull_through_to_alerts(
    kafka: KafkaClient,
    es: ElasticsearchClient,
    start_dagster: StartDagster,
) -> None:
    # Planned ranges of 60 records (the sample has ~170 per partition): a following run goes on
    # past its range, so this does not mean three runs per partition any more.
    dev = start_dagster({MAX_RECORDS_ENV: "60"})
    assert_sensors_running(dev)

    # One pull of the bundled sample, run here; the sensors do the rest.
    started = time.monotonic()
    result = SAMPLE_DEFS.resolve_job_def("keepa_pull").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert result.success, "the keepa_pull job failed"
    raw_highs = {p: high for p, (_, high) in kafka.watermarks(topics.RAW_UPDATES).items()}
    assert sum(raw_highs.values()) == 500

    runs = wait_until_settled(dev, kafka, deadline=started + 240)
    elapsed = time.monotonic() - started

    # Runs follow their partition, so one run per partition takes the whole pull (the arbitrage
    # sensor may also start one before its records arrive, and a run ends after its idle time).
    expected = assert_the_pull_carried_through(kafka, es, runs, max_runs_per_partition=4)
    print(
        f"\n{len(runs)} sensor runs carried 500 raw updates to {len(expected)} alerts "
        f"in {elapsed:.0f}s"
    )


@pytest.mark.faults
def test_a_killed_stage_run_is_retried_and_nothing_is_lost(
    kafka: KafkaClient, es: ElasticsearchClient, start_dagster: StartDagster
) -> None:
    # ~10 000 records per partition: one enrichment run per partition, two batches of 5 000
    # each, several seconds of work, so there is time to kill a run between its commits.
    items = generated_updates(30_000, seed=20261127)
    asins = {asin for asin, _ in items}
    assert len(asins) == len(items)
    produce(kafka, topics.RAW_UPDATES, items)
    raw_highs = {p: high for p, (_, high) in kafka.watermarks(topics.RAW_UPDATES).items()}
    assert sum(raw_highs.values()) == len(items)

    started = time.monotonic()
    dev = start_dagster({MAX_RECORDS_ENV: "20000"})
    assert_sensors_running(dev)

    # An enrichment run in progress, its run worker's pid, and its range.
    def running_enrichment() -> tuple[Run, int] | None:
        for run in dev.sensor_runs(ENRICHMENT_SENSOR):
            if run.status == "STARTED":
                pid = worker_pid(dev, run.run_id)
                if pid is not None:
                    return run, pid
        return None

    victim, pid = wait_for(running_enrichment, 90, "an enrichment run starting", poll_s=0.2)
    partition, start, end = victim.offset_range("enrichment_stage")
    assert (start, end) == (0, raw_highs[partition]), victim.run_config
    assert dev.supervisor.started_here(pid), f"pid {pid} was not started by our Dagster"

    # Kill it mid-run: after its first commit, before its last.
    def first_commit() -> int | None:
        committed = kafka.committed_offsets(ENRICHMENT.live_group, topics.RAW_UPDATES)
        return committed[partition] if (committed[partition] or 0) > start else None

    progress = wait_for(first_commit, 60, f"a commit on {topics.RAW_UPDATES}[{partition}]", 0.05)
    assert progress < end, f"the run finished ({progress}/{end}) before it could be killed"
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: not dev.supervisor.started_here(pid), 10, f"pid {pid} exiting")
    committed_at_kill = kafka.committed_offsets(ENRICHMENT.live_group, topics.RAW_UPDATES)
    resume_from = committed_at_kill[partition]
    assert resume_from is not None and start < resume_from < end, (start, resume_from, end)

    # Dagster notices the dead worker and ends the run, which frees the partition's slot.
    def victim_ended() -> Run | None:
        (run,) = [r for r in dev.sensor_runs(ENRICHMENT_SENSOR) if r.run_id == victim.run_id]
        return run if run.finished else None

    ended = wait_for(
        victim_ended,
        60,
        f"run {victim.run_id} leaving STARTED after its worker {pid} was killed",
    )
    assert ended.status in {"FAILURE", "CANCELED"}, ended.status
    assert ended.end_time is not None
    # Not the run monitoring daemon (the default run launcher cannot check a worker's health):
    # the code server that spawned the worker sees it exit and fails the run, saying why.
    messages = dev.run_messages(victim.run_id)
    explanation = [m for m in messages if "terminated by signal 9" in m]
    assert explanation, "\n".join(messages[-10:])
    print(
        f"\nkilled run worker {pid} of {victim.run_id} at {resume_from}/{end}; run "
        f"{ended.status} {ended.end_time - killed_at:.1f}s later: {explanation}"
    )

    runs = wait_until_settled(
        dev, kafka, deadline=started + 300, allowed_failures=frozenset({victim.run_id})
    )
    elapsed = time.monotonic() - started

    # The sensor asked for the rest of the range again, after its backoff, and it succeeded.
    tag = f"{topics.RAW_UPDATES}-{partition}"
    of_partition = [r for r in runs if r.tags[PARTITION_TAG] == tag]
    assert [r.run_id for r in of_partition[:1]] == [victim.run_id], runs_summary(of_partition)
    assert len(of_partition) == 2, runs_summary(of_partition)
    retry = of_partition[1]
    assert retry.status == "SUCCESS"
    assert retry.offset_range("enrichment_stage") == (partition, resume_from, end)
    assert retry.tags["dagster/run_key"].endswith("#2"), retry.tags
    assert retry.creation_time >= ended.end_time + DEFAULT_BACKOFF_BASE_S - 1.0
    assert all(r.status == "SUCCESS" for r in runs if r.run_id != victim.run_id)
    assert_no_two_runs_of_a_partition_overlap(runs)

    # Nothing lost: offsets at the end, each ASIN indexed once, enriched at least once, no DLQ.
    assert_committed_equals_high_watermark(kafka)
    assert es.count(topics.PRODUCTS_INDEX) == len(asins)
    enriched_keys = [m.key for m in read_all(kafka, topics.PRODUCTS_ENRICHED)]
    assert set(enriched_keys) == asins
    duplicates = len(enriched_keys) - len(asins)
    assert dlq_sizes(kafka) == {topics.RAW_UPDATES_DLQ: 0, topics.PRODUCTS_ENRICHED_DLQ: 0}

    # And the alerts are all there, once each, on the topic and in the index.
    expected = expected_alerts(value for _, value in items)
    alert_ids = [m.json()["event_id"] for m in read_all(kafka, topics.ARBITRAGE_ALERTS)]
    assert len(alert_ids) == len(set(alert_ids)), "an event was published twice"
    assert set(alert_ids) == set(expected)
    assert es.count(topics.ALERTS_INDEX) == len(expected)
    print(
        f"{len(runs)} sensor runs; {duplicates} records enriched twice after the kill; "
        f"{len(expected)} alerts; {elapsed:.0f}s from Dagster's start to settled"
    )


@pytest.mark.faults
def test_a_run_terminated_from_the_ui_commits_its_batch_and_the_sensor_goes_on(
    kafka: KafkaClient, es: ElasticsearchClient, start_dagster: StartDagster
) -> None:
    """What the UI's Terminate button does (the same GraphQL mutation): the run stops after the
    batch it is on has committed, ends CANCELED, and the sensor's next run takes over from the
    committed offset; nothing lost, nothing twice, never two runs on the partition."""
    items = generated_updates(30_000, seed=20261129)
    asins = {asin for asin, _ in items}
    produce(kafka, topics.RAW_UPDATES, items)
    started = time.monotonic()
    dev = start_dagster({MAX_RECORDS_ENV: "20000"})
    assert_sensors_running(dev)

    def running_enrichment() -> Run | None:
        runs = [r for r in dev.sensor_runs(ENRICHMENT_SENSOR) if r.status == "STARTED"]
        return runs[0] if runs else None

    victim = wait_for(running_enrichment, 120, "an enrichment run starting", poll_s=0.2)
    partition, start, end = victim.offset_range("enrichment_stage")

    def first_commit() -> int | None:
        committed = kafka.committed_offsets(ENRICHMENT.live_group, topics.RAW_UPDATES)
        return committed[partition] if (committed[partition] or 0) > start else None

    progress = wait_for(first_commit, 90, f"a commit on {topics.RAW_UPDATES}[{partition}]", 0.05)
    assert progress < end, f"the run finished ({progress}/{end}) before it could be terminated"
    answer = dev.graphql(TERMINATE_MUTATION, {"runId": victim.run_id})["terminateRun"]
    assert answer["__typename"] == "TerminateRunSuccess", answer

    def victim_ended() -> Run | None:
        (run,) = [r for r in dev.sensor_runs(ENRICHMENT_SENSOR) if r.run_id == victim.run_id]
        return run if run.finished else None

    ended = wait_for(victim_ended, 60, f"run {victim.run_id} ending after Terminate")
    assert ended.status == "CANCELED", ended.status
    messages = dev.run_messages(victim.run_id)
    assert any("stopping: a stop was requested" in m for m in messages), "\n".join(messages[-10:])
    stopped_at = kafka.committed_offsets(ENRICHMENT.live_group, topics.RAW_UPDATES)[partition]
    # It finished the batch in flight (the enrichment pipelines two), then stopped.
    assert stopped_at is not None and progress <= stopped_at <= end, (progress, stopped_at, end)

    runs = wait_until_settled(
        dev, kafka, deadline=started + 240, allowed_failures=frozenset({victim.run_id})
    )
    tag = f"{topics.RAW_UPDATES}-{partition}"
    of_partition = [r for r in runs if r.tags[PARTITION_TAG] == tag]
    assert of_partition[0].run_id == victim.run_id
    if stopped_at < end:  # the next run took over where the terminated one committed
        assert of_partition[1].offset_range("enrichment_stage")[1] == stopped_at
    assert_no_two_runs_of_a_partition_overlap(runs)
    assert_committed_equals_high_watermark(kafka)
    assert es.count(topics.PRODUCTS_INDEX) == len(asins)
    enriched = [m.key for m in read_all(kafka, topics.PRODUCTS_ENRICHED)]
    assert sorted(enriched) == sorted(asins), "each product once on products.enriched"
    expected = expected_alerts(value for _, value in items)
    alert_ids = [m.json()["event_id"] for m in read_all(kafka, topics.ARBITRAGE_ALERTS)]
    assert sorted(alert_ids) == sorted(expected)
    print(
        f"\nterminated {victim.run_id} at {progress}/{end}; it committed up to {stopped_at} "
        f"and ended {ended.status}; {len(runs)} sensor runs settled the rest"
    )
