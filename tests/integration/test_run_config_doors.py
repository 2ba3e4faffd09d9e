"""Run config cannot point a resource elsewhere, change who it logs in as, or swap its settings
files (resources/run_config.py): for every such field a launch that changes it is refused before
anything connects, and a listener where the attacker pointed the run receives nothing."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from arbitrage.settings import Settings
from pipelines.definitions import build_definitions
from resources.elasticsearch import elasticsearch_resource
from resources.fees import fee_model_resource
from resources.kafka import kafka_resource
from resources.notify import notifications_resource
from tests.integration.test_keepa_pull import everything_stored

pytestmark = pytest.mark.integration

SECRET = "KEEPA-KEY-run-config-door-0123456789abcdef"


class Listener:
    """A TCP server on 127.0.0.1 that records every connection and every byte it is sent."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(2)
            try:
                while chunk := conn.recv(65536):
                    self.received += chunk
            except OSError:
                pass
            finally:
                conn.close()

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as server:
        yield server


def scaffold(resource: dg.ConfigurableResource) -> dict[str, Any]:
    """The resource's config as the launchpad's scaffold shows it: secrets by variable name."""
    config: dict[str, Any] = {}
    for name in type(resource).model_fields:
        value = getattr(resource, name)
        if isinstance(value, dg.EnvVar):
            config[name] = {"env": value.env_var_name}
        elif value is not None:
            config[name] = value
    return config


def current_resource(resource: str) -> dg.ConfigurableResource:
    """The resource as the definitions build it from the environment."""
    return {
        "kafka": kafka_resource,
        "elasticsearch": elasticsearch_resource,
        "fee_model": fee_model_resource,
        "notifications": notifications_resource,
    }[resource](Settings.from_env())


