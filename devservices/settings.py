"""Paths, ports and timeouts, all overridable from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devservices.errors import DevServicesError

HOST = "127.0.0.1"
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        state = env.get("DEVSERVICES_HOME")
        state_dir = Path(state).expanduser() if state else REPO_ROOT / ".devservices"
        return cls(
            cache_dir=default_cache_dir(env).absolute(),
            state_dir=state_dir.absolute(),
            kafka_port=_int_env(env, "KAFKA_PORT", 9092),
            kafka_controller_port=_int_env(env, "KAFKA_CONTROLLER_PORT", 9093),
            es_port=_int_env(env, "ES_PORT", 9200),
            es_transport_port=_int_env(env, "ES_TRANSPORT_PORT", 9300),
            timeout=_int_env(env, "DEVSERVICES_TIMEOUT", 120, port=False),
            postgres_port=_int_env(env, "POSTGRES_PORT", 5432),
            postgres_password=env.get("POSTGRES_PASSWORD") or None,
            secure=env.get("ARBITRAGE_SECURE", "").strip().lower() in ("1", "on", "true", "yes"),
            kafka_secure_port=_int_env(env, "KAFKA_SECURE_PORT", 9094),
        )
