"""Who the secured services refuse, with the errors they really answer.

Kafka: there is no PLAINTEXT port to be anonymous on; a client without (or with wrong)
credentials on the SASL_SSL port, and the unprivileged user, are refused the pipeline's topics,
groups and transactional ids; the operator (the shared account) is refused everything outside
its grants (each job's own account: test_grants.py).
Elasticsearch: no credentials (401), wrong ones (401), an unknown API key (401), plain http on the
TLS port, a client that does not trust the local CA, the unprivileged user (403), and the
pipeline's user outside its indices (403).
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import elastic_transport
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import AuthenticationException, AuthorizationException

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.stage_specs import ENRICHMENT
from arbitrage.engine.kafka_transactions import transactional_id
from arbitrage.settings import Settings
from devservices import secure
from devservices.settings import Settings as ServiceSettings
from tests.secure.kafka_probes import (
    TIMEOUT_S,
    consume_error,
    delivery_error,
    init_transactions_error,
)

pytestmark = [pytest.mark.integration, pytest.mark.secure]


def as_user(name: str, password: str, **overrides: Any) -> KafkaClient:
    return Settings.from_env().kafka(sasl_username=name, sasl_password=password, **overrides)


# A transactional id as the enrichment stage uses it: <group>:<topic>:<partition>.
PIPELINE_TXN_ID = transactional_id(ENRICHMENT.live_group, ENRICHMENT.source_topic, 0)


def test_there_is_no_plaintext_listener(services: ServiceSettings) -> None:
    """Secure mode listens on SASL_SSL and its loopback controller port only: KAFKA_PORT,
    where plain mode serves anonymous clients, refuses the TCP connection itself."""
    for node in range(services.kafka_brokers):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((services.host, services.kafka_port + node), timeout=5)
    anonymous = KafkaClient(bootstrap_servers=f"{services.host}:{services.kafka_port}")
    with pytest.raises(KafkaException) as dropped:
        AdminClient(anonymous.client_config()).list_topics(timeout=5)
    assert dropped.value.args[0].code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT)


def test_the_sasl_ssl_port_refuses_wrong_or_missing_credentials(
    services: ServiceSettings,
) -> None:
    wrong = as_user(secure.PIPELINE_USER, "not-the-password").client_config()
    # The refusal itself arrives through the error callback; the request then fails for want
    # of a usable connection.
    reported: list[KafkaError] = []
    producer = Producer({**wrong, "error_cb": reported.append})
    deadline = time.monotonic() + TIMEOUT_S
    while not reported and time.monotonic() < deadline:
        producer.poll(0.5)
    assert any(
        error.code() == KafkaError._AUTHENTICATION and "invalid credentials" in error.str()
        for error in reported
    ), [error.str() for error in reported]
    # TLS without SASL, and plaintext, never get past the handshake.
    for protocol in ("SSL", "PLAINTEXT"):
        config = {**wrong, "security.protocol": protocol}
        for key in ("sasl.mechanism", "sasl.username", "sasl.password"):
            config.pop(key)
        if protocol == "PLAINTEXT":
            config.pop("ssl.ca.location")
        with pytest.raises(KafkaException) as dropped:
            AdminClient(config).list_topics(timeout=5)
        assert dropped.value.args[0].code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT)


def test_the_unprivileged_user_is_refused_topics_groups_and_transactional_ids(
    passwords: dict[str, str],
) -> None:
    config = as_user(secure.UNPRIVILEGED_USER, passwords["kafka_unprivileged"]).client_config()
    assert delivery_error(config, topics.RAW_UPDATES).code() == (
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    )
    refused = consume_error(config, ENRICHMENT.live_group)
    assert refused is not None and refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert init_transactions_error(config, PIPELINE_TXN_ID).code() in (
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    )
    admin = AdminClient(config)
    futures = admin.create_topics([NewTopic(f"unprivileged-{uuid.uuid4().hex[:6]}", 1, 1)])
    for future in futures.values():
        with pytest.raises(KafkaException) as refused:
            future.result()
        assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_operator_has_its_grants_and_nothing_more(kafka: KafkaClient) -> None:
    """The shared account (CLI, sensors, checks, tests): transactions and groups in the tests'
    namespace (its scratch space), no stage's transactional id, no foreign group or topic."""
    config = kafka.client_config()
    assert config["security.protocol"] == "SASL_SSL"
    # A transactional id under its tool prefix works (and so IdempotentWrite on the cluster) ...
    producer = Producer({**config, "transactional.id": topics.tool_name("grant-probe:0")})
    producer.init_transactions(TIMEOUT_S)
    # ... a stage's does not, nor one outside every prefix; nor a group or a topic that is not
    # the pipeline's.
    for txn_id in (transactional_id("enrichment", "raw.keepa_updates", 0), "other:x:0"):
        assert init_transactions_error(config, txn_id).code() == (
            KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        ), txn_id
    refused = consume_error(config, "someone-else")
    assert refused is not None and refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    outside = f"not-the-pipelines-{uuid.uuid4().hex[:6]}"
    for future in kafka.admin().create_topics([NewTopic(outside, 1, 1)]).values():
        with pytest.raises(KafkaException) as refused_topic:
            future.result()
        assert refused_topic.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_kafka_tools_properties_carry_the_same_settings(kafka: KafkaClient) -> None:
    text = kafka.tools_properties()
    assert "security.protocol=SASL_SSL" in text
    assert "sasl.mechanism=SCRAM-SHA-512" in text
    assert f"ssl.truststore.location={kafka.ssl_ca_location}" in text
    # The password is in the file (the tools need it) but never in the resource's repr.
    assert "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule" in text
    assert kafka.client_config()["sasl.password"] not in repr(kafka)


