"""Secure mode (ARBITRAGE_SECURE=1): a local CA and server certificate, the services' accounts
and their passwords, and the client env file that points any tool at the secured services.

Everything lives under DEVSERVICES_HOME (git-ignored): ``tls/`` (CA and server certificate for
127.0.0.1 and localhost, made with openssl), ``secure/credentials.json`` (generated passwords,
mode 0600) and ``client.env`` (mode 0600).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devservices.errors import DevServicesError
from devservices.report import log
from devservices.settings import Settings

# Accounts, by role. Kafka: ``admin`` is the broker's own (inter-broker, super user),
# ``controller`` authenticates the broker to its controller listener (SASL/PLAIN on loopback).
KAFKA_ADMIN = "admin"
KAFKA_CONTROLLER = "controller"
# The pipeline's accounts (arbitrage/domain/access.py): the operator (``arbitrage``, the one
# client.env names without a suffix), provisioning, and one per stage; each has a password per
# service, ``kafka_<key>`` and ``es_<key>`` (the operator's keep their first name, ``pipeline``).
PIPELINE_USER = "arbitrage"
UNPRIVILEGED_USER = "arbitrage-unprivileged"
ES_ADMIN = "arbitrage-admin"
CERT_DAYS = 825


def _pipeline_keys() -> tuple[str, ...]:
    from arbitrage.domain.access import PROVISION, runtime_account_keys

    return ("pipeline", PROVISION, *runtime_account_keys())


def password_key(service: str, account_key: str) -> str:
    """``("kafka", "operator")`` → ``"kafka_pipeline"``; ``("es", "enrichment")`` →
    ``"es_enrichment"``."""
    from arbitrage.domain.access import OPERATOR

    return f"{service}_{'pipeline' if account_key == OPERATOR else account_key}"


def account_names() -> tuple[str, ...]:
    keys = (*_pipeline_keys(), "unprivileged")
    return (
        "kafka_admin",
        "kafka_controller",
        *(f"kafka_{key}" for key in keys),
        "es_admin",
        *(f"es_{key}" for key in keys),
    )


def private_write(path: Path, text: str) -> None:
    """Write a file only its owner can read, never briefly readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def credentials_path(settings: Settings) -> Path:
    return settings.state_dir / "secure" / "credentials.json"


def credentials(settings: Settings) -> dict[str, str]:
    """Every account's password, generated once (hex: safe in JAAS, YAML and Kafka's tools)."""
    path = credentials_path(settings)
    stored: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    missing = [name for name in account_names() if name not in stored]
    if missing:
        stored.update({name: secrets.token_hex(16) for name in missing})
        private_write(path, json.dumps(stored, indent=2) + "\n")
    return stored


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def pki(settings: Settings) -> Pki:
    """The local CA and a server certificate for 127.0.0.1/localhost, made once with openssl."""
    tls = settings.state_dir / "tls"
    found = Pki(tls / "ca.pem", tls / "server.pem", tls / "server.key")
    if all(path.is_file() for path in (found.ca_cert, found.server_cert, found.server_key)):
        return found
    openssl = shutil.which("openssl")
    if openssl is None:
        raise DevServicesError(
            "secure mode needs `openssl` to make the local CA and certificates; "
            "install it (apt-get install openssl)."
        )
    tls.mkdir(parents=True, exist_ok=True)
    os.chmod(tls, 0o755)
    log.info("secure mode: making a local CA and a server certificate in %s", tls)
    extensions = tls / "server.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    steps = [
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-keyout",
            str(tls / "ca.key"),
            "-out",
            str(found.ca_cert),
            "-days",
            str(CERT_DAYS),
            "-subj",
            "/CN=arbitrage local CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        [
            openssl,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-keyout",
            str(found.server_key),
            "-out",
            str(tls / "server.csr"),
            "-subj",
            "/CN=localhost",
        ],
        [
            openssl,
            "x509",
            "-req",
            "-sha256",
            "-in",
            str(tls / "server.csr"),
            "-CA",
            str(found.ca_cert),
            "-CAkey",
            str(tls / "ca.key"),
            "-CAcreateserial",
            "-out",
            str(found.server_cert),
            "-days",
            str(CERT_DAYS),
            "-extfile",
            str(extensions),
        ],
    ]
    for argv in steps:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise DevServicesError(
                f"openssl failed making the local certificates (exit {proc.returncode}); "
                f"delete {tls} and retry.",
                details=proc.stderr.strip(),
            )
    os.chmod(tls / "ca.key", 0o600)
    os.chmod(found.server_key, 0o600)
    return found


def client_env_path(settings: Settings) -> Path:
    return settings.state_dir / "client.env"


def kafka_users(settings: Settings) -> dict[str, str]:
    """Every SCRAM account but the super user (set when the storage is formatted): the
    pipeline's accounts and the unprivileged one, user name → password."""
    from arbitrage.domain.access import local_accounts

    creds = credentials(settings)
    users = {a.user: creds[password_key("kafka", a.key)] for a in local_accounts() if a.kafka}
    users[UNPRIVILEGED_USER] = creds["kafka_unprivileged"]
    return users


def client_env(settings: Settings) -> dict[str, str]:
    """What a client of the secured services needs: the operator's account as the shared one,
    and each job's own account under its suffix (arbitrage/accounts.py)."""
    from arbitrage.accounts import account_variable
    from arbitrage.domain.access import local_accounts

    creds = credentials(settings)
    ca = str(pki(settings).ca_cert)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": PIPELINE_USER,
        "KAFKA_SASL_PASSWORD": creds["kafka_pipeline"],
        "KAFKA_SSL_CA_LOCATION": ca,
        "ELASTICSEARCH_URL": settings.elasticsearch_urls,
        "ELASTICSEARCH_USERNAME": PIPELINE_USER,
        "ELASTICSEARCH_PASSWORD": creds["es_pipeline"],
        "ELASTICSEARCH_CA_CERTS": ca,
    }
    for account in local_accounts():
        if account.user == PIPELINE_USER:
            continue
        if account.kafka:
            env[account_variable("KAFKA_SASL_USERNAME", account.key)] = account.user
            env[account_variable("KAFKA_SASL_PASSWORD", account.key)] = creds[
                password_key("kafka", account.key)
            ]
        if account.es_cluster or account.es_indices:
            env[account_variable("ELASTICSEARCH_USERNAME", account.key)] = account.user
            env[account_variable("ELASTICSEARCH_PASSWORD", account.key)] = creds[
                password_key("es", account.key)
            ]
    return env


def write_client_env(settings: Settings) -> Path:
    path = client_env_path(settings)
    lines = [
        "# Written by `ARBITRAGE_SECURE=1 python -m devservices up`: the secured local services",
        "# as the operator, each job as its own account (suffixed variables). Holds passwords:",
        "# mode 0600, git-ignored. `. " + path.name + "`",
    ]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in client_env(settings).items()]
    private_write(path, "\n".join(lines) + "\n")
    return path
