"""Settings from the environment and the generated service configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from devservices.__main__ import main
from devservices.elasticsearch import Elasticsearch
from devservices.errors import DevServicesError
from devservices.kafka import Kafka, cluster_id, kafka_nodes, new_cluster_id
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
    monkeypatch.setenv("ES_NODES", "1")  # the single node's name, also under ES_NODES=3
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
    # No PLAINTEXT listener: nothing answers on KAFKA_PORT in secure mode.
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19094,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:19094"
    assert "PLAINTEXT:" not in props["listener.security.protocol.map"].replace("SASL_", "")
    assert [port for port, _name in kafka.ports()] == [19094, 9093]
    # Only the super user is formatted into the storage (a command line `ps` shows); the
    # other accounts are set through the admin API.
    scram = " ".join(kafka._scram_arguments())
    assert scram.count("name=") == 1 and f"name={secure.KAFKA_ADMIN}," in scram
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
    # Each job's own account beside the shared (operator) one.
    for suffix in ("PROVISION", "KEEPA_PULL", "ENRICHMENT", "ARBITRAGE", "NOTIFICATIONS"):
        assert f"export KAFKA_SASL_USERNAME_{suffix}=" in text
        assert f"export KAFKA_SASL_PASSWORD_{suffix}=" in text
    assert "export ELASTICSEARCH_USERNAME_ENRICHMENT=arbitrage-enrichment" in text
    # The Keepa account keeps the registry of tracked ASINs and the token ledger.
    assert "export ELASTICSEARCH_USERNAME_KEEPA_PULL=arbitrage-keepa-pull" in text
    roles = Elasticsearch(s).roles_yml()
    for role in ("arbitrage_provision", "arbitrage_enrichment", "arbitrage_operator"):
        assert f"\n{role}:\n" in roles
    assert "manage_own_api_key" not in roles and '"all"' in roles  # all: scratch namespaces only


def _props(kafka: Kafka) -> dict[str, str]:
    lines = kafka.server_properties().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_a_cluster_of_three_nodes_on_consecutive_ports(tmp_path: Path) -> None:
    s = Settings.from_env({"DEVSERVICES_HOME": str(tmp_path), "KAFKA_BROKERS": "3"})
    # A cluster's controller and secure ranges start 100 and 200 above KAFKA_PORT: from 9093
    # and 9094 the three ranges would overlap.
    assert (s.kafka_brokers, s.kafka_controller_port, s.kafka_secure_port) == (3, 9192, 9292)
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
    nodes = kafka_nodes(s)
    assert [(n.name, n.node_id, n.address) for n in nodes] == [
        ("kafka-1", 1, "127.0.0.1:9092"),
        ("kafka-2", 2, "127.0.0.1:9093"),
        ("kafka-3", 3, "127.0.0.1:9094"),
    ]
    props = _props(nodes[1])
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194"
    )
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:9193"
    assert props["log.dirs"] == str(tmp_path / "kafka-2" / "data")
    for name in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "default.replication.factor",
    ):
        assert props[name] == "3", name
    assert props["transaction.state.log.min.isr"] == props["min.insync.replicas"] == "2"
    assert [port for port, _ in nodes[2].ports()] == [9094, 9194]
    # Every node formats its storage with the one cluster id, kept beside them.
    assert cluster_id(s) == cluster_id(s) == (tmp_path / "kafka-cluster.id").read_text().strip()
    with pytest.raises(DevServicesError, match="no Kafka node 4"):
        Kafka(s, 3)


def test_one_node_keeps_its_name_directory_and_replication(tmp_path: Path) -> None:
    s = Settings.from_env({"DEVSERVICES_HOME": str(tmp_path), "KAFKA_PORT": "12092"})
    (node,) = kafka_nodes(s)
    assert (node.name, node.home, s.kafka_controller_port) == ("kafka", tmp_path / "kafka", 12093)
    props = _props(node)
    assert props["offsets.topic.replication.factor"] == props["min.insync.replicas"] == "1"
    assert s.kafka_bootstrap_servers == "127.0.0.1:12092"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_BROKERS": "3", "KAFKA_CONTROLLER_PORT": "9094"}, "KAFKA_PORT and KAFKA_CONT"),
        ({"KAFKA_BROKERS": "3", "KAFKA_SECURE_PORT": "9193"}, "CONTROLLER_PORT and KAFKA_SEC"),
        ({"KAFKA_BROKERS": "0"}, "KAFKA_BROKERS=0 must be positive"),
        ({"KAFKA_BROKERS": "12"}, "use 1 to 9"),
        ({"KAFKA_BROKERS": "3", "KAFKA_PORT": "65534"}, "no room for 3 nodes"),
    ],
)
def test_kafka_port_ranges_must_not_overlap(env: dict[str, str], message: str) -> None:
    with pytest.raises(DevServicesError, match=message):
        Settings.from_env(env)


def test_a_secure_cluster_lists_every_sasl_ssl_listener(tmp_path: Path) -> None:
    from devservices import secure

    s = Settings.from_env(
        {"DEVSERVICES_HOME": str(tmp_path), "ARBITRAGE_SECURE": "1", "KAFKA_BROKERS": "3"}
    )
    props = _props(Kafka(s, 2))
    assert props["listeners"] == ("SASL_SSL://127.0.0.1:9294,CONTROLLER://127.0.0.1:9194")
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    bootstrap = secure.client_env(s)["KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap == "127.0.0.1:9292,127.0.0.1:9293,127.0.0.1:9294"


def test_cli_status_lists_each_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEVSERVICES_HOME", str(tmp_path))
    monkeypatch.setenv("KAFKA_BROKERS", "3")
    monkeypatch.setenv("KAFKA_PORT", "12092")
    # The plain listeners, also when the suite itself runs in secure mode.
    monkeypatch.delenv("ARBITRAGE_SECURE", raising=False)
    assert main(["status", "kafka"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["kafka-1", "127.0.0.1:12092"],
        ["kafka-2", "127.0.0.1:12093"],
        ["kafka-3", "127.0.0.1:12094"],
    ]
    assert main(["status", "kafka-2"]) == 1
    assert capsys.readouterr().out.split()[0] == "kafka-2"
    assert main(["status", "kafka-4"]) == 1
    assert "no Kafka node 4 with KAFKA_BROKERS=3" in capsys.readouterr().err


def test_nodes_of_another_layout_block_up_and_are_stopped_by_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cluster left running when KAFKA_BROKERS went back to 1: `up` says so, `status` shows
    it, `down kafka` stops it (a stand-in process holds its pid file)."""
    import subprocess

    from devservices.process import PidFile, pid_alive

    monkeypatch.setenv("DEVSERVICES_HOME", str(tmp_path))
    monkeypatch.setenv("KAFKA_BROKERS", "1")
    stand_in = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        PidFile(tmp_path / "kafka-2" / "kafka-2.pid").write(stand_in.pid)
        assert main(["up", "kafka"]) == 1
        assert "Kafka is running as kafka-2" in capsys.readouterr().err
        assert main(["status", "kafka"]) == 1
        assert "kafka-2" in capsys.readouterr().out
        assert main(["down", "kafka"]) == 0
        stand_in.wait(timeout=10)
        assert not pid_alive(stand_in.pid)
    finally:
        if stand_in.poll() is None:
            stand_in.kill()


