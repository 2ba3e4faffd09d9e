"""The real Kafka broker and Elasticsearch as the pipeline configures them."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException

from arbitrage.clients.elasticsearch import BulkOp, ElasticsearchClient
from arbitrage.clients.index_templates import INDEX_TEMPLATES_BODIES, PRODUCTS_MAPPING
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.signals import SIGNAL_FIELDS
from tests.factories import enriched, offer, steady_signals
from tests.integration.kafka_io import produce, read_all

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_topics_have_three_partitions_and_seven_days(kafka: KafkaClient) -> None:
    kafka.ensure_topics()
    assert kafka.ensure_topics() == {spec.name: "exists" for spec in topics.TOPICS}
    described = kafka.describe_topics([spec.name for spec in topics.TOPICS])
    # As many copies as there are brokers, at most 3; a write needs two of three.
    replicas = min(3, len(kafka.broker_ids()))
    for spec in topics.TOPICS:
        assert described[spec.name]["partitions"] == 3
        assert described[spec.name]["retention.ms"] == 604_800_000
        assert described[spec.name]["replication_factor"] == replicas
        assert described[spec.name]["min.insync.replicas"] == (2 if replicas == 3 else 1)


@pytest.mark.cluster
@pytest.mark.usefixtures("clean_pipeline")
def test_provision_warns_about_a_topic_with_fewer_replicas(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    """A topic created before the cluster grew keeps its one copy: provisioning says so."""
    from confluent_kafka.admin import NewTopic

    from arbitrage.cli.reset import reset_pipeline
    from arbitrage.settings import Settings

    name = topics.RAW_UPDATES_DLQ
    try:
        for future in kafka.admin().delete_topics([name], operation_timeout=60).values():
            future.result()
        deadline = time.monotonic() + 60
        while True:
            futures = kafka.admin().create_topics(
                [NewTopic(name, 3, 1, config=topics.TOPIC_BY_NAME[name].config(1))]
            )
            try:
                futures[name].result()
                break
            except KafkaException:  # still marked for deletion for a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        result = subprocess.run(
            [str(REPO / ".venv" / "bin" / "arbitrage"), "provision"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert f"topic  {name:<24} exists" in result.stdout
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1, result.stderr
        assert f"topic {name} has replication factor 1" in warnings[0]
    finally:  # the topic as provisioning makes it, for the tests after this one
        reset_pipeline(kafka, es, allow_anywhere=Settings.from_env().allow_reset_anywhere)


@pytest.mark.usefixtures("clean_pipeline")
def test_keyed_messages_come_back_on_one_partition_per_key(kafka: KafkaClient) -> None:
    keys = [f"B0KEYS{n:04d}" for n in range(30)]
    produce(kafka, topics.RAW_UPDATES, [(key, b"{}") for key in keys * 3])
    partitions: dict[str, set[int]] = {}
    for message in read_all(kafka, topics.RAW_UPDATES):
        partitions.setdefault(message.key, set()).add(message.partition)
    assert sorted(partitions) == sorted(keys)
    assert all(len(found) == 1 for found in partitions.values())
    assert len(set().union(*partitions.values())) == 3  # 30 keys spread over all partitions


@pytest.mark.usefixtures("clean_pipeline")
def test_index_template_applies_and_bulk_round_trips(es: ElasticsearchClient) -> None:
    client = es.client()
    template = f"arbitrage-{topics.PRODUCTS_INDEX}"
    templates = client.indices.get_index_template(name=template)["index_templates"]
    assert templates[0]["index_template"]["index_patterns"] == [topics.PRODUCTS_INDEX]
    mapping = client.indices.get_mapping(index=topics.PRODUCTS_INDEX)[topics.PRODUCTS_INDEX]
    assert mapping["mappings"]["dynamic"] == "strict"
    assert mapping["mappings"]["properties"]["markets"]["properties"]["GB"]["properties"][
        "buy_price_eur_cents"
    ] == {"type": "long"}
    doc = {"alert_id": "a1", "asin": "B0ROUNDTRP", "profit_eur_cents": 1234, "roi": 0.25}
    outcome = es.bulk_write(
        [
            BulkOp("create", topics.ALERTS_INDEX, "a1", doc),
            BulkOp("create", topics.ALERTS_INDEX, "a1", doc),  # same id: stored once
            BulkOp("create", topics.ALERTS_INDEX, "a2", {**doc, "unknown_field": 1}),
        ]
    )
    assert (outcome.written, outcome.unchanged) == (1, 1)
    assert "strict_dynamic_mapping_exception" in outcome.rejected[2]
    assert client.get(index=topics.ALERTS_INDEX, id="a1")["_source"] == doc
    assert es.count(topics.ALERTS_INDEX) == 1


def parse_describe(output: str) -> dict[int, tuple[int, int, int]]:
    """kafka-consumer-groups --describe → {partition: (current, log end, lag)}."""
    rows = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == topics.RAW_UPDATES and fields[2].isdigit():
            rows[int(fields[2])] = (int(fields[3]), int(fields[4]), int(fields[5]))
    return rows


@pytest.mark.usefixtures("clean_pipeline")
def test_lag_equals_kafka_consumer_groups_describe(kafka: KafkaClient) -> None:
    group = topics.tool_name(f"test-lag-{uuid.uuid4().hex[:8]}")
    produce(kafka, topics.RAW_UPDATES, [(f"B0LAG{n:05d}", b"{}") for n in range(90)])
    highs = {p: high for p, (_, high) in kafka.watermarks(topics.RAW_UPDATES).items()}
    committed = {p: high // 2 for p, high in highs.items()}
    kafka.commit(group, topics.RAW_UPDATES, committed)

    ours = {
        lag.partition: (lag.committed, lag.high_watermark, lag.lag)
        for lag in kafka.lag(group, topics.RAW_UPDATES)
    }
    described = subprocess.run(
        [
            str(REPO / "bin" / "kafka-consumer-groups"),
            "--bootstrap-server",
            kafka.bootstrap_servers,
            "--describe",
            "--group",
            group,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert parse_describe(described) == ours
    assert ours == {p: (committed[p], highs[p], highs[p] - committed[p]) for p in highs}
    assert sum(lag for _, _, lag in ours.values()) > 0


def test_integration_tests_fail_loudly_without_services(tmp_path: Path) -> None:
    """With nothing listening, an integration test fails (never skips) and says how to start."""
    scheme = "https" if os.environ.get("ELASTICSEARCH_CA_CERTS") else "http"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        # https where the services are secured: a CA file with a plain URL is a config error.
        "ELASTICSEARCH_URL": f"{scheme}://127.0.0.1:1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_services.py::test_topics_have_three_partitions_and_seven_days",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "1 error" in result.stdout or "1 failed" in result.stdout, result.stdout
    assert "skipped" not in result.stdout
    assert "make services-up" in result.stdout


def test_a_state_of_an_older_run_is_refused_and_the_same_run_may_write_again(
    es: ElasticsearchClient,
) -> None:
    """Opportunity states are indexed with the writing run's start as an ``external_gte``
    version (arbitrage/engine/processors.py): a newer run overwrites, the same run writes again, a
    fenced older run is refused (409), never overwriting the newer run's state."""
    es.ensure_indices()
    # A new id each time: a deleted document's version outlives it (index.gc_deletes).
    index, doc_id = topics.ALERTS_INDEX, f"B0FENCE001-DE-FR-fees_v1-rules_{uuid.uuid4().hex}"
    client = es.client()

    def write(version: int, profit: int) -> list[int]:
        doc = {"asin": "B0FENCE001", "opportunity_id": doc_id, "profit_eur_cents": profit}
        op = BulkOp("index", index, doc_id, doc, version, "external_gte")
        return es.bulk_write([op]).conflicts

    assert write(2_000, 1) == []
    assert write(2_000, 2) == []  # the same run, a later batch
    assert write(3_000, 3) == []  # a newer run
    assert write(2_000, 4) == [0]  # the older run, thawed: refused
    assert client.get(index=index, id=doc_id)["_source"]["profit_eur_cents"] == 3


