"""Offsets that do not fit the log are loud: ahead of the log stops the run with the recovery
command; behind the low watermark (retention) goes on and says how much was lost."""

from __future__ import annotations

import dagster as dg
import pytest
from confluent_kafka import TopicPartition

from arbitrage.cli.main import main as arbitrage_cli
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.retention_losses import open_losses
from arbitrage.domain import topics
from arbitrage.domain.stage_specs import ENRICHMENT
from tests.dagster.helpers import produce_updates, temp_instance
from tests.dagster.test_checks import LAG_RAW, run_checks
from tests.definitions import SAMPLE_DEFS
from tests.factories import raw_update

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_pipeline")]
GROUP, TOPIC = ENRICHMENT.live_group, topics.RAW_UPDATES


def run_enrichment() -> dg.ExecuteInProcessResult:
    return SAMPLE_DEFS.resolve_job_def("enrichment").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def reset_to_earliest(*extra: str) -> int:
    """`arbitrage offsets reset` of the enrichment group to the earliest offsets."""
    return arbitrage_cli(
        ["offsets", "reset", "--group", GROUP, "--topic", TOPIC, "--to", "earliest", *extra]
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return str(failure.event_specific_data.error)


def test_a_committed_offset_past_the_log_stops_the_run_until_reset(
    kafka: KafkaClient, es: ElasticsearchClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: the group 1 000 past the end of partition 0, then 5 new records there.
    kafka.commit(GROUP, TOPIC, {0: 1000})
    updates = [raw_update(asin=f"B0AHEAD{n:03d}") for n in range(5)]
    produce_updates(kafka, TOPIC, updates, [0] * 5)

    failed = run_enrichment()
    assert not failed.success
    text = failure_text(failed)
    assert f"group {GROUP}: {TOPIC}[0] committed 1000 > high watermark 5" in text
    assert f"arbitrage offsets reset --group {GROUP} --topic {TOPIC}" in text
    assert es.count(topics.PRODUCTS_INDEX) == 0
    # The lag is 0, yet the lag check is red, and says why.
    checks = SAMPLE_DEFS.resolve_job_def("pipeline_checks").execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    (lag_check,) = [
        e
        for e in checks.get_asset_check_evaluations()
        if e.check_name == "consumer_lag_under_threshold"
        and e.asset_key.to_user_string() == "kafka/raw_keepa_updates"
    ]
    assert not lag_check.passed
    assert lag_check.metadata["lag"].value == 0
    assert "committed past the end of the log on partition(s) [0]" in lag_check.description

    # The recovery the sentence names, from the CLI.
    assert reset_to_earliest("--dry-run") == 0
    assert kafka.committed_offsets(GROUP, TOPIC)[0] == 1000
    assert reset_to_earliest("--partition", "0") == 0
    assert "1000" in capsys.readouterr().out
    assert kafka.committed_offsets(GROUP, TOPIC)[0] == 0
    assert run_enrichment().success
    assert es.count(topics.PRODUCTS_INDEX) == 5


def test_records_lost_to_retention_are_counted_and_the_run_goes_on(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    updates = [raw_update(asin=f"B0RETAIN{n:02d}") for n in range(10)]
    produce_updates(kafka, TOPIC, updates, [1] * 10)
    kafka.commit(GROUP, TOPIC, {1: 2})
    # What retention does, for real: the broker deletes partition 1 below offset 6.
    futures = kafka.admin().delete_records([TopicPartition(TOPIC, 1, 6)])
    for future in futures.values():
        future.result()
    assert kafka.watermarks(TOPIC)[1] == (6, 10)

    result = run_enrichment()
    assert result.success
    observations = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    (lost,) = [o for o in observations if "records_lost_to_retention" in o.metadata]
    assert lost.metadata["records_lost_to_retention"].value == 4
    assert lost.asset_key.to_user_string() == "kafka/raw_keepa_updates"
    assert es.count(topics.PRODUCTS_INDEX) == 4
    assert kafka.committed_offsets(GROUP, TOPIC)[1] == 10

    # Lag 0 now, but the lag check stays red until a person acknowledges the loss.
    with temp_instance() as instance:
        red = run_checks(instance)[LAG_RAW]
        assert not red.passed and red.metadata["lag"].value == 0
        assert "4 records lost to retention not yet acknowledged" in str(red.description)
        assert red.metadata["unacknowledged_retention_losses"].value == [
            {"partition": 1, "from_offset": 2, "to_offset": 6, "records": 4}
        ]
        acknowledge = ["offsets", "acknowledge-loss", "--group", GROUP, "--topic", TOPIC]
        assert arbitrage_cli(acknowledge) == 0
        assert open_losses(es, GROUP, TOPIC) == []
        assert run_checks(instance)[LAG_RAW].passed
    # A rerun meets no loss and records none.
    assert run_enrichment().success
    assert open_losses(es, GROUP, TOPIC) == []
