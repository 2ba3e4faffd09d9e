"""KRaft Kafka run from cached Maven jars: one combined broker+controller node, or a cluster of
KAFKA_BROKERS such nodes on consecutive ports (docs/decisions.md, 28)."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from devservices import fetch, secure
from devservices.errors import DevServicesError
from devservices.java import find_java
from devservices.process import port_open
from devservices.report import log
from devservices.service import LaunchSpec, Service
from devservices.settings import Settings

TOOLS_LOG4J = Path(__file__).resolve().parent / "log4j2-tools.properties"
BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
JVM_OPTS = [
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]
DEFAULT_HEAP = "-Xms512m -Xmx512m"
# Per node of a cluster (KAFKA_BROKERS>1): three of them fit beside Elasticsearch on a laptop.
CLUSTER_NODE_HEAP = "-Xms256m -Xmx384m"

# librdkafka logs every refused connection while the broker boots; keep that out of the CLI.
_quiet = logging.getLogger("devservices.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


def new_cluster_id() -> str:
    """Same format as `kafka-storage random-uuid`: URL-safe base64 of 16 random bytes."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids ids that look like CLI flags
            return cid


def classpath(libs: Path) -> str:
    return str(libs / "*")


def _admin_client_class() -> Any:
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError as exc:
        raise DevServicesError(
            f"confluent-kafka is not importable from {sys.executable} but is needed to check "
            "Kafka readiness; run devservices with the repo's .venv/bin/python or "
            "`pip install confluent-kafka`."
        ) from exc
    return AdminClient