def launch(
    job: str, resource: str, changes: dict[str, Any], instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    config = {**scaffold(current_resource(resource)), **changes}
    return (
        build_definitions(Settings.from_env())
        .resolve_job_def(job)
        .execute_in_process(
            run_config={"resources": {resource: {"config": config}}},
            instance=instance,
            raise_on_error=False,
        )
    )


def errors_text(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Every error the run's events carry, with their causes."""
    text = ""
    for entry in instance.all_logs(result.run_id):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        error = getattr(data, "error", None)
        if error is not None:
            text += error.to_string()
    return text


# The variable that is each field's only source.
VARIABLES = {
    "url": "ELASTICSEARCH_URL",
    "password": "ELASTICSEARCH_PASSWORD",
    "api_key": "ELASTICSEARCH_API_KEY",
    "username": "ELASTICSEARCH_USERNAME",
    "ca_certs": "ELASTICSEARCH_CA_CERTS",
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "sasl_username": "KAFKA_SASL_USERNAME",
    "sasl_password": "KAFKA_SASL_PASSWORD",
    "ssl_ca_location": "KAFKA_SSL_CA_LOCATION",
    "ssl_certificate_location": "KAFKA_SSL_CERTIFICATE_LOCATION",
    "ssl_key_location": "KAFKA_SSL_KEY_LOCATION",
    "rules_file": "ARBITRAGE_RULES_FILE",
    "fees_file": "ARBITRAGE_FEES_FILE",
    "config_file": "ARBITRAGE_NOTIFICATIONS_FILE",
}
# (job, resource, field, the attack): the field changed, and where an address is in play, the
# address pointed at the listener as well (the attack the issue reproduced).
LISTENER = "<listener>"
ATTACKS = [
    ("enrichment", "elasticsearch", "url", {"url": "http://127.0.0.1:" + LISTENER}),
    (
        "enrichment",
        "elasticsearch",
        "password",
        {"username": "attacker-user", "password": {"env": "KEEPA_API_KEY"}},
    ),
    ("enrichment", "elasticsearch", "api_key", {"api_key": {"env": "KEEPA_API_KEY"}}),
    ("enrichment", "elasticsearch", "username", {"username": "superuser-42"}),
    ("enrichment", "elasticsearch", "ca_certs", {"ca_certs": "/etc/passwd"}),
    ("enrichment", "kafka", "bootstrap_servers", {"bootstrap_servers": "127.0.0.1:" + LISTENER}),
    (
        "enrichment",
        "kafka",
        "sasl_password",
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "attacker-user",
            "sasl_password": {"env": "KEEPA_API_KEY"},
        },
    ),
    ("enrichment", "kafka", "security_protocol", {"security_protocol": "SSL"}),
    ("enrichment", "kafka", "sasl_mechanism", {"sasl_mechanism": "PLAIN"}),
    ("enrichment", "kafka", "sasl_username", {"sasl_username": "admin"}),
    ("enrichment", "kafka", "ssl_ca_location", {"ssl_ca_location": "/etc/passwd"}),
    ("enrichment", "kafka", "ssl_certificate_location", {"ssl_certificate_location": "/etc/hosts"}),
    ("enrichment", "kafka", "ssl_key_location", {"ssl_key_location": "/etc/shadow"}),
    ("arbitrage", "fee_model", "rules_file", {"rules_file": "config/rules_none.toml"}),
    ("arbitrage", "fee_model", "fees_file", {"fees_file": "config/fees_v2.toml"}),
    (
        "notifications",
        "notifications",
        "config_file",
        {"config_file": "config/notifications.example.toml"},
    ),
]


@pytest.mark.parametrize(
    ("job", "resource", "field", "attack"),
    ATTACKS,
    ids=[f"{resource}.{field}" for _job, resource, field, _attack in ATTACKS],
)
def test_a_run_config_that_changes_a_connection_credential_or_file_field_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    listener: Listener,
    job: str,
    resource: str,
    field: str,
    attack: dict[str, Any],
) -> None:
    monkeypatch.setenv("KEEPA_API_KEY", SECRET)
    changes = {
        name: value.replace(LISTENER, str(listener.port)) if isinstance(value, str) else value
        for name, value in attack.items()
    }
    instance = dg.DagsterInstance.ephemeral()
    result = launch(job, resource, changes, instance)

    assert not result.success
    stored = everything_stored(instance, result)
    assert f"the {resource} resource's " in stored
    assert "cannot be changed in run config" in stored
    assert f"{field} (env {VARIABLES[field]})" in stored
    # Refused before anything connected: the listener saw nobody, and no value was echoed.
    assert listener.connections == 0
    assert listener.received == b""
    out, err = capfd.readouterr()
    assert SECRET not in stored + out + err
    errors = errors_text(instance, result)
    assert "cannot be changed in run config" in errors
    for value in changes.values():  # the refusal names fields, never what they were set to
        if isinstance(value, str):
            assert value not in errors


@pytest.mark.usefixtures("clean_pipeline")
def test_a_run_config_that_copies_the_scaffold_unchanged_runs() -> None:
    """The refusal is about changes: the scaffold's own values (secrets by name) still run.

    The topics come from ``clean_pipeline`` (provisioned): in secure mode the stage's own
    account may not create them."""
    result = launch(
        "enrichment",
        "elasticsearch",
        {"request_timeout_s": 20.0},
        dg.DagsterInstance.ephemeral(),
    )
    assert result.success, result.all_events


def test_the_keepa_key_cannot_be_swapped_for_another_secret(
    monkeypatch: pytest.MonkeyPatch, listener: Listener
) -> None:
    """``api_key: {env: KAFKA_SASL_PASSWORD}`` would send another secret to Keepa."""
    from tests.integration.test_keepa_pull import run_pull

    monkeypatch.setenv("KEEPA_SOURCE", "api")
    monkeypatch.setenv("KEEPA_API_KEY", SECRET)
    monkeypatch.setenv("KEEPA_API_URL", f"http://127.0.0.1:{listener.port}")
    monkeypatch.setenv("OTHER_SECRET", "another-secret-value-42")
    instance = dg.DagsterInstance.ephemeral()
    result = run_pull(
        instance, raise_on_error=False, keepa_config={"api_key": {"env": "OTHER_SECRET"}}
    )
    assert not result.success
    stored = everything_stored(instance, result)
    assert "api_key cannot be changed in run config" in stored
    assert listener.connections == 0
    assert "another-secret-value-42" not in stored
