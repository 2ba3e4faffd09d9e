"""Each account of arbitrage/domain/access.py may do its own job on the real broker and node, and is
refused the rest: a stage reads its source under its groups, writes its output and DLQ under
its transactional ids and its indices, and nothing else; only the provisioning account creates
topics, indices and templates; the operator (the shared account) creates nothing in the plain
names. Runs in the tests' namespace (the local services grant each account there as in the
plain names), except where a plain name is asked on purpose (validate-only creations)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from elasticsearch import ApiError, AuthorizationException, BadRequestError

from arbitrage.accounts import elasticsearch_as, kafka_as
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.keepa_ledger import ledger, spend_by_hour
from arbitrage.clients.tracked_asins import record_found, record_own_list, tracked
from arbitrage.domain import access, topics
from arbitrage.domain.discovery_config import DiscoverySource
from arbitrage.domain.keepa_parsing import TokenInfo
from arbitrage.domain.stage_specs import STAGES, StageSpec
from arbitrage.engine.kafka_transactions import transactional_id
from arbitrage.settings import Settings
from tests.secure.kafka_probes import (
    TIMEOUT_S,
    consume_error,
    create_topic_error,
    delivery_error,
    init_transactions_error,
)

pytestmark = [pytest.mark.integration, pytest.mark.secure]

PIPELINE_TOPICS = [spec.name for spec in topics.TOPICS]
STAGE_IDS = [spec.name for spec in STAGES]


def kafka_account(key: str) -> KafkaClient:
    base = Settings.from_env().kafka(timeout_s=TIMEOUT_S)
    own = kafka_as(base, key)
    assert own is not base, f"client.env names no Kafka account for {key}"
    return own


def es_account(key: str) -> ElasticsearchClient:
    base = Settings.from_env().elasticsearch(max_retries=0)
    own = elasticsearch_as(base, key)
    assert own is not base, f"client.env names no Elasticsearch account for {key}"
    return own


def outputs(spec: StageSpec) -> list[str]:
    return [*([spec.output_topic] if spec.output_topic else []), spec.dlq_topic]


def other_stage(spec: StageSpec) -> StageSpec:
    return next(other for other in STAGES if other.name != spec.name)


@pytest.mark.parametrize("spec", STAGES, ids=STAGE_IDS)
def test_a_stage_account_writes_its_outputs_and_no_other_topic(
    kafka: KafkaClient, spec: StageSpec
) -> None:
    config = kafka_account(spec.name).client_config()
    # Inside: a transaction under its own id writes its output and DLQ; aborted, so no
    # read_committed reader ever sees the probe.
    producer = Producer(
        {**config, "transactional.id": transactional_id(spec.live_group, spec.source_topic, 0)}
    )
    producer.init_transactions(TIMEOUT_S)
    producer.begin_transaction()
    reports: list[Any] = []
    for topic in outputs(spec):
        producer.produce(topic, b"grant-probe", on_delivery=lambda err, _m: reports.append(err))
    producer.flush(TIMEOUT_S)
    producer.abort_transaction(TIMEOUT_S)
    assert reports == [None] * len(outputs(spec))
    # Outside: every other topic of the pipeline, its own source included.
    for topic in PIPELINE_TOPICS:
        if topic not in outputs(spec):
            assert delivery_error(config, topic).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Another stage's transactional id, and ids of no stage at all.
    other = other_stage(spec)
    for txn_id in (
        transactional_id(other.live_group, other.source_topic, 0),
        f"someone:{spec.source_topic}:0",
    ):
        assert init_transactions_error(config, txn_id).code() == (
            KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        ), txn_id


@pytest.mark.parametrize("spec", STAGES, ids=STAGE_IDS)
def test_a_stage_account_reads_its_source_under_its_groups_only(
    kafka: KafkaClient, spec: StageSpec
) -> None:
    config = kafka_account(spec.name).client_config()
    assert consume_error(config, spec.replay_group, spec.source_topic) is None
    other = other_stage(spec)
    refused = consume_error(config, other.live_group, spec.source_topic)
    assert refused is not None and refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    refused = consume_error(config, spec.replay_group, other.source_topic)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # A runtime account creates no topic, not even one of the pipeline's.
    for name in (spec.source_topic, topics.plain_name(spec.source_topic)):
        refused = create_topic_error(config, name)
        assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_keepa_pull_account_writes_raw_updates_only(kafka: KafkaClient) -> None:
    config = kafka_account(access.KEEPA_PULL).client_config()
    producer = Producer({**config, "enable.idempotence": True, "message.timeout.ms": 8000})
    reports: list[Any] = []
    # A tombstone without a key: the enrichment stage dead-letters it if it ever reads it.
    producer.produce(topics.RAW_UPDATES, None, on_delivery=lambda err, _m: reports.append(err))
    producer.flush(TIMEOUT_S)
    assert reports == [None]
    for topic in PIPELINE_TOPICS:
        if topic != topics.RAW_UPDATES:
            assert delivery_error(config, topic).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    refused = consume_error(config, access.KEEPA_PULL, topics.RAW_UPDATES)
    assert refused is not None and refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_only_the_provisioning_account_may_create_the_pipelines_topics(
    kafka: KafkaClient,
) -> None:
    """validate_only: the broker checks the grant, creates nothing. The plain names too,
    where the operator owns no namespace."""
    provision = kafka_account(access.PROVISION).client_config()
    operator = kafka.client_config()
    for spec in topics.TOPICS:
        for name in (spec.name, topics.plain_name(spec.name)):
            assert create_topic_error(provision, name) is None, name
        refused = create_topic_error(operator, topics.plain_name(spec.name))
        assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Not a topic outside the pipeline's names, and it reads nothing.
    refused = create_topic_error(provision, f"not-the-pipelines-{uuid.uuid4().hex[:6]}")
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    refused = consume_error(provision, topics.tool_name("provision-probe"), topics.RAW_UPDATES)
    assert refused is not None and refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED


# ----------------------------------------------------------------------------- Elasticsearch


def es_status(call: Any) -> int:
    """The node's answer: 403 (refused), or the 400 a strict mapping gives an unknown field
    (the grant was checked first and allowed it; nothing was written)."""
    try:
        call()
    except (AuthorizationException, BadRequestError) as exc:
        return int(exc.meta.status)
    except ApiError as exc:
        raise AssertionError(f"unexpected answer {exc.meta.status}: {exc}") from None
    return 200


PROBE = {"grant_probe": True}  # no index of the pipeline maps this field


@pytest.mark.parametrize("spec", STAGES, ids=STAGE_IDS)
def test_a_stage_account_writes_its_indices_and_no_others(
    es: ElasticsearchClient, spec: StageSpec
) -> None:
    client = es_account(spec.name).client()
    stage_indices = {index for stage in STAGES for index in stage.indices}
    for index in sorted(stage_indices):
        status = es_status(lambda index=index: client.index(index=index, document=PROBE))
        assert status == (400 if index in spec.indices else 403), index
        # It reads its own indices (a stage reads its writes back), nobody else's.
        read = es_status(lambda index=index: client.count(index=index))
        assert read == (200 if index in spec.indices else 403), index
    # No index, template or ledger of its own making.
    for call in (
        lambda: client.indices.create(index=topics.tool_name(f"grant-{uuid.uuid4().hex[:6]}")),
        lambda: client.indices.put_index_template(
            name=f"grant-probe-{spec.name}", index_patterns=["grant-probe-*"]
        ),
        lambda: client.index(index=topics.REDRIVE_LEDGER_INDEX, document=PROBE),
        lambda: client.indices.delete(index=spec.index),
    ):
        assert es_status(call) == 403


def test_only_the_provisioning_account_may_create_indices_and_templates(
    es: ElasticsearchClient,
) -> None:
    provision = es_account(access.PROVISION).client()
    operator = es.client()
    # Its job: templates and the pipeline's indices (one of the tests' namespace, made anew).
    assert provision.indices.get_index_template(name="*")["index_templates"] is not None
    scratch = topics.DELIVERIES_INDEX
    operator.options(ignore_status=404).indices.delete(index=scratch)
    try:
        assert provision.indices.create(index=scratch)["acknowledged"]
        # A field an existing index lacks (what `arbitrage provision` adds after an upgrade).
        mapping = {"grant_mapping_probe": {"type": "keyword"}}
        assert provision.indices.put_mapping(index=scratch, properties=mapping)["acknowledged"]
        # Not its job: documents, deleting, names outside the pipeline's.
        assert es_status(lambda: provision.index(index=scratch, document=PROBE)) == 403
        assert es_status(lambda: provision.indices.delete(index=scratch)) == 403
    finally:
        # Leave the namespace as found: the index as its template makes it.
        operator.options(ignore_status=404).indices.delete(index=scratch)
        Settings.from_env().elasticsearch().ensure_indices()
    assert (
        es_status(lambda: provision.indices.create(index=f"someone-{uuid.uuid4().hex[:6]}")) == 403
    )
    # The operator creates none of the plain names' indices (it owns only the tests' namespace).
    plain = topics.plain_name(topics.PRODUCTS_INDEX)
    assert es_status(lambda: operator.indices.create(index=plain + "-grant-probe")) == 403
    assert es_status(lambda: operator.index(index=plain, document=PROBE)) == 403


def test_the_digest_account_reads_alerts_and_records_deliveries_only(
    es: ElasticsearchClient,
) -> None:
    client = es_account(access.DIGEST).client()
    assert es_status(lambda: client.count(index=topics.ALERTS_INDEX)) == 200
    assert es_status(lambda: client.indices.refresh(index=topics.ALERTS_INDEX)) == 200
    # Its deliveries pass the authorizer (the probe's unknown field then gets 400) ...
    assert es_status(lambda: client.index(index=topics.DELIVERIES_INDEX, document=PROBE)) == 400
    # ... nothing else: not the alerts themselves, not the products, no index of its own.
    for call in (
        lambda: client.index(index=topics.ALERTS_INDEX, document=PROBE),
        lambda: client.count(index=topics.PRODUCTS_INDEX),
        lambda: client.indices.create(index=topics.tool_name(f"digest-{uuid.uuid4().hex[:6]}")),
    ):
        assert es_status(call) == 403


def test_the_keepa_account_keeps_the_registry_and_touches_no_other_index(
    es: ElasticsearchClient,
) -> None:
    """Discovery and the planned pull run as the Keepa account: the registry of tracked ASINs
    (created on first use, written, its own-list findings deleted), the ledger, and the stages'
    products and alerts read (what the planner weighs), never written."""
    keepa = es_account(access.KEEPA_PULL)
    client = keepa.client()
    es.client().options(ignore_status=404).indices.delete(index=topics.TRACKED_ASINS_INDEX)
    found = DiscoverySource("grant-probe", "finder", "DE", "0 * * * *", 1, "a probe")
    record_found(keepa, found, ["B000000001", "B000000002"], 1_000)
    record_own_list(keepa, ["B000000003"], 1_000)
    record_own_list(keepa, [], 2_000)  # deletes the own list's finding
    assert {t.asin for t in tracked(keepa, 1_500)} == {"B000000001", "B000000002"}
    # The token ledger: the Keepa account writes it, the operator (`arbitrage tokens`) reads it.
    es.client().options(ignore_status=404).indices.delete(index=topics.KEEPA_LEDGER_INDEX)
    with ledger(keepa, f"probe-{uuid.uuid4().hex[:6]}", "refresh") as book:
        book.record(
            "/product", "DE", ["B000000001", "B000000002"], TokenInfo(10, 500, 20, 6, 1_000)
        )
    assert [(s.purpose, s.tokens) for s in spend_by_hour(es, 0, 2**62)] == [("refresh", 6)]
    for call in (
        lambda: client.index(index=topics.PRODUCTS_INDEX, document=PROBE),
        lambda: client.index(index=topics.ALERTS_INDEX, document=PROBE),
        lambda: client.indices.delete(index=topics.TRACKED_ASINS_INDEX),
        lambda: client.indices.create(index=topics.tool_name(f"keepa-{uuid.uuid4().hex[:6]}")),
    ):
        assert es_status(call) == 403
    for index in (topics.PRODUCTS_INDEX, topics.ALERTS_INDEX):
        client.count(index=index)  # read (a refusal would raise): the planner's inputs
