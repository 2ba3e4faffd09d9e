"""The services break for real under a live stage run: the broker killed (SIGKILL) and restarted,
the broker frozen (SIGSTOP) past the clients' timeouts, Elasticsearch killed mid-bulk or frozen,
the index made read-only mid-run. Whatever the run does (carry on, or fail without committing),
after the services are back a rerun leaves every record processed exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.messages.codec import encode
from devservices.__main__ import SERVICES
from devservices.settings import Settings as DevSettings
from tests.faults.audit import REPO, audit_enrichment, stage_process
from tests.faults.test_two_runs import wait_for_first_commit
from tests.integration.kafka_io import produce
from tests.integration.test_stages import good_updates, run_job

pytestmark = [pytest.mark.integration, pytest.mark.faults]
RECORDS = 6000


def service_pids(name: str) -> list[int]:
    """The service's processes: Kafka's every node (the whole cluster when KAFKA_BROKERS>1)."""
    pids = []
    for svc in SERVICES[name](DevSettings.from_env()):
        _, pid = svc.check_pid(cleanup=False)
        assert pid is not None, f"{svc.name} is not running"
        pids.append(pid)
    return pids


def devservices_up(name: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "devservices", "up", name], cwd=REPO, check=True, timeout=300
    )


def freeze(name: str, seconds: float) -> None:
    pids = service_pids(name)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def why_it_ended(output: str) -> str:
    """The run's own sentence on why it failed (the stage's errors say "could not …" or "was
    taken over"), else its last line."""
    lines = output.strip().splitlines()
    reasons = [line for line in lines if "could not " in line or "taken over" in line]
    return (reasons or lines[-1:] or [""])[0][:400]


def rerun_until_done(attempts: int = 4) -> None:
    """A service just back may still be loading (coordinator, shards): rerun like the sensor
    would, a few times, until a run succeeds."""
    for _ in range(attempts):
        if run_job("enrichment").success:
            return
        time.sleep(5)
    raise AssertionError(f"no rerun succeeded in {attempts} attempts")


def break_mid_run(
    kafka: KafkaClient, es: ElasticsearchClient, case: str, fault: Callable[[], None]
) -> None:
    updates = good_updates(RECORDS)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in updates])
    run = stage_process("enrichment", batch_size=50)
    try:
        wait_for_first_commit(kafka)
        fault()
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    print(f"{case}: the live run exited {run.returncode} ({why_it_ended(output or '')})")
    rerun_until_done()
    audit = audit_enrichment(
        case,
        kafka,
        es,
        [u["asin"] for u in updates],
    )
    audit.assert_exactly_once()


@pytest.mark.usefixtures("clean_pipeline")
# A restarted single broker recovers its transaction state before anything can commit; the
# live run may wait out its transactional timeouts (30 s a step, retried) before it fails.
@pytest.mark.timeout(900)
def test_broker_killed_mid_run_and_restarted(kafka: KafkaClient, es: ElasticsearchClient) -> None:
    def kill_broker() -> None:
        for pid in service_pids("kafka"):  # a cluster loses all its brokers at once
            os.kill(pid, signal.SIGKILL)
        time.sleep(2)
        devservices_up("kafka")

    break_mid_run(kafka, es, "enrichment: broker SIGKILLed mid-run, restarted", kill_broker)


@pytest.mark.usefixtures("clean_pipeline")
def test_broker_frozen_past_the_client_timeouts(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    # Past the transactional calls' 30 s timeout.
    break_mid_run(
        kafka, es, "enrichment: broker SIGSTOPped 40 s mid-run", lambda: freeze("kafka", 40)
    )


@pytest.mark.usefixtures("clean_pipeline")
def test_elasticsearch_killed_mid_bulk(kafka: KafkaClient, es: ElasticsearchClient) -> None:
    def kill_es() -> None:
        os.kill(service_pids("elasticsearch")[0], signal.SIGKILL)
        time.sleep(5)  # the run fails meanwhile: nothing answers its bulk requests
        devservices_up("elasticsearch")

    break_mid_run(kafka, es, "enrichment: Elasticsearch SIGKILLed mid-bulk", kill_es)


@pytest.mark.usefixtures("clean_pipeline")
def test_elasticsearch_frozen_mid_run(kafka: KafkaClient, es: ElasticsearchClient) -> None:
    break_mid_run(
        kafka,
        es,
        "enrichment: Elasticsearch SIGSTOPped 20 s mid-run",
        lambda: freeze("elasticsearch", 20),
    )


@pytest.mark.usefixtures("clean_pipeline")
def test_index_made_read_only_mid_run(kafka: KafkaClient, es: ElasticsearchClient) -> None:
    def block_writes() -> None:
        blocks = es.client().indices.put_settings
        blocks(index=topics.PRODUCTS_INDEX, settings={"index.blocks.write": True})
        time.sleep(10)
        blocks(index=topics.PRODUCTS_INDEX, settings={"index.blocks.write": False})

    break_mid_run(kafka, es, "enrichment: index read-only for 10 s mid-run", block_writes)
