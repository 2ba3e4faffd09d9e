"""An unwell Elasticsearch fails the run without committing; only the documents themselves are
dead-lettered. Faults are made for real: index blocks, a closed index, an invalid request."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dagster as dg
import pytest

from arbitrage.clients.elasticsearch import (
    BulkOp,
    ElasticsearchClient,
    ElasticsearchUnavailableError,
)
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.stage_specs import ENRICHMENT
from arbitrage.settings import Settings
from resources.elasticsearch import ElasticsearchResource, elasticsearch_resource
from tests.definitions import SAMPLE_DEFS
from tests.factories import raw_update
from tests.integration.kafka_io import produce, read_all

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_pipeline")]
INDEX = topics.tool_name("test-infrastructure-faults")


@pytest.fixture
def scratch_index(es: ElasticsearchClient) -> Iterator[str]:
    client = es.client()
    client.options(ignore_status=404).indices.delete(index=INDEX)
    client.indices.create(index=INDEX, mappings={"properties": {"n": {"type": "long"}}})
    yield INDEX
    client.options(ignore_status=404).indices.delete(index=INDEX)


def fast_failing() -> ElasticsearchResource:
    # The same connection and credentials as the ``es`` fixture, with fewer and shorter retries.
    return elasticsearch_resource(
        Settings.from_env(), max_retries=3, backoff_base_s=0.1, backoff_cap_s=0.2
    )


def test_a_write_block_fails_the_run_without_committing_or_dead_lettering(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    updates = [raw_update(asin=f"B0BLOCK{n:03d}") for n in range(12)]
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], json.dumps(u).encode()) for u in updates])
    job = SAMPLE_DEFS.resolve_job_def("enrichment")
    es.client().indices.put_settings(
        index=topics.PRODUCTS_INDEX, settings={"index.blocks.write": True}
    )
    try:
        failed = job.execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            resources={"elasticsearch": fast_failing()},
            raise_on_error=False,
        )
    finally:
        es.client().indices.put_settings(
            index=topics.PRODUCTS_INDEX, settings={"index.blocks.write": None}
        )
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "cluster_block_exception" in str(failure.event_specific_data.error)
    assert read_all(kafka, topics.RAW_UPDATES_DLQ) == []  # not bad data
    assert set(kafka.committed_offsets(ENRICHMENT.live_group, topics.RAW_UPDATES).values()) == {
        None
    }

    # The block lifted, the next run indexes everything once.
    assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral()).success
    assert es.count(topics.PRODUCTS_INDEX) == 12
    assert read_all(kafka, topics.RAW_UPDATES_DLQ) == []
    assert len(read_all(kafka, topics.PRODUCTS_ENRICHED)) == 12


def test_a_closed_index_is_an_infrastructure_fault(
    es: ElasticsearchClient, scratch_index: str
) -> None:
    es.client().indices.close(index=scratch_index)
    with pytest.raises(ElasticsearchUnavailableError, match="index_closed_exception"):
        fast_failing().get_client().bulk_write([BulkOp("index", scratch_index, "a", {"n": 1}, 5)])


def test_a_request_refused_as_a_whole_is_bisected_to_the_offending_document(
    es: ElasticsearchClient, scratch_index: str
) -> None:
    ops = [BulkOp("index", scratch_index, f"d{n}", {"n": n}, 10 + n) for n in range(9)]
    # A negative external version makes Elasticsearch refuse the whole request (HTTP 400).
    ops[6] = BulkOp("index", scratch_index, "d6", {"n": 6}, -1000)
    ops.append(BulkOp("index", scratch_index, "bad-field", {"n": "not a number"}, 1))
    outcome = es.bulk_write(ops)
    assert outcome.written == 8
    assert set(outcome.rejected) == {6, 9}
    assert "illegal version value" in outcome.rejected[6]
    assert "document_parsing_exception" in outcome.rejected[9] or "mapper" in outcome.rejected[9]
    es.client().indices.refresh(index=scratch_index)
    assert es.count(scratch_index) == 8


def test_a_batch_mostly_rejected_fails_the_run_instead_of_filling_the_dlq(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    """More than half of a batch of ≥ 100 would be dead-lettered: almost never the records
    (a changed producer, a wrong fee file), so the run stops and says so."""
    asin = "B0BREAKER1"  # one key: one partition, one batch
    good = json.dumps(raw_update(asin=asin)).encode()
    items = [(asin, good if n % 3 == 0 else b"{not json") for n in range(180)]
    produce(kafka, topics.RAW_UPDATES, items)
    job = SAMPLE_DEFS.resolve_job_def("enrichment")
    failed = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "120 of 180 records" in message and "more than 50%" in message
    assert read_all(kafka, topics.RAW_UPDATES_DLQ) == []
    committed = kafka.committed_offsets(ENRICHMENT.live_group, topics.RAW_UPDATES)
    assert set(committed.values()) == {None}

    # Told that these records really are bad, the run dead-letters them and goes on.
    config = {"ops": {"enrichment_stage": {"config": {"max_reject_ratio": 0.9}}}}
    assert job.execute_in_process(
        run_config=config, instance=dg.DagsterInstance.ephemeral()
    ).success
    assert len(read_all(kafka, topics.RAW_UPDATES_DLQ)) == 120
    assert len(read_all(kafka, topics.PRODUCTS_ENRICHED)) == 60