def _yml(node: Elasticsearch) -> dict[str, str]:
    lines = node.elasticsearch_yml().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line and not line.startswith("#"))


def test_an_elasticsearch_cluster_of_three_nodes_on_consecutive_ports(tmp_path: Path) -> None:
    from devservices.elasticsearch import elasticsearch_nodes

    s = Settings.from_env({"DEVSERVICES_HOME": str(tmp_path), "ES_NODES": "3", "ES_PORT": "12200"})
    nodes = elasticsearch_nodes(s)
    assert [(n.name, n.address, n.home) for n in nodes] == [
        (f"elasticsearch-{i}", f"http://127.0.0.1:{12199 + i}", tmp_path / f"elasticsearch-{i}")
        for i in (1, 2, 3)
    ]
    assert nodes[2].ports() == [(12202, "ES_PORT+2"), (9302, "ES_TRANSPORT_PORT+2")]
    assert s.elasticsearch_urls == (
        "http://127.0.0.1:12200,http://127.0.0.1:12201,http://127.0.0.1:12202"
    )
    yml = _yml(nodes[1])
    assert "discovery.type" not in yml
    assert (yml["node.name"], yml["http.port"], yml["transport.port"]) == (
        '"elasticsearch-2"',
        "12201",
        "9301",
    )
    assert yml["discovery.seed_hosts"] == '["127.0.0.1:9300", "127.0.0.1:9301", "127.0.0.1:9302"]'
    assert yml["path.data"] == f'"{tmp_path / "elasticsearch-2" / "data"}"'
    # The bootstrap list only until the node has been part of the cluster: given again on a
    # later start it could bootstrap a second cluster.
    assert yml["cluster.initial_master_nodes"] == (
        '["elasticsearch-1", "elasticsearch-2", "elasticsearch-3"]'
    )
    nodes[1].home.mkdir(parents=True)
    nodes[1].after_ready()
    assert "cluster.initial_master_nodes" not in _yml(nodes[1])
    with pytest.raises(DevServicesError, match="no Elasticsearch node 4 with ES_NODES=3"):
        Elasticsearch(s, 3)


