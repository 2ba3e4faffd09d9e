"""docker-compose.yml describes the same system as the local services and the pipeline code."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from arbitrage.clients.elasticsearch import DEFAULT_URL
from arbitrage.clients.kafka import DEFAULT_BOOTSTRAP
from arbitrage.domain import topics
from devservices import versions
from devservices.dagster_instance import POSTGRES_ENV
from devservices.dagster_processes import (
    CODE_SERVER_MODULE,
    DEFINITIONS_MODULE,
    LOCATION,
    WEBSERVER_MODULE,
)

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DAGSTER_SERVICES = ("dagster-code", "dagster-webserver", "dagster-daemon")


def test_topic_settings_match_the_pipeline() -> None:
    settings = COMPOSE["x-topic-settings"]
    assert int(settings["TOPIC_PARTITIONS"]) == topics.PARTITIONS
    assert int(settings["TOPIC_RETENTION_MS"]) == topics.RETENTION_MS
    assert int(settings["TOPIC_MAX_MESSAGE_BYTES"]) == topics.TOPIC_MAX_MESSAGE_BYTES
    config = topics.TOPICS[0].config(1)
    assert settings["TOPIC_TIMESTAMP_TYPE"] == config["message.timestamp.type"]
    assert settings["TOPIC_RETENTION_MS"] == config["retention.ms"]
    script = COMPOSE["services"]["kafka-init"]["command"][0]
    for spec in topics.TOPICS:
        assert topics.plain_name(spec.name) in script


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
    services = COMPOSE["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{versions.KAFKA_VERSION}"
    assert services["elasticsearch"]["image"].endswith(f":{versions.ELASTICSEARCH_VERSION}")
    es_env = services["elasticsearch"]["environment"]
    assert es_env["discovery.type"] == "single-node"
    assert es_env["xpack.security.enabled"] == "false"


def test_docker_dagster_instance_matches_the_local_one() -> None:
    # Storage included: both read PostgreSQL's address and credentials from DAGSTER_POSTGRES_*.
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    docker = yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())
    assert docker == local
    assert (
        "COPY docker/dagster.yaml /opt/dagster/home/dagster.yaml"
        in (ROOT / "docker" / "Dockerfile").read_text()
    )


def test_instance_storage_is_postgres_from_the_environment_only() -> None:
    storage = yaml.safe_load((ROOT / "dagster.yaml").read_text())["storage"]
    fields = dict(storage["custom"]["config"]["postgres_db"])
    # The driver dagster-postgres installs (SQLAlchemy 2.1 would pick psycopg 3 otherwise).
    assert fields.pop("scheme") == "postgresql+psycopg2"
    assert set(fields) == {"hostname", "port", "username", "password", "db_name"}
    # Every other value is read from the environment: no password (or address) in the file.
    assert {name: value for name, value in fields.items() if set(value) != {"env"}} == {}
    assert sorted(value["env"] for value in fields.values()) == sorted(POSTGRES_ENV)


def test_compose_gives_dagster_what_its_instance_reads() -> None:
    services = COMPOSE["services"]
    for name in DAGSTER_SERVICES:
        env = services[name]["environment"]
        assert set(POSTGRES_ENV) <= set(env), name
        assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
        assert env["DAGSTER_POSTGRES_PORT"] == "5432"
        assert env["DAGSTER_POSTGRES_USER"] == services["postgres"]["environment"]["POSTGRES_USER"]
        assert env["DAGSTER_POSTGRES_DB"] == services["postgres"]["environment"]["POSTGRES_DB"]
        assert env["DAGSTER_POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert services["postgres"]["image"] == f"postgres:{versions.POSTGRES_MAJOR}"


def test_compose_holds_no_password() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    # Every mention of a password is an interpolation that fails without POSTGRES_PASSWORD.
    for match in re.finditer(r"PASSWORD:\s*(\S+)", text):
        assert match.group(1).startswith("${POSTGRES_PASSWORD:?"), match.group(0)
    assert COMPOSE["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )


def test_only_the_code_server_gets_the_keepa_key() -> None:
    services = COMPOSE["services"]
    # Run workers are the code server's children (the default run launcher asks it to start
    # them); the webserver and the daemon never read the key.
    assert "KEEPA_API_KEY" not in services["dagster-webserver"]["environment"]
    assert "KEEPA_API_KEY" not in services["dagster-daemon"]["environment"]
    assert services["dagster-code"]["environment"]["KEEPA_API_KEY"] == "${KEEPA_API_KEY:-}"


def test_compose_runs_the_three_dagster_processes_as_locally() -> None:
    services = COMPOSE["services"]
    # The code location's gRPC server, named and addressed the way workspace.yaml reads it.
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    (location,) = workspace["load_from"]
    grpc = location["grpc_server"]
    assert grpc["host"] == {"env": "DAGSTER_GRPC_HOST"}
    assert grpc["port"] == {"env": "DAGSTER_GRPC_PORT"}
    code = services["dagster-code"]
    command = code["command"]
    assert command[:3] == ["python", "-m", CODE_SERVER_MODULE]
    flags = dict(zip(command[3::2], command[4::2], strict=True))
    assert flags["--module-name"] == DEFINITIONS_MODULE
    assert flags["--location-name"] == grpc["location_name"] == LOCATION
    for name in DAGSTER_SERVICES:
        env = services[name]["environment"]
        assert env["DAGSTER_GRPC_HOST"] == "dagster-code", name
        assert env["DAGSTER_GRPC_PORT"] == flags["--port"], name
        assert services[name]["restart"] == "unless-stopped", name
    # The webserver behind the UI guard, as DagsterProcesses runs it; the only Dagster port
    # published, and on loopback.
    assert services["dagster-webserver"]["command"][:3] == ["python", "-m", WEBSERVER_MODULE]
    assert services["dagster-webserver"]["ports"] == ["127.0.0.1:3000:3000"]
    assert "ports" not in services["dagster-code"] and "ports" not in services["dagster-daemon"]
    allowed = services["dagster-webserver"]["environment"]["ARBITRAGE_UI_ALLOWED_HOSTS"]
    assert allowed == "${ARBITRAGE_UI_ALLOWED_HOSTS:-}"
    assert services["dagster-daemon"]["command"][:2] == ["dagster-daemon", "run"]
    for name in ("dagster-webserver", "dagster-daemon"):
        assert "workspace.yaml" in services[name]["command"], name
        assert services[name]["depends_on"] == {"dagster-code": {"condition": "service_healthy"}}
