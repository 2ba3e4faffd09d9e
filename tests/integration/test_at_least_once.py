"""At-least-once: with Elasticsearch stopped a run fails without committing; a rerun catches up.

This test really stops the local Elasticsearch (python -m devservices) and starts it again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.stage_specs import ENRICHMENT
from tests.integration.kafka_io import produce, read_all
from tests.integration.test_stages import committed_equals_high_watermark, good_updates, run_job

# It stops the shared Elasticsearch: alone, never beside a parallel worker's tests; and with
# the slow tests (make test-slow, CI), as the half minute alone is half a minute of make test.
# make test keeps infrastructure-fault cases that need no stop: test_infrastructure_is_not_bad_data.
pytestmark = [pytest.mark.integration, pytest.mark.exclusive, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def devservices(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "devservices", *args], cwd=REPO, check=True, timeout=300)


@pytest.mark.usefixtures("clean_pipeline")
def test_a_run_without_elasticsearch_commits_nothing_and_the_rerun_catches_up(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    updates = good_updates(20)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in updates])
    devservices("down", "elasticsearch")
    try:
        failed = run_job("enrichment")
        assert not failed.success
        errors = [
            event.step_failure_data.error.to_string()
            for event in failed.all_events
            if event.is_step_failure and event.step_failure_data.error
        ]
        assert any("Elasticsearch" in message for message in errors), errors
        lags = kafka.lag(ENRICHMENT.live_group, topics.RAW_UPDATES)
        assert all(lag.committed is None for lag in lags)
        assert sum(lag.lag for lag in lags) == 20
        assert read_all(kafka, topics.PRODUCTS_ENRICHED) == []
    finally:
        devservices("up", "elasticsearch")

    assert run_job("enrichment").success
    assert es.count(topics.PRODUCTS_INDEX) == 20
    assert sorted(m.key for m in read_all(kafka, topics.PRODUCTS_ENRICHED)) == sorted(
        u["asin"] for u in updates
    )
    committed_equals_high_watermark(kafka, ENRICHMENT.live_group, topics.RAW_UPDATES)