def test_one_elasticsearch_node_keeps_its_name_directory_and_discovery(tmp_path: Path) -> None:
    from devservices.elasticsearch import elasticsearch_nodes

    s = Settings.from_env({"DEVSERVICES_HOME": str(tmp_path)})
    (node,) = elasticsearch_nodes(s)
    assert (node.name, node.home, node.ports()) == (
        "elasticsearch",
        tmp_path / "elasticsearch",
        [(9200, "ES_PORT"), (9300, "ES_TRANSPORT_PORT")],
    )
    yml = _yml(node)
    assert yml["discovery.type"] == '"single-node"' and yml["node.name"] == '"local"'
    assert "discovery.seed_hosts" not in yml and "cluster.initial_master_nodes" not in yml
    assert s.elasticsearch_urls == "http://127.0.0.1:9200"


def test_a_secure_elasticsearch_cluster_talks_mutual_tls_between_its_nodes(tmp_path: Path) -> None:
    from devservices import secure

    env = {"DEVSERVICES_HOME": str(tmp_path), "ARBITRAGE_SECURE": "1"}
    single = _yml(Elasticsearch(Settings.from_env(env)))
    assert single["xpack.security.transport.ssl.enabled"] == "false"
    s = Settings.from_env({**env, "ES_NODES": "3"})
    yml = _yml(Elasticsearch(s, 1))
    assert yml["xpack.security.enabled"] == "true"
    assert yml["xpack.security.transport.ssl.enabled"] == "true"
    assert yml["xpack.security.transport.ssl.verification_mode"] == '"full"'
    assert yml["xpack.security.transport.ssl.client_authentication"] == '"required"'
    assert yml["xpack.security.transport.ssl.certificate"] == '"tls/server.pem"'
    assert secure.client_env(s)["ELASTICSEARCH_URL"] == (
        "https://127.0.0.1:9200,https://127.0.0.1:9201,https://127.0.0.1:9202"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ES_NODES": "0"}, "ES_NODES=0 must be positive"),
        ({"ES_NODES": "6"}, "use 1 to 5"),
        ({"ES_NODES": "three"}, "ES_NODES='three' is not an integer"),
        ({"ES_NODES": "3", "ES_TRANSPORT_PORT": "9202"}, "ES_PORT and ES_TRANSPORT_PORT overlap"),
        ({"ES_NODES": "3", "ES_PORT": "65534"}, "ES_PORT=65534 leaves no room for 3 nodes"),
    ],
)
def test_bad_es_nodes_are_refused_with_a_sentence(env: dict[str, str], message: str) -> None:
    with pytest.raises(DevServicesError, match=message):
        Settings.from_env(env)


def test_cli_status_lists_each_elasticsearch_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEVSERVICES_HOME", str(tmp_path))
    monkeypatch.setenv("ES_NODES", "3")
    monkeypatch.setenv("ES_PORT", "12200")
    monkeypatch.delenv("ARBITRAGE_SECURE", raising=False)
    assert main(["status", "es"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        [f"elasticsearch-{i}", f"http://127.0.0.1:{12199 + i}"] for i in (1, 2, 3)
    ]
    assert main(["status", "es-2"]) == 1
    assert capsys.readouterr().out.split()[0] == "elasticsearch-2"
    assert main(["status", "elasticsearch-4"]) == 1
    assert "no Elasticsearch node 4 with ES_NODES=3" in capsys.readouterr().err


def test_elasticsearch_nodes_of_another_layout_block_up_and_are_stopped_by_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cluster left running when ES_NODES went back to 1: `up` says so, `status` shows it,
    `down elasticsearch` stops it (a stand-in process holds its pid file)."""
    import subprocess

    from devservices.process import PidFile, pid_alive

    monkeypatch.setenv("DEVSERVICES_HOME", str(tmp_path))
    monkeypatch.setenv("ES_NODES", "1")
    stand_in = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        PidFile(tmp_path / "elasticsearch-3" / "elasticsearch-3.pid").write(stand_in.pid)
        assert main(["up", "es"]) == 1
        assert "Elasticsearch is running as elasticsearch-3" in capsys.readouterr().err
        assert main(["status", "es"]) == 1
        assert "elasticsearch-3" in capsys.readouterr().out
        assert main(["down", "elasticsearch"]) == 0
        stand_in.wait(timeout=10)
        assert not pid_alive(stand_in.pid)
    finally:
        if stand_in.poll() is None:
            stand_in.kill()
