"""Who the secured services refuse, with the errors they really answer.

Kafka: an anonymous client on the PLAINTEXT port, a client without (or with wrong) credentials
on the SASL_SSL port, and the unprivileged user are refused the pipeline's topics, groups and
transactional ids; the pipeline's own user is refused everything outside its grants.
Elasticsearch: no credentials (401), wrong ones (401), an unknown API key (401), plain http on the
TLS port, a client that does not trust the local CA, the unprivileged user (403), and the
pipeline's user outside its indices (403).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import elastic_transport
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from elasticsearch import AuthenticationException, AuthorizationException

from devservices import secure
from devservices.settings import Settings as ServiceSettings
from pipelines import topics
from resources.elasticsearch import ElasticsearchResource
from resources.kafka import KafkaResource
from resources.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.secure]

TIMEOUT_S = 10.0


def plaintext_anonymous(services: ServiceSettings) -> KafkaResource:
    return KafkaResource(bootstrap_servers=f"{services.host}:{services.kafka_port}")


def as_user(name: str, password: str, **overrides: Any) -> KafkaResource:
    return Settings.from_env().kafka(sasl_username=name, sasl_password=password, **overrides)


def delivery_error(config: dict[str, Any], topic: str) -> KafkaError:
    """Produce one message without idempotence (so only the topic ACL is asked) and return the
    broker's answer in the delivery report."""
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "enable.idempotence": False, "message.timeout.ms": 8000})
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(TIMEOUT_S)
    assert len(errors) == 1, "no delivery report within the timeout"
    assert errors[0] is not None, f"{topic}: the write was accepted"
    return errors[0]


def group_join_error(config: dict[str, Any], group: str) -> KafkaError:
    """Join ``group`` as a stage's consumer would and return the broker's refusal (a commit
    alone only reports "waiting for coordinator": the refusal comes with the join)."""
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    consumer.subscribe([topics.RAW_UPDATES])
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is not None:
                return message.error()
    finally:
        consumer.close()
    raise AssertionError(f"group {group!r} was not refused within {TIMEOUT_S:.0f}s")


def init_transactions_error(config: dict[str, Any], txn_id: str) -> KafkaError:
    producer = Producer({**config, "transactional.id": txn_id})
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(TIMEOUT_S)
    return refused.value.args[0]


# A transactional id as a stage would use it: <group>:<topic>:<partition>.
PIPELINE_TXN_ID = f"enrichment:{topics.RAW_UPDATES}:0"


def test_an_anonymous_client_on_the_plaintext_port_is_refused_everything(
    services: ServiceSettings,
) -> None:
    config = plaintext_anonymous(services).client_config()
    error = delivery_error(config, topics.RAW_UPDATES)
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert group_join_error(config, "enrichment").code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    # Idempotence (every transactional producer) needs a cluster grant first; either refusal
    # stops it before any transaction.
    assert init_transactions_error(config, PIPELINE_TXN_ID).code() in (
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    )
    # It cannot even see that the pipeline's topics exist.
    metadata = AdminClient(config).list_topics(timeout=TIMEOUT_S)
    assert not set(metadata.topics) & {spec.name for spec in topics.TOPICS}


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
    assert group_join_error(config, "enrichment").code() == KafkaError.GROUP_AUTHORIZATION_FAILED
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


def test_the_pipeline_user_has_its_grants_and_nothing_more(kafka: KafkaResource) -> None:
    config = kafka.client_config()
    assert config["security.protocol"] == "SASL_SSL"
    # Its own transactional id works (and so IdempotentWrite on the cluster) ...
    producer = Producer({**config, "transactional.id": PIPELINE_TXN_ID})
    producer.init_transactions(TIMEOUT_S)
    # ... one outside its prefixes does not; nor a group or a topic that is not the pipeline's.
    assert init_transactions_error(config, f"other:{topics.RAW_UPDATES}:0").code() == (
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    )
    assert group_join_error(config, "someone-else").code() == (
        KafkaError.GROUP_AUTHORIZATION_FAILED
    )
    outside = f"not-the-pipelines-{uuid.uuid4().hex[:6]}"
    for future in kafka.admin().create_topics([NewTopic(outside, 1, 1)]).values():
        with pytest.raises(KafkaException) as refused:
            future.result()
        assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_kafka_tools_properties_carry_the_same_settings(kafka: KafkaResource) -> None:
    text = kafka.tools_properties()
    assert "security.protocol=SASL_SSL" in text
    assert "sasl.mechanism=SCRAM-SHA-512" in text
    assert f"ssl.truststore.location={kafka.ssl_ca_location}" in text
    # The password is in the file (the tools need it) but never in the resource's repr.
    assert "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule" in text
    assert kafka.client_config()["sasl.password"] not in repr(kafka)


# ----------------------------------------------------------------------------- Elasticsearch


def es_as(**fields: Any) -> ElasticsearchResource:
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
    return ElasticsearchResource(**values)


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
    es: ElasticsearchResource, passwords: dict[str, str]
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
