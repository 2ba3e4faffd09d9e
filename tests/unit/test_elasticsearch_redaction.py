"""An ELASTICSEARCH_URL with credentials in it is shown redacted wherever it is printed."""

from __future__ import annotations

import json
import logging

import pytest

from arbitrage.cli.main import main
from arbitrage.clients.elasticsearch import ElasticsearchClient, ElasticsearchUnavailableError
from arbitrage.settings import Settings
from pipelines.definitions import build_definitions
from resources.elasticsearch import ElasticsearchResource


def test_elasticsearch_errors_logs_and_repr_never_show_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # elastic_transport logs every request with its URL
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    es = ElasticsearchClient(url="http://user:hunter2@127.0.0.1:1", request_timeout_s=2)
    with pytest.raises(ElasticsearchUnavailableError) as caught:
        es.health(wait_s=1)
    assert "http://user:***@127.0.0.1:1" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    for call in (lambda: es.existing_ids("products", ["B000000001"]), lambda: es.count("products")):
        with pytest.raises(Exception) as caught:  # any error: none may show the password
            call()
        assert "hunter2" not in str(caught.value) + repr(caught.value)
    assert "hunter2" not in repr(es)
    assert "127.0.0.1:1" in caplog.text and "hunter2" not in caplog.text


def test_the_displayed_resource_config_names_the_variable_not_the_url() -> None:
    url = "http://user:hunter2@127.0.0.1:1"
    defs = build_definitions(Settings.from_env({"ELASTICSEARCH_URL": url}))
    resource = defs.resources["elasticsearch"]
    assert isinstance(resource, ElasticsearchResource)
    # What the UI shows as the resource's configured values: the variable's name.
    shown = resource.get_resource_definition().config_schema.as_field().default_value
    assert shown["url"] == {"env": "ELASTICSEARCH_URL"}
    assert "hunter2" not in json.dumps(shown) + repr(resource)
    # Without credentials the URL itself is shown: it says where the data goes.
    plain = build_definitions(Settings.from_env({"ELASTICSEARCH_URL": "http://127.0.0.1:1"}))
    plain_shown = plain.resources["elasticsearch"].get_resource_definition().config_schema
    assert plain_shown.as_field().default_value["url"] == "http://127.0.0.1:1"


def test_the_cli_prints_the_url_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ELASTICSEARCH_URL", "http://user:hunter2@127.0.0.1:1")
    for name in ("ELASTICSEARCH_CA_CERTS", "ELASTICSEARCH_USERNAME", "ELASTICSEARCH_PASSWORD"):
        monkeypatch.delenv(name, raising=False)  # set by client.env in secure mode
    assert main(["alerts"]) == 2
    out, err = capsys.readouterr()
    assert "Elasticsearch at http://user:***@127.0.0.1:1 did not answer" in err
    assert "hunter2" not in out + err
