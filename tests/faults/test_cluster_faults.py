"""A three-broker cluster loses the leader of the very partition a stage run is working on.

All the records are on one partition of the source topic, so the run (a real `dagster job
execute` process) works that partition from its first batch to its last. Right after its first
commit the leader of that partition is killed with SIGKILL. The topics have three replicas and
`min.insync.replicas=2`, so the two brokers left elect a new leader from the in-sync replicas
and go on taking writes; the run carries on, or fails without committing and its retry (still
with one broker down) completes. The killed broker is started again afterwards and must catch up
with every partition. Then the audit: every record processed once, nothing lost, no duplicate on
the output topic or the DLQ, the index complete, the committed offsets at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import KafkaError, Message, Producer

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.messages.codec import encode
from devservices.kafka import Kafka
from devservices.process import PidState
from devservices.settings import Settings as DevSettings
from tests.conftest import CLUSTER_BROKERS
from tests.faults.audit import REPO, audit_enrichment, stage_process
from tests.faults.test_service_faults import rerun_until_done, why_it_ended
from tests.faults.test_two_runs import wait_for_first_commit
from tests.integration.test_stages import good_updates

# It kills a broker of the shared cluster: alone, never beside a parallel worker's tests.
pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.exclusive]
RECORDS = 6000
# The partition the run works on and whose leader dies.
PARTITION = 1


def leader_of(kafka: KafkaClient, topic: str, partition: int) -> int:
    """Broker id of the partition's leader as the cluster's metadata has it now (-1: none)."""
    metadata = kafka.admin().list_topics(topic, timeout=10)
    return metadata.topics[topic].partitions[partition].leader


def node(broker_id: int) -> Kafka:
    """The local node behind a broker id (node ids are 1..KAFKA_BROKERS, devservices/kafka.py)."""
    return Kafka(DevSettings.from_env(), broker_id - 1)


def produce_to_partition(
    kafka: KafkaClient, topic: str, partition: int, items: list[tuple[str, bytes]]
) -> None:
    """Every record on one partition (keys would spread them over all three), each
    acknowledged by the in-sync replicas (acks=all)."""
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err.str())

    producer = Producer(kafka.producer_config())
    for key, value in items:
        while True:
            try:
                producer.produce(topic, value, key, partition=partition, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0, "records still unacknowledged after 60 s"
    assert not failures, failures[:3]


def under_replicated(kafka: KafkaClient) -> list[str]:
    """Partitions of the pipeline's topics whose in-sync replicas are fewer than their
    replicas: a broker that has not caught up (or is down)."""
    metadata = kafka.admin().list_topics(timeout=10)
    return [
        f"{spec.name}[{number}] isr {sorted(p.isrs)} of {sorted(p.replicas)}"
        for spec in topics.TOPICS
        for number, p in sorted(metadata.topics[spec.name].partitions.items())
        if set(p.isrs) != set(p.replicas)
    ]


def wait_until_in_sync(kafka: KafkaClient, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (lagging := under_replicated(kafka)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not lagging, f"the restarted broker did not catch up in {timeout_s:.0f}s: {lagging}"


@pytest.mark.usefixtures("clean_pipeline")
@pytest.mark.timeout(900)
def test_leader_of_the_working_partition_killed_mid_run_and_restarted(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    brokers = kafka.broker_ids()
    assert len(brokers) >= CLUSTER_BROKERS, (
        f"KAFKA_BROKERS asks for a cluster but Kafka at {kafka.bootstrap_servers} has brokers "
        f"{brokers}; start it with KAFKA_BROKERS=3 make services-up"
    )
    described = kafka.describe_topics([topics.RAW_UPDATES, topics.PRODUCTS_ENRICHED])
    for name, about in described.items():
        assert (about["replication_factor"], about["min.insync.replicas"]) == (3, 2), name
    updates = good_updates(RECORDS)
    produce_to_partition(
        kafka, topics.RAW_UPDATES, PARTITION, [(u["asin"], encode(u)) for u in updates]
    )
    assert not under_replicated(kafka)

    run = stage_process("enrichment", batch_size=50)
    victim: Kafka | None = None
    try:
        committed = wait_for_first_commit(kafka)
        assert set(committed) == {PARTITION}, committed
        assert committed[PARTITION] < RECORDS, "the run finished before the kill"
        # The leader right now: the broker the run is fetching this partition from.
        leader = leader_of(kafka, topics.RAW_UPDATES, PARTITION)
        victim = node(leader)
        state, pid = victim.check_pid(cleanup=False)
        assert state is PidState.RUNNING and pid is not None, f"{victim.name} is not running"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        print(
            f"killed {victim.name} (broker {leader}, pid {pid}), leader of "
            f"{topics.RAW_UPDATES}[{PARTITION}], at committed offset {committed[PARTITION]}"
        )
        output, _ = run.communicate(timeout=600)
        ran_s = time.monotonic() - killed_at
    finally:
        if run.poll() is None:
            run.kill()
    new_leader = leader_of(kafka, topics.RAW_UPDATES, PARTITION)
    assert new_leader not in (-1, leader), f"no failover: leader is {new_leader}"
    carried_on = run.returncode == 0
    ended = "carried on" if carried_on else f"failed: {why_it_ended(output or '')}"
    print(
        f"the live run ended {ran_s:.0f}s after the kill (exit {run.returncode}, {ended}); "
        f"new leader of the partition: broker {new_leader}"
    )
    if not carried_on:
        # Its retry, as the sensor would launch it: with the broker still down, two in-sync
        # replicas are enough for every write.
        rerun_until_done()

    # Later: the killed broker comes back and catches up with every partition.
    subprocess.run(
        [sys.executable, "-m", "devservices", "up", victim.name],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    wait_until_in_sync(kafka)

    outcome = "the run carried on" if carried_on else "the run failed, its retry completed"
    audit = audit_enrichment(
        f"enrichment: leader of {topics.RAW_UPDATES}[{PARTITION}] SIGKILLed mid-run on a "
        f"{len(brokers)}-broker cluster, restarted later ({outcome})",
        kafka,
        es,
        [u["asin"] for u in updates],
    )
    assert audit.source_records == RECORDS  # the source itself: none lost, none doubled
    audit.assert_exactly_once()
