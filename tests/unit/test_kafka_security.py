"""The one owner of Kafka client security config: what each setting turns into, and refusals."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from arbitrage.clients.kafka_security import KafkaSecurity, KafkaSecurityError
from arbitrage.settings import Settings, SettingsError
from resources.elasticsearch import elasticsearch_resource
from resources.kafka import kafka_resource

SASL = {
    "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "KAFKA_SASL_USERNAME": "arbitrage",
    "KAFKA_SASL_PASSWORD": "pw-7f3e",
}


def test_plaintext_adds_nothing() -> None:
    assert KafkaSecurity.from_env({}).librdkafka_config(None) == {}


def test_sasl_ssl_defaults_to_scram_sha_512(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    security = KafkaSecurity.from_env({**SASL, "KAFKA_SSL_CA_LOCATION": str(ca)})
    assert security.librdkafka_config("pw-7f3e") == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "arbitrage",
        "sasl.password": "pw-7f3e",
        "ssl.ca.location": str(ca),
    }
    assert "pw-7f3e" not in repr(security)  # the password is never part of it


def test_java_properties_quote_and_escape(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n")
    security = KafkaSecurity(
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="arbitrage",
        ssl_certificate_location=str(cert),
        ssl_key_location=str(key),
    )
    text = security.java_properties("h:9094", 'p"w\\x')
    assert 'password="p\\\\"w\\\\\\\\x";' in text
    assert "ssl.keystore.type=PEM" in text
    assert "ssl.keystore.key=-----BEGIN PRIVATE KEY-----\\nBBB\\n" in text


@pytest.mark.parametrize(
    ("env", "sentence"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS' is not one of"),
        ({**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM='GSSAPI' is not one"),
        ({**SASL, "KAFKA_SASL_PASSWORD": ""}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({**SASL, "KAFKA_SSL_CERTIFICATE_LOCATION": "/x"}, "needs both"),
        ({"KAFKA_SSL_CA_LOCATION": "/etc/hostname"}, "uses no TLS"),
        ({**SASL, "KAFKA_SSL_CA_LOCATION": "/nonexistent.pem"}, "is not a readable file"),
    ],
)
def test_unusable_settings_are_refused_with_a_sentence(env: dict[str, str], sentence: str) -> None:
    with pytest.raises(KafkaSecurityError, match=sentence):
        KafkaSecurity.from_env(env)
    with pytest.raises(SettingsError, match=sentence):
        Settings.from_env(env)


def test_the_resource_names_the_password_variable_and_reads_it_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "pw-7f3e")
    resource = kafka_resource(Settings.from_env({**SASL}))
    assert isinstance(resource.sasl_password, dg.EnvVar)
    assert resource.sasl_password.env_var_name == "KAFKA_SASL_PASSWORD"
    assert "pw-7f3e" not in repr(resource)
    # The plain client (the CLI's, or a run's from the resource) holds the value, unshown.
    for kafka in (Settings.from_env({**SASL}).kafka(), resource.get_client()):
        assert "pw-7f3e" not in repr(kafka)
        assert kafka.client_config()["sasl.password"] == "pw-7f3e"


def test_elasticsearch_credentials_are_wired_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"ELASTICSEARCH_USERNAME": "arbitrage", "ELASTICSEARCH_PASSWORD": "es-pw-91"}
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", "es-pw-91")
    resource = elasticsearch_resource(Settings.from_env(env))
    assert isinstance(resource.password, dg.EnvVar)
    assert resource.password.env_var_name == "ELASTICSEARCH_PASSWORD"
    assert "es-pw-91" not in repr(resource)
    for es in (Settings.from_env(env).elasticsearch(), resource.get_client()):
        assert "es-pw-91" not in repr(es)
        assert es.client_options() == {"basic_auth": ("arbitrage", "es-pw-91")}
    monkeypatch.setenv("ELASTICSEARCH_API_KEY", "a2V5")
    keyed = Settings.from_env({**env, "ELASTICSEARCH_API_KEY": "a2V5"}).elasticsearch()
    assert keyed.client_options() == {"api_key": "a2V5"}  # an API key wins


@pytest.mark.parametrize(
    ("env", "sentence"),
    [
        (
            {"ELASTICSEARCH_URL": "http://es.prod:9200", "ELASTICSEARCH_PASSWORD": "pw"},
            "ELASTICSEARCH_URL='http://es.prod:9200' is plain http and would send "
            "Elasticsearch's credentials without TLS to es.prod",
        ),
        (
            {"ELASTICSEARCH_URL": "http://es.prod:9200", "ELASTICSEARCH_API_KEY": "a2V5"},
            "would send Elasticsearch's credentials without TLS to es.prod",
        ),
        (
            {"ELASTICSEARCH_URL": "http://user:pw@10.0.0.5:9200"},
            "would send Elasticsearch's credentials without TLS to 10.0.0.5",
        ),
        (
            {
                "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092,kafka-2.prod:9092",
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_USERNAME": "arbitrage",
                "KAFKA_SASL_PASSWORD": "pw",
            },
            "SASL_PLAINTEXT with KAFKA_SASL_MECHANISM=PLAIN would send the SASL/PLAIN password "
            "without TLS to kafka-2.prod",
        ),
    ],
)
def test_credentials_in_the_clear_to_another_host_are_refused(
    env: dict[str, str], sentence: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert sentence in str(refused.value)
    assert "pw" not in str(refused.value).replace("plain http", "")


@pytest.mark.parametrize(
    "env",
    [
        {"ELASTICSEARCH_URL": "http://127.0.0.1:9200", "ELASTICSEARCH_PASSWORD": "pw"},
        {"ELASTICSEARCH_URL": "http://localhost:9200", "ELASTICSEARCH_API_KEY": "a2V5"},
        {"ELASTICSEARCH_URL": "https://es.prod:9200", "ELASTICSEARCH_PASSWORD": "pw"},
        {"ELASTICSEARCH_URL": "http://es.prod:9200"},  # no credentials: nothing to protect
        {
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092,[::1]:9093",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "arbitrage",
            "KAFKA_SASL_PASSWORD": "pw",
        },
        {  # SCRAM proves the password without sending it
            "KAFKA_BOOTSTRAP_SERVERS": "kafka.prod:9092",
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": "arbitrage",
            "KAFKA_SASL_PASSWORD": "pw",
        },
    ],
)
def test_credentials_in_the_clear_on_loopback_or_over_tls_are_allowed(env: dict[str, str]) -> None:
    Settings.from_env(env)
