"""How a Kafka client proves who it is and whom it talks to: the one owner of that config.

Every client of the pipeline's cluster (producers, consumers, the admin client, the CLI, the
checks, the benchmarks, devservices' readiness probe, and Kafka's own tools in ``bin/`` through
a generated properties file) takes its security settings from here, from these variables:

``KAFKA_SECURITY_PROTOCOL`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), ``KAFKA_SASL_MECHANISM``
(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), ``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``,
``KAFKA_SSL_CA_LOCATION`` and, for mutual TLS, ``KAFKA_SSL_CERTIFICATE_LOCATION`` and
``KAFKA_SSL_KEY_LOCATION``.

Pure: values in, dicts and text out. The password is never part of ``KafkaSecurity`` (it is a
secret, wired by name as ``dg.EnvVar``); it is handed to the two functions that build a
client's config, and appears in nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOCOL_ENV = "KAFKA_SECURITY_PROTOCOL"
MECHANISM_ENV = "KAFKA_SASL_MECHANISM"
USERNAME_ENV = "KAFKA_SASL_USERNAME"
PASSWORD_ENV = "KAFKA_SASL_PASSWORD"
CA_ENV = "KAFKA_SSL_CA_LOCATION"
CERT_ENV = "KAFKA_SSL_CERTIFICATE_LOCATION"
KEY_ENV = "KAFKA_SSL_KEY_LOCATION"

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_MECHANISM = "SCRAM-SHA-512"

_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


class KafkaSecurityError(ValueError):
    """The security variables do not describe a usable client."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    ssl_ca_location: str = ""
    ssl_certificate_location: str = ""
    ssl_key_location: str = ""

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.protocol.endswith("SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        def text(name: str) -> str:
            return env.get(name, "").strip()

        protocol = (text(PROTOCOL_ENV) or "PLAINTEXT").upper()
        security = cls(
            protocol=protocol,
            sasl_mechanism=(text(MECHANISM_ENV) or DEFAULT_MECHANISM).upper()
            if protocol.startswith("SASL_")
            else text(MECHANISM_ENV).upper(),
            sasl_username=text(USERNAME_ENV),
            ssl_ca_location=text(CA_ENV),
            ssl_certificate_location=text(CERT_ENV),
            ssl_key_location=text(KEY_ENV),
        )
        problem = security.problem(password_set=bool(env.get(PASSWORD_ENV, "")))
        if problem is not None:
            raise KafkaSecurityError(problem)
        return security

    def problem(self, password_set: bool) -> str | None:
        """Why these settings cannot make a client, as a sentence naming the variable."""
        if self.protocol not in PROTOCOLS:
            return f"{PROTOCOL_ENV}={self.protocol!r} is not one of {', '.join(PROTOCOLS)}"
        if self.uses_sasl:
            if self.sasl_mechanism not in MECHANISMS:
                known = ", ".join(MECHANISMS)
                return f"{MECHANISM_ENV}={self.sasl_mechanism!r} is not one of {known}"
            if not self.sasl_username or not password_set:
                return (
                    f"{PROTOCOL_ENV}={self.protocol} needs {USERNAME_ENV} and {PASSWORD_ENV} "
                    "(the password is read by name, never shown)"
                )
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            return f"mutual TLS needs both {CERT_ENV} and {KEY_ENV}, or neither"
        if (self.ssl_ca_location or self.ssl_certificate_location) and not self.uses_tls:
            return f"{CA_ENV}/{CERT_ENV} are set but {PROTOCOL_ENV}={self.protocol} uses no TLS"
        for name, location in (
            (CA_ENV, self.ssl_ca_location),
            (CERT_ENV, self.ssl_certificate_location),
            (KEY_ENV, self.ssl_key_location),
        ):
            if location and not Path(location).is_file():
                return f"{name}={location!r} is not a readable file"
        return None

    def librdkafka_config(self, password: str | None) -> dict[str, Any]:
        """The librdkafka keys for this security setting (empty for PLAINTEXT)."""
        config: dict[str, Any] = {}
        if self.protocol != "PLAINTEXT":
            config["security.protocol"] = self.protocol
        if self.uses_sasl:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = self.sasl_username
            config["sasl.password"] = password or ""
        if self.ssl_ca_location:
            config["ssl.ca.location"] = self.ssl_ca_location
        if self.ssl_certificate_location:
            config["ssl.certificate.location"] = self.ssl_certificate_location
            config["ssl.key.location"] = self.ssl_key_location
        return config

    def java_properties(self, bootstrap_servers: str, password: str | None) -> str:
        """A client properties file for Kafka's Java tools (``--command-config``)."""
        props: dict[str, str] = {
            "bootstrap.servers": bootstrap_servers,
            "security.protocol": self.protocol,
        }
        if self.uses_sasl:
            module = _LOGIN_MODULES[self.sasl_mechanism]
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.jaas.config"] = (
                f"{module} required username={_jaas_quote(self.sasl_username)} "
                f"password={_jaas_quote(password or '')};"
            )
        if self.ssl_ca_location:
            # Java reads the same PEM file librdkafka does; no JKS conversion needed.
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = self.ssl_ca_location
        if self.ssl_certificate_location:
            # A PEM keystore takes the chain and the (unencrypted PKCS#8) key inline.
            props["ssl.keystore.type"] = "PEM"
            props["ssl.keystore.certificate.chain"] = Path(
                self.ssl_certificate_location
            ).read_text()
            props["ssl.keystore.key"] = Path(self.ssl_key_location).read_text()
        lines = ["# Generated from the KAFKA_* environment; contains a secret (mode 0600)."]
        lines += [f"{key}={_properties_escape(value)}" for key, value in props.items()]
        return "\n".join(lines) + "\n"


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _properties_escape(value: str) -> str:
    """java.util.Properties escaping: backslashes, line breaks (PEM blocks span lines)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "")
