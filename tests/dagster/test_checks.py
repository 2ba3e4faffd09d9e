"""The asset checks pass and fail on real topics, run by their own job as the schedule runs it."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from assets.keys import (
    ARBITRAGE_ALERTS_DLQ_KEY,
    ARBITRAGE_ALERTS_KEY,
    PRODUCTS_ENRICHED_DLQ_KEY,
    PRODUCTS_ENRICHED_KEY,
    RAW_UPDATES_DLQ_KEY,
    RAW_UPDATES_KEY,
)
from pipelines.definitions import defs
from tests.dagster.helpers import opportunity, produce_at, produce_updates, temp_instance

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_pipeline")]

LAG_RAW = dg.AssetCheckKey(RAW_UPDATES_KEY, "consumer_lag_under_threshold")
LAG_ENRICHED = dg.AssetCheckKey(PRODUCTS_ENRICHED_KEY, "consumer_lag_under_threshold")
DLQ_RAW = dg.AssetCheckKey(RAW_UPDATES_DLQ_KEY, "dlq_not_growing")
DLQ_ENRICHED = dg.AssetCheckKey(PRODUCTS_ENRICHED_DLQ_KEY, "dlq_not_growing")
FRESH = dg.AssetCheckKey(RAW_UPDATES_KEY, "newest_message_fresh")
LAG_ALERTS = dg.AssetCheckKey(ARBITRAGE_ALERTS_KEY, "consumer_lag_under_threshold")
DLQ_ALERTS = dg.AssetCheckKey(ARBITRAGE_ALERTS_DLQ_KEY, "dlq_not_growing")


def run_checks(
    instance: dg.DagsterInstance, run_config: dict | None = None
) -> dict[dg.AssetCheckKey, dg.AssetCheckEvaluation]:
    result = defs.resolve_job_def("pipeline_checks").execute_in_process(
        instance=instance, run_config=run_config or {}
    )
    assert result.success  # a failed check is a result, not a failed run
    evaluations = {
        dg.AssetCheckKey(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()
    }
    assert set(evaluations) == {
        LAG_RAW,
        LAG_ENRICHED,
        LAG_ALERTS,
        DLQ_RAW,
        DLQ_ENRICHED,
        DLQ_ALERTS,
        FRESH,
    }
    return evaluations


def test_checks_on_lag_dlq_growth_and_freshness(kafka: KafkaClient) -> None:
    stale = datetime.now(UTC) - timedelta(hours=3)
    produce_updates(kafka, topics.RAW_UPDATES, [opportunity("B0CK000000", stale)], [0], [stale])

    with temp_instance() as instance:
        first = run_checks(instance)
        assert not first[FRESH].passed
        assert first[FRESH].metadata["age_minutes"].value > 170
        assert first[FRESH].metadata["threshold_max_age_minutes"].value == 30
        assert first[LAG_RAW].passed and first[LAG_RAW].metadata["lag"].value == 1
        assert first[DLQ_RAW].passed and "baseline" in str(first[DLQ_RAW].description)

        # Fresh updates and two poison records: fresh again, and over a lag threshold of 2.
        fresh = [opportunity(f"B0CK00000{n}", datetime.now(UTC)) for n in range(1, 4)]
        produce_updates(kafka, topics.RAW_UPDATES, fresh, [0, 1, 2])
        produce_at(
            kafka,
            topics.RAW_UPDATES,
            [("B0CKBAD001", b"{not json", 1, None), ("B0CKBAD002", b'{"asin": 7}', 2, None)],
        )
        lag_check_op = defs.get_asset_checks_def(LAG_RAW).op.name
        tight = {"ops": {lag_check_op: {"config": {"max_lag": 2}}}}
        second = run_checks(instance, tight)
        assert second[FRESH].passed
        assert not second[LAG_RAW].passed
        assert second[LAG_RAW].metadata["lag"].value == 6
        assert second[LAG_RAW].metadata["threshold_max_lag"].value == 2
        assert second[LAG_RAW].severity == dg.AssetCheckSeverity.WARN

        # The enrichment run sends the poison records to the DLQ: the DLQ grew since the last
        # evaluation, and the check shows why.
        assert defs.resolve_job_def("enrichment").execute_in_process(instance=instance).success
        third = run_checks(instance)
        assert third[LAG_RAW].passed and third[LAG_RAW].metadata["lag"].value == 0
        assert not third[DLQ_RAW].passed
        assert third[DLQ_RAW].metadata["new_messages"].value == 2
        reasons = third[DLQ_RAW].metadata["newest_reasons"].value
        assert "B0CKBAD001" in reasons and "not valid JSON" in reasons
        assert third[DLQ_ENRICHED].passed

        # Nothing new since: the DLQ check passes again (its baseline is the last evaluation).
        fourth = run_checks(instance)
        assert fourth[DLQ_RAW].passed
        assert fourth[DLQ_RAW].metadata["new_messages"].value == 0
        assert fourth[DLQ_RAW].metadata["messages_retained"].value == 2
