"""Settings from the environment and the generated service configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from devservices.__main__ import main
from devservices.elasticsearch import Elasticsearch
from devservices.errors import DevServicesError
from devservices.kafka import Kafka, new_cluster_id
from devservices.settings import Settings


def test_settings_defaults_and_overrides(tmp_path: Path) -> None:
    s = Settings.from_env({"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert (s.kafka_port, s.kafka_controller_port, s.es_port, s.es_transport_port) == (
        9092,
        9093,
        9200,
        9300,
    )
    assert s.timeout == 120
    assert s.cache_dir == tmp_path / "xdg" / "arbitrage"
    assert s.state_dir.name == ".devservices"
    s = Settings.from_env(
        {
            "ARBITRAGE_CACHE_DIR": str(tmp_path / "c"),
            "DEVSERVICES_HOME": str(tmp_path / "s"),
            "KAFKA_PORT": "19092",
            "DEVSERVICES_TIMEOUT": "7",
        }
    )
    assert (s.cache_dir, s.state_dir, s.kafka_port, s.timeout) == (
        tmp_path / "c",
        tmp_path / "s",
        19092,
        7,
    )


@pytest.mark.parametrize(("name", "value"), [("KAFKA_PORT", "abc"), ("ES_PORT", "70000")])
def test_bad_port_env(name: str, value: str) -> None:
    with pytest.raises(DevServicesError, match=name):
        Settings.from_env({name: value})


def make_settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"ARBITRAGE_CACHE_DIR": str(tmp_path / "cache"), "DEVSERVICES_HOME": str(tmp_path)}
    )


def test_kafka_server_properties(tmp_path: Path) -> None:
    props = dict(
        line.split("=", 1)
        for line in Kafka(make_settings(tmp_path)).server_properties().splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "data")


def test_cluster_id_format() -> None:
    for _ in range(50):
        cid = new_cluster_id()
        assert len(cid) == 22
        assert not cid.startswith("-")


def test_elasticsearch_yml(tmp_path: Path) -> None:
    yml = Elasticsearch(make_settings(tmp_path)).elasticsearch_yml()
    assert 'discovery.type: "single-node"' in yml
    assert "http.port: 9200" in yml
    assert "xpack.security.enabled: false" in yml
    assert f'path.data: "{tmp_path / "elasticsearch" / "data"}"' in yml


def test_cli_status_all_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEVSERVICES_HOME", str(tmp_path))
    assert main(["status"]) == 1
    out = capsys.readouterr().out
    assert "kafka" in out and "elasticsearch" in out and "down" in out


def test_cli_logs_without_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEVSERVICES_HOME", str(tmp_path))
    assert main(["logs", "es"]) == 1
    assert "no logs for elasticsearch yet" in capsys.readouterr().err


def test_secure_mode_configures_sasl_ssl_acls_and_a_private_client_env(tmp_path: Path) -> None:
    import stat

    from devservices import secure

    s = Settings.from_env(
        {
            "DEVSERVICES_HOME": str(tmp_path / "s"),
            "ARBITRAGE_SECURE": "1",
            "KAFKA_SECURE_PORT": "19094",
        }
    )
    assert s.secure and s.kafka_secure_port == 19094
    kafka = Kafka(s)
    props = dict(
        line.split("=", 1) for line in kafka.server_properties().splitlines() if "=" in line
    )
    assert "SASL_SSL://127.0.0.1:19094" in props["listeners"]
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["listener.security.protocol.map"].endswith("CONTROLLER:SASL_PLAINTEXT")
    assert kafka.data_dir.name == "data-secure"
    assert (19094, "KAFKA_SECURE_PORT") in kafka.ports()
    assert Elasticsearch(s).address.startswith("https://")
    assert "xpack.security.enabled: true" in Elasticsearch(s).elasticsearch_yml()

    env_file = secure.write_client_env(s)
    for private in (env_file, secure.credentials_path(s), s.state_dir / "tls" / "server.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    text = env_file.read_text()
    for name in ("KAFKA_SASL_PASSWORD", "KAFKA_SSL_CA_LOCATION", "ELASTICSEARCH_CA_CERTS"):
        assert f"export {name}=" in text
    assert "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19094" in text
