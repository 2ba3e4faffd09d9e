"""ELASTICSEARCH_URL may name every node of a cluster; the local default does, from ES_PORT and
ES_NODES; the indices get a replica wherever a second node can hold it."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient, elasticsearch_hosts
from arbitrage.clients.index_templates import INDEX_TEMPLATES_BODIES
from arbitrage.domain.redaction import has_credentials, redact_url, scrub_url
from arbitrage.settings import Settings, SettingsError

NODES = "http://127.0.0.1:12200,http://127.0.0.1:12201,http://127.0.0.1:12202"


def test_the_local_default_lists_every_node_from_es_port_and_es_nodes() -> None:
    assert Settings.from_env({}).elasticsearch_url == "http://127.0.0.1:9200"
    assert Settings.from_env({"ES_PORT": "12200"}).elasticsearch_url == "http://127.0.0.1:12200"
    assert Settings.from_env({"ES_PORT": "12200", "ES_NODES": "3"}).elasticsearch_url == NODES
    # A URL given wins over the local services.
    given = {"ES_NODES": "3", "ELASTICSEARCH_URL": "https://es.example:9200"}
    assert Settings.from_env(given).elasticsearch_url == "https://es.example:9200"


def test_the_client_gets_every_node() -> None:
    """(tests/integration/test_elasticsearch_nodes.py: what it does when one does not answer.)"""
    assert elasticsearch_hosts(f" {NODES.replace(',', ' , ')}, ") == NODES.split(",")
    client = ElasticsearchClient(url=NODES).client()
    assert sorted(node.base_url for node in client.transport.node_pool.all()) == NODES.split(",")


def test_a_ca_file_needs_every_node_on_https(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    env = {"ELASTICSEARCH_CA_CERTS": str(ca)}
    mixed = "https://127.0.0.1:12200,http://127.0.0.1:12201"
    with pytest.raises(SettingsError, match="is not https"):
        Settings.from_env({**env, "ELASTICSEARCH_URL": mixed})
    both = mixed.replace("http:", "https:")
    assert Settings.from_env({**env, "ELASTICSEARCH_URL": both}).elasticsearch_url == both


def test_every_node_url_is_redacted() -> None:
    urls = "https://user:hunter2@h1:9200,https://user:hunter2@h2:9200"
    assert redact_url(urls) == "https://user:***@h1:9200,https://user:***@h2:9200"
    assert has_credentials(urls) and not has_credentials(NODES)
    assert "hunter2" not in scrub_url(f"{urls} refused hunter2", urls)
    shown = ElasticsearchClient(url=urls).shown_url
    assert "hunter2" not in shown and "h2:9200" in shown


def test_the_templates_expand_to_one_replica_where_there_is_a_second_node() -> None:
    for index, body in INDEX_TEMPLATES_BODIES.items():
        settings = body["template"]["settings"]
        assert settings["auto_expand_replicas"] == "0-1", index
        assert "number_of_replicas" not in settings, index
