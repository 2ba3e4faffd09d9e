"""The Kafka client (arbitrage/clients/kafka.py) as a Dagster resource.

Its fields are what the launchpad shows, the password by variable name; ``get_client()`` gives
the plain ``KafkaClient``; when a run or sensor starts, every connection and credential field
is checked against the environment first (resources/run_config.py).
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from arbitrage.clients.kafka import DEFAULT_BOOTSTRAP, KafkaClient
from arbitrage.clients.kafka_security import (
    CA_ENV,
    CERT_ENV,
    KEY_ENV,
    MECHANISM_ENV,
    PASSWORD_ENV,
    PROTOCOL_ENV,
    USERNAME_ENV,
)
from arbitrage.settings import Settings
from resources.run_config import refuse_changed_fields, resolved

# Where the cluster is and who the client is: from the environment only (resources/run_config.py).
ENVIRONMENT_FIELDS = {
    "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "security_protocol": PROTOCOL_ENV,
    "sasl_mechanism": MECHANISM_ENV,
    "sasl_username": USERNAME_ENV,
    "sasl_password": PASSWORD_ENV,
    "ssl_ca_location": CA_ENV,
    "ssl_certificate_location": CERT_ENV,
    "ssl_key_location": KEY_ENV,
}


class KafkaResource(dg.ConfigurableResource):
    """Connection to the Kafka cluster carrying the pipeline's topics."""

    bootstrap_servers: str = Field(
        default=DEFAULT_BOOTSTRAP,
        description="Comma-separated host:port list (env KAFKA_BOOTSTRAP_SERVERS).",
    )
    replication_factor: int | None = Field(
        default=None,
        description="Replication factor of new topics (env KAFKA_REPLICATION_FACTOR); unset: one "
        "copy per broker of the cluster, at most 3.",
    )
    client_id: str = Field(default="arbitrage", description="Client id reported to the broker.")
    timeout_s: float = Field(default=10.0, description="Timeout for admin and metadata requests.")
    security_protocol: str = Field(
        default="PLAINTEXT",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (env KAFKA_SECURITY_PROTOCOL).",
    )
    sasl_mechanism: str = Field(
        default="", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (env KAFKA_SASL_MECHANISM)."
    )
    sasl_username: str = Field(default="", description="SASL user (env KAFKA_SASL_USERNAME).")
    # repr=False and wired as dg.EnvVar: the UI and every message show the variable's name only.
    sasl_password: str | None = Field(
        default=None, repr=False, description="SASL password (env KAFKA_SASL_PASSWORD, by name)."
    )
    ssl_ca_location: str = Field(
        default="", description="PEM file of the CA to trust (env KAFKA_SSL_CA_LOCATION)."
    )
    ssl_certificate_location: str = Field(
        default="", description="Client certificate, mutual TLS (KAFKA_SSL_CERTIFICATE_LOCATION)."
    )
    ssl_key_location: str = Field(
        default="", description="Client key for mutual TLS (env KAFKA_SSL_KEY_LOCATION)."
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        refuse_changed_fields(
            "kafka", self, kafka_resource(Settings.from_env()), ENVIRONMENT_FIELDS
        )

    def get_client(self) -> KafkaClient:
        """The plain client with these fields (a password by name is read now)."""
        fields = {name: resolved(getattr(self, name)) for name in type(self).model_fields}
        return KafkaClient(**fields)


def kafka_resource(settings: Settings, **overrides: object) -> KafkaResource:
    """The resource as the environment configures it: the password by name, so the UI shows
    KAFKA_SASL_PASSWORD and Dagster reads the value when a run or sensor starts."""
    password = dg.EnvVar(PASSWORD_ENV) if settings.kafka_sasl_password_set else None
    return KafkaResource(**{**settings.kafka_fields(), "sasl_password": password, **overrides})