class Kafka(Service):
    """One KRaft node, broker and controller in one JVM.

    KAFKA_BROKERS=1 (the default) is the single node ``kafka`` in ``.devservices/kafka``;
    with more, node i (0-based) is ``kafka-<i+1>`` in ``.devservices/kafka-<i+1>`` with node id
    i+1, its ports the settings' ports + i, and every node a voter of the controller quorum.
    """

    name = "kafka"

    def __init__(self, settings: Settings, node: int = 0) -> None:
        if not 0 <= node < settings.kafka_brokers:
            raise DevServicesError(
                f"there is no Kafka node {node + 1} with KAFKA_BROKERS={settings.kafka_brokers}"
            )
        self.node = node
        # An instance attribute: Service.__init__ derives the home and pid file from it.
        self.name = node_name(settings, node)
        super().__init__(settings)

    @property
    def node_id(self) -> int:
        return self.node + 1

    @property
    def port(self) -> int:
        return self.settings.kafka_port + self.node

    @property
    def controller_port(self) -> int:
        return self.settings.kafka_controller_port + self.node

    @property
    def secure_port(self) -> int:
        return self.settings.kafka_secure_port + self.node

    @property
    def address(self) -> str:
        """The client listener: PLAINTEXT, or SASL_SSL in secure mode."""
        port = self.secure_port if self.settings.secure else self.port
        return f"{self.settings.host}:{port}"

    def ports(self) -> list[tuple[int, str]]:
        offset = f"+{self.node}" if self.node else ""
        # Secure mode has no PLAINTEXT listener: KAFKA_PORT stays free.
        if self.settings.secure:
            return [
                (self.secure_port, f"KAFKA_SECURE_PORT{offset}"),
                (self.controller_port, f"KAFKA_CONTROLLER_PORT{offset}"),
            ]
        return [
            (self.port, f"KAFKA_PORT{offset}"),
            (self.controller_port, f"KAFKA_CONTROLLER_PORT{offset}"),
        ]

    @property
    def secure_address(self) -> str:
        return f"{self.settings.host}:{self.secure_port}"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def data_dir(self) -> Path:
        # Its own log dir in secure mode: the SCRAM users are written when storage is formatted,
        # and switching modes then never needs a reformat of the other one.
        return self.home / ("data-secure" if self.settings.secure else "data")

    @property
    def config_dir(self) -> Path:
        return self.home / "config"

    @property
    def main_log(self) -> Path:
        return self.logs_dir / "server.log"

    def server_properties(self) -> str:
        s = self.settings
        host = s.host
        replicas, min_isr = internal_replication(s.kafka_brokers)
        voters = ",".join(
            f"{node + 1}@{host}:{port}"
            for node, port in enumerate(s.kafka_ports(s.kafka_controller_port))
        )
        settings: dict[str, str | int] = {
            "process.roles": "broker,controller",
            "node.id": self.node_id,
            # Static voter list rather than 4.x dynamic quorum (--standalone or
            # --initial-controllers): the voter endpoints are read from this file on every
            # start instead of being frozen into the metadata log, so changing
            # KAFKA_CONTROLLER_PORT later just works. Every node votes: 3 nodes outlive one.
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{host}:{self.port},CONTROLLER://{host}:"
            f"{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": 3,
            "auto.create.topics.enable": "false",
            # The internal topics (group offsets, transaction state) replicated like the
            # pipeline's: a commit is then as durable as the records it commits.
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "group.initial.rebalance.delay.ms": 0,
            "log.retention.hours": 168,
        }
        if s.secure:
            settings.update(self._secure_properties())
        lines = ["# Generated by devservices on every `up`; edit devservices/kafka.py instead."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def _secure_properties(self) -> dict[str, str | int]:
        """SASL_SSL (SCRAM-SHA-512) for clients and between brokers, the StandardAuthorizer.

        No PLAINTEXT listener: nothing listens on KAFKA_PORT, so no client is anonymous. The
        controller listener takes SASL/PLAIN on loopback: SCRAM cannot authenticate controllers
        (its credentials live in the metadata they serve).
        """
        s = self.settings
        host = s.host
        creds = secure.credentials(s)
        pki = secure.pki(s)
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        controller_pw = creds["kafka_controller"]
        return {
            "listeners": f"SASL_SSL://{host}:{self.secure_port},CONTROLLER://{host}:"
            f"{self.controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{self.secure_port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": f"{scram} required "
            f'username="{secure.KAFKA_ADMIN}" password="{creds["kafka_admin"]}";',
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": f"{plain} required "
            f'username="{secure.KAFKA_CONTROLLER}" password="{controller_pw}" '
            f'user_{secure.KAFKA_CONTROLLER}="{controller_pw}";',
            # PEM files as they are: the key is unencrypted PKCS#8, readable by us only.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.config_dir / "broker-keystore.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(pki.ca_cert),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{secure.KAFKA_ADMIN};User:{secure.KAFKA_CONTROLLER}",
        }

    def _write_keystore(self) -> None:
        pki = secure.pki(self.settings)
        keystore = pki.server_key.read_text() + pki.server_cert.read_text()
        secure.private_write(self.config_dir / "broker-keystore.pem", keystore)

    def _scram_arguments(self) -> list[str]:
        """The super user only, which the brokers need before they can talk to each other; the
        other accounts are set through the admin API once the broker is up (``after_ready``),
        so their passwords never appear on a command line."""
        password = secure.credentials(self.settings)["kafka_admin"]
        return ["--add-scram", f"SCRAM-SHA-512=[name={secure.KAFKA_ADMIN},password={password}]"]

    def log4j2_properties(self) -> str:
        # Paths are absolute; log4j2's properties format takes them verbatim.
        logs = self.logs_dir
        return "\n".join(
            [
                "# Generated by devservices: broker logs go to server.log (rolled at 50 MB).",
                "status = warn",
                "name = devservices-kafka",
                "appender.file.type = RollingFile",
                "appender.file.name = FILE",
                f"appender.file.fileName = {logs / 'server.log'}",
                f"appender.file.filePattern = {logs / 'server.log.%i'}",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "appender.file.policies.type = Policies",
                "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
                "appender.file.policies.size.size = 50MB",
                "appender.file.strategy.type = DefaultRolloverStrategy",
                "appender.file.strategy.max = 3",
                "rootLogger.level = info",
                "rootLogger.appenderRef.file.ref = FILE",
                "logger.request.name = kafka.request.logger",
                "logger.request.level = warn",
                "logger.authorizer.name = kafka.authorizer.logger",
                "logger.authorizer.level = warn",
                "",
            ]
        )

    def _format_storage(self, java: Path, libs: Path, config: Path) -> None:
        """Format the KRaft log dir once; meta.properties marks it as done."""
        if (self.data_dir / "meta.properties").is_file():
            return
        log.info("%s: formatting KRaft storage in %s", self.name, self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(java),
            f"-Dlog4j2.configurationFile={TOOLS_LOG4J}",
            "-cp",
            classpath(libs),
            STORAGE_TOOL_MAIN,
            "format",
            "--config",
            str(config),
            "--cluster-id",
            cluster_id(self.settings),
        ]
        if self.settings.secure:
            argv += self._scram_arguments()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            details = (proc.stdout + proc.stderr).strip()
            if self.settings.secure:  # the tool may echo its --add-scram arguments
                for password in secure.credentials(self.settings).values():
                    details = details.replace(password, "***")
            raise DevServicesError(
                f"{self.name} storage format failed (exit {proc.returncode}); delete "
                f"{self.data_dir} and retry, or check the output below.",
                details=details,
            )

    def prepare(self) -> LaunchSpec:
        java = find_java()
        libs = fetch.kafka_libs(self.settings.cache_dir)
        for directory in (self.config_dir, self.logs_dir, self.data_dir):
            directory.mkdir(parents=True, exist_ok=True)
        config = self.config_dir / "server.properties"
        # Holds the broker's own passwords in secure mode: readable by us only.
        secure.private_write(config, self.server_properties())
        if self.settings.secure:
            self._write_keystore()
        log4j = self.config_dir / "log4j2.properties"
        log4j.write_text(self.log4j2_properties())
        self._format_storage(java, libs, config)
        default_heap = DEFAULT_HEAP if self.settings.kafka_brokers == 1 else CLUSTER_NODE_HEAP
        heap = os.environ.get("KAFKA_HEAP_OPTS", default_heap).split()
        argv = [
            str(java),
            *heap,
            *JVM_OPTS,
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath(libs),
            BROKER_MAIN,
            str(config),
        ]
        return LaunchSpec(argv=argv, env=dict(os.environ), cwd=self.home)

    def admin_config(self) -> dict[str, Any]:
        """How devservices itself talks to the broker: anonymously on PLAINTEXT, or in secure
        mode as the super user over SASL_SSL (the config built by
        arbitrage/clients/kafka_security.py)."""
        config: dict[str, Any] = {
            "bootstrap.servers": f"{self.settings.host}:{self.port}",
            "socket.connection.setup.timeout.ms": 2000,
            "logger": _quiet,
        }
        if self.settings.secure:
            from arbitrage.clients.kafka_security import KafkaSecurity

            security = KafkaSecurity(
                protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_username=secure.KAFKA_ADMIN,
                ssl_ca_location=str(secure.pki(self.settings).ca_cert),
            )
            password = secure.credentials(self.settings)["kafka_admin"]
            config.update(security.librdkafka_config(password))
            config["bootstrap.servers"] = self.secure_address
        return config

    def is_healthy(self) -> bool:
        admin_client = _admin_client_class()
        port = self.secure_port if self.settings.secure else self.port
        if not port_open(self.settings.host, port):
            return False
        client = admin_client(self.admin_config())
        try:
            metadata = client.list_topics(timeout=2)
        except Exception:  # KafkaException and friends: not ready yet
            return False
        # Listed once the controller quorum has it registered and unfenced: a node that answers
        # but has not joined its cluster yet is not ready.
        return self.node_id in metadata.brokers

    def after_ready(self) -> None:
        if self.settings.secure:
            admin = _admin_client_class()(self.admin_config())
            set_scram_users(admin, secure.kafka_users(self.settings))
            grant_pipeline_acls(admin)

    def hint(self) -> str:
        if self.settings.kafka_brokers == 1:
            return (
                f"see `python -m devservices logs kafka`; if the KRaft storage is broken, run "
                f"`python -m devservices down kafka` and delete {self.data_dir}."
            )
        return (
            f"see `python -m devservices logs {self.name}` (a node waits for a majority of the "
            f"{self.settings.kafka_brokers} controllers); if the KRaft storage is broken, run "
            f"`python -m devservices down kafka` and delete every {self.settings.state_dir}/"
            f"kafka-*/{self.data_dir.name} and {cluster_id_path(self.settings)}."
        )


def node_name(settings: Settings, node: int) -> str:
    """``kafka`` for the single node (its directory as it always was), ``kafka-1``… else."""
    return "kafka" if settings.kafka_brokers == 1 else f"kafka-{node + 1}"


def kafka_nodes(settings: Settings) -> list[Kafka]:
    return [Kafka(settings, node) for node in range(settings.kafka_brokers)]


def internal_replication(brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of the internal topics and the broker default:
    three copies where there are three brokers, and a write needs two of them, so one broker
    can die (or be restarted) without stopping writes or losing an acknowledged record."""
    replicas = min(3, brokers)
    return replicas, 2 if replicas >= 3 else 1


def cluster_id_path(settings: Settings) -> Path:
    return settings.state_dir / "kafka-cluster.id"


def cluster_id(settings: Settings) -> str:
    """A single node gets a fresh id when formatted; a cluster's nodes must share one, kept in
    DEVSERVICES_HOME so a node whose storage was deleted is formatted into the same cluster."""
    if settings.kafka_brokers == 1:
        return new_cluster_id()
    path = cluster_id_path(settings)
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    cid = new_cluster_id()
    path.write_text(cid + "\n")
    return cid


def kafka_classpath(cache_dir: Path) -> str:
    return classpath(fetch.kafka_libs(cache_dir))


def set_scram_users(admin: Any, users: dict[str, str]) -> None:
    """Create or update each account's SCRAM-SHA-512 credential (an upsert: runs on every `up`,
    so accounts added later, or passwords made anew, reach an existing cluster)."""
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    upserts = [
        UserScramCredentialUpsertion(user, info, password.encode())
        for user, password in users.items()
    ]
    for future in admin.alter_user_scram_credentials(upserts, request_timeout=10).values():
        future.result()
    log.info("kafka: SCRAM credentials of %d accounts in place", len(upserts))


def acl_bindings() -> list[Any]:
    """Every local account's grants (arbitrage/domain/access.py) as Kafka ACL bindings."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    from arbitrage.domain.access import local_accounts

    kinds = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "transactional_id": ResourceType.TRANSACTIONAL_ID,
        "cluster": ResourceType.BROKER,
    }
    # One binding per (account, resource, operation): grants overlap (a source topic is READ
    # and DESCRIBE, and every topic DESCRIBE), and the admin API refuses duplicates.
    unique = dict.fromkeys(
        (account.user, grant.kind, grant.name, grant.prefixed, operation)
        for account in local_accounts()
        for grant in account.kafka
        for operation in grant.operations
    )
    return [
        AclBinding(
            kinds[kind],
            name,
            ResourcePatternType.PREFIXED if prefixed else ResourcePatternType.LITERAL,
            f"User:{user}",
            "*",
            AclOperation[operation],
            AclPermissionType.ALLOW,
        )
        for user, kind, name, prefixed, operation in unique
    ]


def grant_pipeline_acls(admin: Any) -> None:
    """Each account exactly its grants (arbitrage/domain/access.py), and drop any ALLOW binding of
    those accounts that is not one of them (left by an older devservices, e.g. ALL on every
    topic). Creating an existing ACL is a no-op, so this runs on every `up`."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    wanted = acl_bindings()
    for future in admin.create_acls(wanted, request_timeout=10).values():
        future.result()
    principals = {binding.principal for binding in wanted}
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    present = admin.describe_acls(everything, request_timeout=10).result()
    keep = set(wanted)
    stale = [b for b in present if b.principal in principals and b not in keep]
    if stale:
        filters = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in stale
        ]
        for future in admin.delete_acls(filters, request_timeout=10).values():
            future.result()
    log.info(
        "kafka: %d ACLs for %d accounts in place (%d stale removed)",
        len(wanted),
        len(principals),
        len(stale),
    )
