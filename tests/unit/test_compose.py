"""docker-compose.yml describes the same system as the local services and the pipeline code."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines import topics
from resources.elasticsearch import DEFAULT_URL
from resources.kafka import DEFAULT_BOOTSTRAP

COMPOSE = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())


def test_topic_settings_match_the_pipeline() -> None:
    settings = COMPOSE["x-topic-settings"]
    assert int(settings["TOPIC_PARTITIONS"]) == topics.PARTITIONS
    assert int(settings["TOPIC_RETENTION_MS"]) == topics.RETENTION_MS
    assert int(settings["TOPIC_MAX_MESSAGE_BYTES"]) == topics.TOPIC_MAX_MESSAGE_BYTES
    config = topics.TOPICS[0].config()
    assert settings["TOPIC_TIMESTAMP_TYPE"] == config["message.timestamp.type"]
    assert settings["TOPIC_RETENTION_MS"] == config["retention.ms"]
    script = COMPOSE["services"]["kafka-init"]["command"][0]
    for spec in topics.TOPICS:
        assert spec.name in script


def test_ports_match_the_local_defaults() -> None:
    services = COMPOSE["services"]
    kafka_port = DEFAULT_BOOTSTRAP.rsplit(":", 1)[1]
    es_port = DEFAULT_URL.rsplit(":", 1)[1]
    assert f"127.0.0.1:{kafka_port}:9092" in services["kafka"]["ports"]
    assert f"127.0.0.1:{es_port}:9200" in services["elasticsearch"]["ports"]
    assert (
        "EXTERNAL://127.0.0.1:9092"
        in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )


def test_versions_match_the_local_services() -> None:
    from devservices import versions

    services = COMPOSE["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{versions.KAFKA_VERSION}"
    assert services["elasticsearch"]["image"].endswith(f":{versions.ELASTICSEARCH_VERSION}")
    es_env = services["elasticsearch"]["environment"]
    assert es_env["discovery.type"] == "single-node"
    assert es_env["xpack.security.enabled"] == "false"


def test_docker_dagster_instance_matches_the_local_one() -> None:
    root = Path(__file__).parents[2]
    local = yaml.safe_load((root / "dagster.yaml").read_text())
    docker = yaml.safe_load((root / "docker" / "dagster.yaml").read_text())
    assert "postgres" in docker.pop("storage")
    assert docker == local
