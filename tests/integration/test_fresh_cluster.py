"""Reading committed offsets on a brand-new Kafka cluster and across a coordinator restart.

On a fresh KRaft cluster the first OffsetFetch is answered NOT_COORDINATOR, which crashes
librdkafka 2.16's admin path (SIGSEGV); the sensors read offsets on every tick inside the code
server. These tests start their own single-node cluster in a temporary folder, on free ports,
so the shared broker of the suite is never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.kafka_offsets import LagReaderCrashedError, LagReaderProcess
from devservices import service
from devservices.kafka import Kafka
from devservices.settings import Settings

pytestmark = pytest.mark.integration
TOPIC = "fresh.topic"
GROUP = "fresh-group"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fresh_kafka(tmp_path: Path) -> Iterator[tuple[Kafka, KafkaClient]]:
    env = {
        **os.environ,
        "DEVSERVICES_HOME": str(tmp_path / "devservices"),
        "KAFKA_PORT": str(_free_port()),
        "KAFKA_CONTROLLER_PORT": str(_free_port()),
        # One node of its own, also when the suite runs against a cluster (KAFKA_BROKERS=3).
        "KAFKA_BROKERS": "1",
        # A plain throwaway broker even when the suite runs against the secured services.
        "ARBITRAGE_SECURE": "",
    }
    broker = Kafka(Settings.from_env(env))
    service.up([broker], timeout=120)
    try:
        yield broker, KafkaClient(bootstrap_servers=broker.address, timeout_s=10.0)
    finally:
        service.down(broker)


def _create_topic(kafka: KafkaClient) -> None:
    from confluent_kafka.admin import NewTopic

    futures = kafka.admin().create_topics([NewTopic(TOPIC, 3, 1)])
    for future in futures.values():
        future.result()


@pytest.mark.slow  # starts a broker of its own
def test_offsets_read_on_a_brand_new_cluster_without_crashing(
    fresh_kafka: tuple[Kafka, KafkaClient],
) -> None:
    _, kafka = fresh_kafka
    _create_topic(kafka)
    # The very first group request on this cluster, in this process: the admin path's
    # SIGSEGV would end the test run here.
    assert kafka.committed_offsets(GROUP, TOPIC) == {0: None, 1: None, 2: None}
    # Commits too, on groups whose coordinators are still loading (NOT_COORDINATOR is retried).
    for n in range(5):
        kafka.commit(f"{GROUP}-{n}", TOPIC, {0: n, 1: 0, 2: 0})
        assert kafka.committed_offsets(f"{GROUP}-{n}", TOPIC)[0] == n
    # And as the sensors read it.
    lags = kafka.lag_in_child_process("another-" + GROUP, TOPIC)
    assert [(lag.partition, lag.committed, lag.high_watermark) for lag in lags] == [
        (0, None, 0),
        (1, None, 0),
        (2, None, 0),
    ]


@pytest.mark.slow  # starts a broker of its own
def test_offsets_survive_a_coordinator_restart(
    fresh_kafka: tuple[Kafka, KafkaClient],
) -> None:
    broker, kafka = fresh_kafka
    _create_topic(kafka)
    kafka.commit(GROUP, TOPIC, {0: 3, 1: 5, 2: 7})
    # Restart the only broker: the group coordinator reloads __consumer_offsets, so the first
    # requests after it are answered NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS.
    service.down(broker)
    service.up([broker], timeout=120)
    fresh = KafkaClient(bootstrap_servers=broker.address, timeout_s=10.0)
    assert fresh.committed_offsets(GROUP, TOPIC) == {0: 3, 1: 5, 2: 7}
    assert {lag.partition: lag.committed for lag in fresh.lag_in_child_process(GROUP, TOPIC)} == {
        0: 3,
        1: 5,
        2: 7,
    }


def test_a_crash_of_the_offset_reader_costs_one_call_not_the_caller(
    kafka: KafkaClient,
) -> None:
    """SIGSEGV in the reader's child mid-request: the caller gets a sentence and goes on."""
    reader = LagReaderProcess()
    # A port nobody listens on keeps the request busy (metadata timeout) while we crash it.
    silent = {"bootstrap.servers": f"127.0.0.1:{_free_port()}", "client.id": "crash-test"}
    reader.read_lag(kafka.client_config(), "arbitrage-test-crash-group", "raw.keepa_updates", 5.0)
    assert reader._child is not None
    child_pid = reader._child.pid
    killer = threading.Timer(1.0, os.kill, (child_pid, signal.SIGSEGV))
    killer.start()
    started = time.monotonic()
    with pytest.raises(LagReaderCrashedError, match=f"exit code {-signal.SIGSEGV}"):
        reader.read_lag(silent, "arbitrage-test-crash-group", "raw.keepa_updates", 5.0)
    assert time.monotonic() - started < 5.0
    # The next call starts a new child and answers.
    lags = reader.read_lag(
        kafka.client_config(), "arbitrage-test-crash-group", "raw.keepa_updates", 5.0
    )
    assert [lag.partition for lag in lags] == [0, 1, 2]
    assert reader.starts == 2 and reader._child is not None and reader._child.pid != child_pid
    reader.close()


def test_a_hung_offset_reader_is_replaced(kafka: KafkaClient) -> None:
    reader = LagReaderProcess(answer_deadline_s=2.0)
    reader.read_lag(kafka.client_config(), "arbitrage-test-hang-group", "raw.keepa_updates", 5.0)
    assert reader._child is not None
    os.kill(reader._child.pid, signal.SIGSTOP)
    with pytest.raises(LagReaderCrashedError, match="did not answer within"):
        reader.read_lag(
            kafka.client_config(), "arbitrage-test-hang-group", "raw.keepa_updates", 5.0
        )
    lags = reader.read_lag(
        kafka.client_config(), "arbitrage-test-hang-group", "raw.keepa_updates", 5.0
    )
    assert len(lags) == 3
    reader.close()


def test_the_reader_child_imports_no_dagster() -> None:
    """It starts per code server and must stay small: confluent-kafka only."""
    probe = (
        "import sys, arbitrage.clients.kafka_offsets; "
        "print(any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
