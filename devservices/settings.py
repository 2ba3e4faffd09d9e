"""Paths, ports and timeouts, all overridable from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devservices.errors import DevServicesError

HOST = "127.0.0.1"
MAX_KAFKA_BROKERS = 9
# Five master-eligible nodes outlive two failures; more is not a laptop cluster.
MAX_ES_NODES = 5
REPO_ROOT = Path(__file__).resolve().parent.parent


def _int_env(env: Mapping[str, str], name: str, default: int, *, port: bool = True) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DevServicesError(f"{name}={raw!r} is not an integer; unset it or fix it.") from None
    if port and not 0 < value < 65536:
        raise DevServicesError(f"{name}={value} is not a valid TCP port; use 1-65535.")
    if value <= 0:
        raise DevServicesError(f"{name}={value} must be positive.")
    return value


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """Outside the repo, so every clone on this machine shares one download."""
    if env.get("ARBITRAGE_CACHE_DIR"):
        return Path(env["ARBITRAGE_CACHE_DIR"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "arbitrage"


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    state_dir: Path
    kafka_port: int
    kafka_controller_port: int
    es_port: int
    es_transport_port: int
    timeout: int
    postgres_port: int = 5432
    # ARBITRAGE_SECURE=1: TLS + authentication + authorization on Kafka and Elasticsearch.
    secure: bool = False
    kafka_secure_port: int = 9094
    # POSTGRES_PASSWORD for the `dagster` role; None: a generated one kept in DEVSERVICES_HOME.
    postgres_password: str | None = field(default=None, repr=False)
    host: str = HOST
    # KAFKA_BROKERS: combined broker+controller KRaft nodes; node i (0-based) listens on
    # kafka_port + i, kafka_controller_port + i and kafka_secure_port + i.
    kafka_brokers: int = 1
    # ES_NODES: Elasticsearch nodes (each master-eligible and a data node); node i (0-based)
    # listens on es_port + i (HTTP) and es_transport_port + i (between the nodes).
    es_nodes: int = 1
    # KEEPA_SIM=1: the Keepa market simulator (devservices/keepa_sim/) is one of the services.
    keepa_sim: bool = False
    keepa_sim_port: int = 9299
    keepa_sim_seed: int = 20261206
    keepa_sim_products: int = 100_000
    keepa_sim_factor: float = 60.0
    keepa_sim_tokens_per_minute: int = 300

    def es_ports(self, base: int) -> list[int]:
        """One port per Elasticsearch node, from ``base`` upward."""
        return [base + node for node in range(self.es_nodes)]

    @property
    def elasticsearch_urls(self) -> str:
        """Every node's HTTP address, comma-separated (ELASTICSEARCH_URL): the client then goes
        on with the others while one node is down."""
        scheme = "https" if self.secure else "http"
        return ",".join(f"{scheme}://{self.host}:{port}" for port in self.es_ports(self.es_port))

    def kafka_ports(self, base: int) -> list[int]:
        """One port per Kafka node, from ``base`` upward."""
        return [base + node for node in range(self.kafka_brokers)]

    @property
    def kafka_bootstrap_servers(self) -> str:
        """Every node's client listener (SASL_SSL in secure mode): a client then starts even
        while any one node is down."""
        base = self.kafka_secure_port if self.secure else self.kafka_port
        return ",".join(f"{self.host}:{port}" for port in self.kafka_ports(base))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        state = env.get("DEVSERVICES_HOME")
        state_dir = Path(state).expanduser() if state else REPO_ROOT / ".devservices"
        brokers = _int_env(env, "KAFKA_BROKERS", 1, port=False)
        if brokers > MAX_KAFKA_BROKERS:
            raise DevServicesError(
                f"KAFKA_BROKERS={brokers} is more nodes than a laptop cluster needs; "
                f"use 1 to {MAX_KAFKA_BROKERS}."
            )
        es_nodes = _int_env(env, "ES_NODES", 1, port=False)
        if es_nodes > MAX_ES_NODES:
            raise DevServicesError(
                f"ES_NODES={es_nodes} is more nodes than a laptop cluster needs; "
                f"use 1 to {MAX_ES_NODES} (3 outlives the loss of any one node)."
            )
        kafka_port = _int_env(env, "KAFKA_PORT", 9092)
        # One node keeps the historical 9093/9094; a cluster's node ranges would run into each
        # other from there, so its controller and secure ports start 100 and 200 higher.
        spread = 1 if brokers == 1 else 100
        settings = cls(
            cache_dir=default_cache_dir(env).absolute(),
            state_dir=state_dir.absolute(),
            kafka_port=kafka_port,
            kafka_controller_port=_int_env(env, "KAFKA_CONTROLLER_PORT", kafka_port + spread),
            es_port=_int_env(env, "ES_PORT", 9200),
            es_transport_port=_int_env(env, "ES_TRANSPORT_PORT", 9300),
            timeout=_int_env(env, "DEVSERVICES_TIMEOUT", 120, port=False),
            postgres_port=_int_env(env, "POSTGRES_PORT", 5432),
            postgres_password=env.get("POSTGRES_PASSWORD") or None,
            secure=env.get("ARBITRAGE_SECURE", "").strip().lower() in ("1", "on", "true", "yes"),
            kafka_secure_port=_int_env(env, "KAFKA_SECURE_PORT", kafka_port + 2 * spread),
            kafka_brokers=brokers,
            es_nodes=es_nodes,
            keepa_sim=env.get("KEEPA_SIM", "").strip().lower() in ("1", "on", "true", "yes"),
            keepa_sim_port=_int_env(env, "KEEPA_SIM_PORT", 9299),
            keepa_sim_seed=_int_env(env, "KEEPA_SIM_SEED", 20261206, port=False),
            keepa_sim_products=_int_env(env, "KEEPA_SIM_PRODUCTS", 100_000, port=False),
            keepa_sim_factor=_int_env(env, "KEEPA_SIM_FACTOR", 60, port=False),
            keepa_sim_tokens_per_minute=_int_env(
                env, "KEEPA_SIM_TOKENS_PER_MINUTE", 300, port=False
            ),
        )
        settings.check_kafka_ports()
        settings.check_es_ports()
        return settings

    def check_es_ports(self) -> None:
        """Node i takes ES_PORT + i and ES_TRANSPORT_PORT + i: both ranges must fit and not meet."""
        http = self.es_ports(self.es_port)
        transport = self.es_ports(self.es_transport_port)
        for name, ports in (("ES_PORT", http), ("ES_TRANSPORT_PORT", transport)):
            if ports[-1] >= 65536:
                raise DevServicesError(
                    f"{name}={ports[0]} leaves no room for {self.es_nodes} nodes below 65536."
                )
        shared = sorted(set(http) & set(transport))
        if shared:
            raise DevServicesError(
                f"ES_PORT and ES_TRANSPORT_PORT overlap at port {shared[0]} with "
                f"ES_NODES={self.es_nodes} (node i takes each port + i); set them at least "
                f"{self.es_nodes} apart."
            )

    def check_kafka_ports(self) -> None:
        """Each node takes one port of each range: the three ranges must not overlap."""
        ranges = {
            "KAFKA_PORT": self.kafka_ports(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": self.kafka_ports(self.kafka_controller_port),
            "KAFKA_SECURE_PORT": self.kafka_ports(self.kafka_secure_port),
        }
        for name, ports in ranges.items():
            if ports[-1] >= 65536:
                raise DevServicesError(
                    f"{name}={ports[0]} leaves no room for {self.kafka_brokers} nodes below 65536."
                )
        names = list(ranges)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                shared = sorted(set(ranges[first]) & set(ranges[second]))
                if shared:
                    raise DevServicesError(
                        f"{first} and {second} overlap at port {shared[0]} with "
                        f"KAFKA_BROKERS={self.kafka_brokers} (node i takes each port + i); "
                        f"set them at least {self.kafka_brokers} apart."
                    )
