"""How many copies the pipeline's topics get, and what a write needs
(arbitrage/domain/topics.py)."""

from __future__ import annotations

import pytest

from arbitrage.domain import topics
from arbitrage.settings import Settings, SettingsError

SPEC = topics.TOPIC_BY_NAME[topics.RAW_UPDATES]


@pytest.mark.parametrize(
    ("brokers", "requested", "replicas", "min_isr"),
    [
        (1, None, 1, 1),
        (2, None, 2, 1),  # two of two would stop every write while either broker is down
        (3, None, 3, 2),
        (5, None, 3, 2),
        (5, 5, 5, 2),
        (3, 1, 1, 1),
    ],
)
def test_replicas_follow_the_cluster(
    brokers: int, requested: int | None, replicas: int, min_isr: int
) -> None:
    assert topics.replication_factor(brokers, requested) == replicas
    assert SPEC.config(replicas)["min.insync.replicas"] == str(min_isr)


def test_an_existing_topic_with_fewer_replicas_is_named() -> None:
    assert SPEC.replication_problems(3, 2, brokers=3) == []
    assert SPEC.replication_problems(1, 1, brokers=1) == []
    (fewer,) = SPEC.replication_problems(1, 1, brokers=3)
    assert "raw.keepa_updates has replication factor 1" in fewer
    assert "cluster of 3 brokers get 3" in fewer and "kafka-reassign-partitions" in fewer
    (weak,) = SPEC.replication_problems(3, 1, brokers=3)
    assert "min.insync.replicas=1 with 3 replicas" in weak
    assert "--add-config min.insync.replicas=2" in weak
    # A broker down (2 of 3 listed) is not a reason to complain about a 3-replica topic.
    assert SPEC.replication_problems(3, 2, brokers=2) == []


def test_the_default_bootstrap_lists_every_local_node() -> None:
    assert Settings.from_env({}).kafka_bootstrap_servers == "127.0.0.1:9092"
    cluster = Settings.from_env({"KAFKA_BROKERS": "3", "KAFKA_PORT": "12092"})
    assert cluster.kafka_bootstrap_servers == "127.0.0.1:12092,127.0.0.1:12093,127.0.0.1:12094"
    explicit = {"KAFKA_BROKERS": "3", "KAFKA_BOOTSTRAP_SERVERS": "kafka-a:9092"}
    assert Settings.from_env(explicit).kafka_bootstrap_servers == "kafka-a:9092"


def test_replication_factor_is_automatic_unless_set() -> None:
    assert Settings.from_env({}).kafka().replication_factor is None
    assert Settings.from_env({"KAFKA_REPLICATION_FACTOR": "2"}).kafka().replication_factor == 2
    with pytest.raises(SettingsError, match="KAFKA_REPLICATION_FACTOR=0 must be at least 1"):
        Settings.from_env({"KAFKA_REPLICATION_FACTOR": "0"})