# ----------------------------------------------------------------------------- Elasticsearch


def es_as(**fields: Any) -> ElasticsearchClient:
    base = Settings.from_env().elasticsearch()
    values = {
        "url": base.url,
        "ca_certs": base.ca_certs,
        "request_timeout_s": 10.0,
        "username": "",
        "password": None,
        "api_key": None,
        **fields,
    }
    return ElasticsearchClient(**values)


def test_elasticsearch_refuses_anonymous_and_wrong_credentials_with_401(
    services: ServiceSettings,
) -> None:
    for resource in (
        es_as(),
        es_as(username=secure.PIPELINE_USER, password="not-the-password"),
        # An API key it never issued: the client sends it (not basic auth), the node refuses.
        es_as(api_key="Ym9ndXMtaWQ6Ym9ndXMta2V5", username=secure.PIPELINE_USER),
    ):
        with pytest.raises(AuthenticationException) as refused:
            resource.client().search(index=topics.PRODUCTS_INDEX)
        assert refused.value.meta.status == 401


def test_elasticsearch_speaks_only_tls_with_its_own_ca(
    services: ServiceSettings, passwords: dict[str, str]
) -> None:
    assert Settings.from_env().elasticsearch_url.startswith("https://")
    plain = es_as(
        url=f"http://{services.host}:{services.es_port}",
        username=secure.PIPELINE_USER,
        password=passwords["es_pipeline"],
        ca_certs="",
        max_retries=0,
    )
    with pytest.raises(elastic_transport.ConnectionError):
        plain.client().options(max_retries=0).cluster.health()
    untrusting = es_as(
        username=secure.PIPELINE_USER, password=passwords["es_pipeline"], ca_certs=""
    )
    with pytest.raises(elastic_transport.TlsError):
        untrusting.client().options(max_retries=0).cluster.health()


def test_elasticsearch_unprivileged_user_and_foreign_indices_get_403(
    es: ElasticsearchClient, passwords: dict[str, str]
) -> None:
    unprivileged = es_as(username=secure.UNPRIVILEGED_USER, password=passwords["es_unprivileged"])
    assert unprivileged.client().cluster.health()["status"] in ("green", "yellow")
    for call in (
        lambda: unprivileged.client().search(index=topics.PRODUCTS_INDEX),
        lambda: unprivileged.client().index(
            index=topics.ALERTS_INDEX, id="x", document={"asin": "B000000000"}
        ),
        lambda: unprivileged.client().indices.delete(index=topics.PRODUCTS_INDEX),
    ):
        with pytest.raises(AuthorizationException) as refused:
            call()
        assert refused.value.meta.status == 403
    # The pipeline's user: its own indices yes, anyone else's no.
    assert es.client().count(index=topics.PRODUCTS_INDEX)["count"] >= 0
    with pytest.raises(AuthorizationException) as refused:
        es.client().indices.create(index=f"someone-else-{uuid.uuid4().hex[:6]}")
    assert refused.value.meta.status == 403