# How the release before issue 11 mapped a market's signals: every one indexed.
_EARLIER_SIGNAL_TYPES = {"price": "long", "count": "integer", "pct": "byte", "bool": "boolean"}


def _earlier_products_mapping() -> dict[str, Any]:
    """The products mapping as the earlier release created it: every market field indexed,
    the signals searchable; and without ``spread_eur_cents`` (a field added since)."""
    mapping = copy.deepcopy(PRODUCTS_MAPPING)
    del mapping["properties"]["spread_eur_cents"]
    for market in mapping["properties"]["markets"]["properties"].values():
        fields = market["properties"]
        for name, spec in fields.items():
            fields[name] = {"type": spec["type"]}
        fields["signals"] = {
            # The kinds of signals it had (text came later).
            "properties": {
                name: {"type": _EARLIER_SIGNAL_TYPES[k]}
                for name, k in SIGNAL_FIELDS
                if k in _EARLIER_SIGNAL_TYPES
            }
        }
    return mapping


@pytest.mark.usefixtures("clean_pipeline")
def test_an_index_an_earlier_release_created_keeps_its_mapping_and_takes_documents(
    es: ElasticsearchClient,
) -> None:
    """Elasticsearch only adds fields to an existing index: ensuring the indices adds what is
    missing and leaves the fields it cannot change (the signals stay searchable there), so an
    upgrade never stops a stage; the template, edited by hand, is put back."""
    client, index = es.client(), topics.PRODUCTS_INDEX
    client.indices.delete(index=index)
    client.indices.create(index=index, mappings=_earlier_products_mapping())
    template = f"arbitrage-{index}"
    client.indices.put_index_template(
        name=template, index_patterns=[index], priority=500, template={"settings": {}}
    )

    assert es.ensure_indices()[index] == "exists"

    mapped = client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapped["spread_eur_cents"] == {"type": "long"}
    germany = mapped["markets"]["properties"]["DE"]["properties"]
    assert germany["signals"]["properties"]["sales_rank_drops30"] == {"type": "integer"}
    assert germany["fba_fee_source"] == {"type": "keyword"}
    ours = client.indices.get_index_template(name=template)["index_templates"][0]
    assert ours["index_template"]["_meta"] == INDEX_TEMPLATES_BODIES[index]["_meta"]
    assert (
        ours["index_template"]["template"]["mappings"]["properties"]["markets"]
        == (PRODUCTS_MAPPING["properties"]["markets"])
    )

    markets = {
        "DE": offer("DE", new=4500, signals=steady_signals(4500)),
        "FR": offer("FR", buy_box=8000),
    }
    product = enriched(load_fee_config(), asin="B0EARLIER1", markets=markets)
    op = BulkOp("index", index, "B0EARLIER1", encode(product), product["source_timestamp_ms"])
    assert es.bulk_write([op]).written == 1
    client.indices.refresh(index=index)
    found = client.search(
        index=index, query={"range": {"markets.DE.signals.sales_rank_drops30": {"gte": 30}}}
    )
    assert [hit["_id"] for hit in found["hits"]["hits"]] == ["B0EARLIER1"]
