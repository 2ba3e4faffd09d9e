"""The pipeline's settings: the one place the environment is read.

``Settings.from_env()`` is called once, where the system is assembled (pipelines/definitions.py,
the operator CLI, the tests' fixtures, the benchmarks); everything else receives values. A bad
value fails with a sentence naming the variable. Secrets are not settings: only whether each is
set is kept here; a client made by ``kafka()`` or ``elasticsearch()`` reads its secret from the
environment then, and the Dagster layer wires them by name (resources/), so the UI shows the
variable's name, never its value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from arbitrage.clients.elasticsearch import ElasticsearchClient, elasticsearch_hosts
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.kafka_security import PASSWORD_ENV as KAFKA_PASSWORD_ENV
from arbitrage.clients.kafka_security import KafkaSecurity, KafkaSecurityError
from arbitrage.clients.sp_api import DEFAULT_LWA_URL, DEFAULT_SP_API_URL
from arbitrage.domain.discovery_config import DEFAULT_DISCOVERY_FILE, DISCOVERY_FILE_ENV
from arbitrage.domain.notifications_config import NOTIFICATIONS_FILE_ENV
from arbitrage.domain.redaction import (
    cleartext_login_problem,
    has_credentials,
    redact_url,
    secure_endpoint_problem,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
# The only place run config may choose files from (an ASIN list, a sample); anything else comes
# from the environment.
DATA_DIR = REPO_ROOT / "data"
KEEPA_KEY_ENV = "KEEPA_API_KEY"
ELASTICSEARCH_URL_ENV = "ELASTICSEARCH_URL"
ELASTICSEARCH_API_KEY_ENV = "ELASTICSEARCH_API_KEY"
ELASTICSEARCH_PASSWORD_ENV = "ELASTICSEARCH_PASSWORD"
KEEPA_SOURCES = ("api", "sample")
KeepaSourceName = Literal["api", "sample"]
# list: pull KEEPA_ASINS_FILE whole on KEEPA_PULL_CRON; planner: each run refreshes what the
# token planner (arbitrage/domain/token_plan.py) buys with Keepa's balance, every minute.
KEEPA_PULL_MODES = ("list", "planner")
KeepaPullMode = Literal["list", "planner"]
PLANNER_PULL_CRON = "* * * * *"
_TRUE = {"1", "on", "running", "true", "yes"}


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; unset it or fix it") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def _local_bootstrap(env: Mapping[str, str]) -> str:
    """Where the local services' Kafka listens (python -m devservices): KAFKA_BROKERS nodes on
    consecutive ports from KAFKA_PORT. Every node is listed so a client starts while any one of
    them is down."""
    port = _int(env, "KAFKA_PORT", 9092)
    brokers = _int(env, "KAFKA_BROKERS", 1)
    return ",".join(f"127.0.0.1:{port + node}" for node in range(brokers))


def _local_elasticsearch(env: Mapping[str, str]) -> str:
    """Where the local services' Elasticsearch listens (python -m devservices): ES_NODES nodes
    on consecutive ports from ES_PORT, every one listed (as for Kafka)."""
    port = _int(env, "ES_PORT", 9200)
    nodes = _int(env, "ES_NODES", 1)
    return ",".join(f"http://127.0.0.1:{port + node}" for node in range(nodes))


def _optional_int(env: Mapping[str, str], name: str) -> int | None:
    return _int(env, name, 1) if env.get(name, "").strip() else None


def _file(env: Mapping[str, str], name: str) -> str:
    """An optional path that must name a readable file when set."""
    value = env.get(name, "").strip()
    if value and not Path(value).is_file():
        raise SettingsError(f"{name}={value!r} is not a readable file")
    return value


def _refuse_cleartext_logins(
    env: Mapping[str, str], elasticsearch_url: str, bootstrap: str, kafka: KafkaSecurity
) -> None:
    """A password or API key never crosses a network unencrypted: plain-http Elasticsearch and
    Kafka's SASL/PLAIN without TLS are for loopback hosts only."""
    es_secret = any(
        env.get(name, "").strip()
        for name in (ELASTICSEARCH_API_KEY_ENV, ELASTICSEARCH_PASSWORD_ENV)
    )
    plain_http = ",".join(
        url for url in elasticsearch_url.split(",") if url.strip().lower().startswith("http://")
    )
    if plain_http and (es_secret or has_credentials(elasticsearch_url)):
        problem = cleartext_login_problem(plain_http, "Elasticsearch's credentials")
        if problem is not None:
            shown = redact_url(elasticsearch_url)
            raise SettingsError(f"ELASTICSEARCH_URL={shown!r} is plain http and {problem}")
    if kafka.protocol == "SASL_PLAINTEXT" and kafka.sasl_mechanism == "PLAIN":
        problem = cleartext_login_problem(bootstrap, "the SASL/PLAIN password")
        if problem is not None:
            raise SettingsError(
                "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT with KAFKA_SASL_MECHANISM=PLAIN "
                f"{problem}: use SASL_SSL"
            )


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # None: as many copies as the cluster has brokers, at most 3 (arbitrage/domain/topics.py).
    kafka_replication_factor: int | None = None
    # TLS/SASL of every Kafka client; the password is wired by name (KAFKA_SASL_PASSWORD).
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    kafka_sasl_password_set: bool = False
    elasticsearch_url: str = "http://127.0.0.1:9200"
    elasticsearch_username: str = ""
    elasticsearch_ca_certs: str = ""
    elasticsearch_api_key_set: bool = False
    elasticsearch_password_set: bool = False
    fees_file: Path = REPO_ROOT / "config" / "fees_v1.toml"
    rules_file: Path = REPO_ROOT / "config" / "rules_v1.toml"
    # The notifications stage's channels (arbitrage/domain/notifications_config.py); the
    # default has none.
    notifications_file: Path = REPO_ROOT / "config" / "notifications.toml"
    # Where the ASINs worth watching come from (docs/discovery.md): one asset per source.
    discovery_file: Path = DEFAULT_DISCOVERY_FILE
    keepa_source: KeepaSourceName = "api"
    keepa_api_key_set: bool = False
    keepa_api_url: str = "https://api.keepa.com"
    keepa_markets: str = "DE,FR,IT,ES,GB"
    keepa_asins_file: Path = DATA_DIR / "asins.txt"
    keepa_sample_file: Path = DATA_DIR / "sample" / "keepa_sample.json.gz"
    keepa_pull_cron: str = "*/15 * * * *"
    keepa_pull_mode: KeepaPullMode = "list"
    # The own list's registry update (reading the file costs no token): its own cron, so the
    # planner's every-minute pull does not rewrite a long list every minute.
    keepa_own_list_cron: str = "*/15 * * * *"
    # Tokens the planner never spends (kept for a seller's own requests, or a margin).
    keepa_reserve_tokens: int = 0
    # Days of Keepa's csv price history each pull asks for (history=1&days=N); 0: none.
    keepa_history_days: int = 0
    checks_cron: str = "*/5 * * * *"
    # The daily digest of the day before (docs/notifications.md, "Daily digest"), UTC.
    digest_cron: str = "0 7 * * *"
    # on: schedules and sensors start running (make demo); off: they start stopped.
    automation: bool = False
    # The sensor daemon loops every 5 s and ticks a sensor once its minimum interval has passed;
    # 5 s would alias to ticks every 10 s, so ask for less to tick on every loop.
    sensor_interval_s: int = 3
    sensor_max_records: int = 20_000
    # A sensor-launched run stays on its partition until idle this long, or this old; a batch
    # is cut this long after its first record (arbitrage/engine/runner.py, ``Following``).
    run_idle_s: int = 60
    run_max_s: int = 900
    batch_linger_ms: int = 200
    # Tests and benchmarks empty the pipeline's topics, groups and indices; only on 127.0.0.1
    # unless this says the cluster is a throwaway one.
    allow_reset_anywhere: bool = False
    # Fault suite only (arbitrage/engine/faults.py): stage:point[:batch] where a stage run kills
    # itself.
    fault_point: str = ""
    # The opportunities page (arbitrage/web/, `arbitrage web`, `make demo`) listens on 127.0.0.1
    # here.
    web_port: int = 8080
    # Amazon's Selling Partner API, for `arbitrage fees calibrate` (the fee model's check); its
    # credentials are secrets, read by the client (arbitrage/clients/sp_api.py).
    sp_api_url: str = DEFAULT_SP_API_URL
    sp_api_lwa_url: str = DEFAULT_LWA_URL

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        default = cls()
        source = _text(env, "KEEPA_SOURCE", default.keepa_source).lower()
        if source not in KEEPA_SOURCES:
            raise SettingsError(
                f"KEEPA_SOURCE={source!r} is not a Keepa source; use 'api' (Keepa's HTTP API, "
                "needs KEEPA_API_KEY) or 'sample' (the bundled sample)"
            )
        pull_mode = _text(env, "KEEPA_PULL_MODE", default.keepa_pull_mode).lower()
        if pull_mode not in KEEPA_PULL_MODES:
            raise SettingsError(
                f"KEEPA_PULL_MODE={pull_mode!r} is not a pull mode; use 'list' (KEEPA_ASINS_FILE "
                "whole, on KEEPA_PULL_CRON) or 'planner' (the token planner, every minute)"
            )
        if pull_mode == "planner" and source != "api":
            raise SettingsError(
                "KEEPA_PULL_MODE=planner plans with Keepa's token balance: it needs "
                "KEEPA_SOURCE=api (the bundled sample has no tokens)"
            )
        keepa_api_url = _text(env, "KEEPA_API_URL", default.keepa_api_url)
        problem = secure_endpoint_problem(keepa_api_url)
        if problem is not None:
            raise SettingsError(f"KEEPA_API_URL={redact_url(keepa_api_url)!r} {problem}")
        endpoints = {
            "SP_API_URL": _text(env, "SP_API_URL", default.sp_api_url),
            "SP_API_LWA_URL": _text(env, "SP_API_LWA_URL", default.sp_api_lwa_url),
        }
        for name, url in endpoints.items():
            problem = secure_endpoint_problem(url)
            if problem is not None:
                raise SettingsError(f"{name}={redact_url(url)!r} {problem}")
        elasticsearch_url = _text(env, ELASTICSEARCH_URL_ENV, _local_elasticsearch(env))
        hosts = elasticsearch_hosts(elasticsearch_url)
        if _text(env, "ELASTICSEARCH_CA_CERTS", "") and not all(
            host.startswith("https:") for host in hosts
        ):
            shown = redact_url(elasticsearch_url)
            raise SettingsError(
                f"ELASTICSEARCH_CA_CERTS is set but ELASTICSEARCH_URL={shown!r} is not https; "
                "use https:// or unset ELASTICSEARCH_CA_CERTS"
            )
        try:
            kafka_security = KafkaSecurity.from_env(env)
        except KafkaSecurityError as exc:
            raise SettingsError(str(exc)) from None
        bootstrap = _text(env, "KAFKA_BOOTSTRAP_SERVERS", _local_bootstrap(env))
        _refuse_cleartext_logins(env, elasticsearch_url, bootstrap, kafka_security)
        return cls(
            kafka_bootstrap_servers=bootstrap,
            kafka_security=kafka_security,
            kafka_sasl_password_set=bool(env.get(KAFKA_PASSWORD_ENV, "")),
            kafka_replication_factor=_optional_int(env, "KAFKA_REPLICATION_FACTOR"),
            elasticsearch_url=elasticsearch_url,
            elasticsearch_username=_text(env, "ELASTICSEARCH_USERNAME", ""),
            elasticsearch_ca_certs=_file(env, "ELASTICSEARCH_CA_CERTS"),
            elasticsearch_api_key_set=bool(env.get(ELASTICSEARCH_API_KEY_ENV, "").strip()),
            elasticsearch_password_set=bool(env.get(ELASTICSEARCH_PASSWORD_ENV, "")),
            fees_file=Path(_text(env, "ARBITRAGE_FEES_FILE", str(default.fees_file))),
            rules_file=Path(_text(env, "ARBITRAGE_RULES_FILE", str(default.rules_file))),
            notifications_file=Path(
                _text(env, NOTIFICATIONS_FILE_ENV, str(default.notifications_file))
            ),
            discovery_file=Path(_text(env, DISCOVERY_FILE_ENV, str(default.discovery_file))),
            keepa_source=cast(KeepaSourceName, source),
            keepa_api_key_set=bool(env.get(KEEPA_KEY_ENV, "").strip()),
            keepa_api_url=keepa_api_url,
            keepa_markets=_text(env, "KEEPA_MARKETS", default.keepa_markets),
            keepa_asins_file=Path(_text(env, "KEEPA_ASINS_FILE", str(default.keepa_asins_file))),
            keepa_sample_file=Path(_text(env, "KEEPA_SAMPLE_FILE", str(default.keepa_sample_file))),
            keepa_pull_cron=_text(
                env,
                "KEEPA_PULL_CRON",
                PLANNER_PULL_CRON if pull_mode == "planner" else default.keepa_pull_cron,
            ),
            keepa_pull_mode=cast(KeepaPullMode, pull_mode),
            keepa_own_list_cron=_text(env, "KEEPA_OWN_LIST_CRON", default.keepa_own_list_cron),
            keepa_reserve_tokens=_int(
                env, "KEEPA_RESERVE_TOKENS", default.keepa_reserve_tokens, minimum=0
            ),
            keepa_history_days=_int(
                env, "KEEPA_HISTORY_DAYS", default.keepa_history_days, minimum=0
            ),
            checks_cron=_text(env, "ARBITRAGE_CHECKS_CRON", default.checks_cron),
            digest_cron=_text(env, "ARBITRAGE_DIGEST_CRON", default.digest_cron),
            automation=env.get("ARBITRAGE_AUTOMATION", "").strip().lower() in _TRUE,
            sensor_interval_s=_int(env, "ARBITRAGE_SENSOR_INTERVAL_S", default.sensor_interval_s),
            sensor_max_records=_int(
                env, "ARBITRAGE_SENSOR_MAX_RECORDS", default.sensor_max_records
            ),
            run_idle_s=_int(env, "ARBITRAGE_RUN_IDLE_S", default.run_idle_s),
            run_max_s=_int(env, "ARBITRAGE_RUN_MAX_S", default.run_max_s),
            batch_linger_ms=_int(
                env, "ARBITRAGE_BATCH_LINGER_MS", default.batch_linger_ms, minimum=0
            ),
            allow_reset_anywhere=env.get("ARBITRAGE_ALLOW_RESET", "").strip().lower() in _TRUE,
            fault_point=env.get("ARBITRAGE_FAULT_POINT", "").strip(),
            web_port=_int(env, "ARBITRAGE_WEB_PORT", default.web_port),
            sp_api_url=endpoints["SP_API_URL"],
            sp_api_lwa_url=endpoints["SP_API_LWA_URL"],
        )

    # The clients every entry point builds the same way. The fields without the secrets are
    # shared with the Dagster resources (resources/), which wire the secrets by name.

    def kafka_fields(self) -> dict[str, object]:
        security = self.kafka_security
        return {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "replication_factor": self.kafka_replication_factor,
            "security_protocol": security.protocol,
            "sasl_mechanism": security.sasl_mechanism,
            "sasl_username": security.sasl_username,
            "ssl_ca_location": security.ssl_ca_location,
            "ssl_certificate_location": security.ssl_certificate_location,
            "ssl_key_location": security.ssl_key_location,
        }

    def elasticsearch_fields(self) -> dict[str, object]:
        return {
            "url": self.elasticsearch_url,
            "username": self.elasticsearch_username,
            "ca_certs": self.elasticsearch_ca_certs,
        }

    def kafka(self, **overrides: object) -> KafkaClient:
        """A Kafka client; its password is read from the environment now."""
        password = os.environ.get(KAFKA_PASSWORD_ENV) if self.kafka_sasl_password_set else None
        fields = {**self.kafka_fields(), "sasl_password": password, **overrides}
        return KafkaClient(**fields)  # type: ignore[arg-type]

    def elasticsearch(self, **overrides: object) -> ElasticsearchClient:
        """An Elasticsearch client; its API key or password is read from the environment now."""
        api_key = os.environ.get(ELASTICSEARCH_API_KEY_ENV, "").strip()
        password = os.environ.get(ELASTICSEARCH_PASSWORD_ENV)
        fields = {
            **self.elasticsearch_fields(),
            "api_key": (api_key or None) if self.elasticsearch_api_key_set else None,
            "password": password if self.elasticsearch_password_set else None,
            **overrides,
        }
        return ElasticsearchClient(**fields)  # type: ignore[arg-type]
