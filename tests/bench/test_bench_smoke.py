"""Every benchmark at tiny sizes against the real services, so the suite cannot rot.

No timing is asserted (CI machines vary); only that each benchmark runs end to end and reports
sensible rows. Inputs are generated into a temporary cache, not bench/.cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from bench import capture, data, enrichment, fee_model, keepa_pull, latency, memory
from bench.__main__ import main as bench_main
from bench.common import Row, Services, markdown_table

# The benchmarks' smoke runs take half a minute: make test-slow (CI runs it).
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("bench-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(data.CACHE_ENV, str(cache))
        yield cache


@pytest.fixture
def services(kafka: KafkaClient, es: ElasticsearchClient, clean_pipeline: None) -> Services:
    return Services(kafka, es)


def check(rows: list[Row], expected: int) -> None:
    assert len(rows) == expected, rows
    for row in rows:
        assert row.met is None  # tiny runs judge no targets
        if row.seconds is not None:
            assert row.seconds > 0
    assert markdown_table(rows).count("\n") == expected + 1


def test_fee_model(services: Services) -> None:
    rows = fee_model.run(n=1_200, baseline_n=200, judge=False)
    # baseline, v1 (matrix, routes, both), v2 (the same three), v1 and v2 with the rules
    check(rows, 4 + 3 + 2)
    totals = [row for row in rows if row.measured.endswith("market_matrix + evaluate_routes")]
    totals += [row for row in rows if "(fees_v2.toml)" in row.measured]
    assert len(totals) == 2 and all(row.ratio and row.ratio > 0 for row in totals)
    assert len([row for row in rows if "screen_routes" in row.measured]) == 2


def test_enrichment(services: Services) -> None:
    rows = enrichment.run(services, n=300, baseline_n=20, batch_size=100, judge=False, repeats=1)
    check(rows, 5)
    assert all(row.records_per_s for row in rows)


def test_memory(services: Services) -> None:
    rows = memory.run(services, n=200, backlog=600, batch_size=100, judge=False)
    check(rows, 2)
    assert all(row.peak_rss_mib and row.peak_rss_mib > 50 for row in rows)
    assert rows[0].n == rows[1].n == 200


def test_keepa_pull(services: Services) -> None:
    rows = keepa_pull.run(services, n=150)
    check(rows, 3 + len(keepa_pull.PLANS_TOKENS_PER_MINUTE))
    assert rows[2].n == 150  # every product has data in some market


@pytest.mark.slow  # three Dagster processes and real sensor-launched runs: minutes, not seconds
def test_capture() -> None:
    scenario = capture.Scenario(size=1_000, rate=30, hours=0.5, truth_every=10)
    rows = capture.run(scenario, judge=False)
    check(rows, 4)
    planner, round_robin = rows[1].measured, rows[2].measured
    assert "planner decision over a registry of 100,000 ASINs" in rows[3].measured
    # Every token granted is spent, on both sides (the tiny run's balance never idles).
    assert "tokens 900 of 900 granted" in round_robin and "of 900 granted" in planner


def test_latency(services: Services) -> None:
    rows = latency.run(services, rate=2.0, seconds=5.0, cold=1, lead_in_s=2.0, idle_s=3.0)
    measured = {row.measured for row in rows}
    assert "latency p50: produced → alert on arbitrage.alerts (warm)" in measured
    assert "latency p50: produced → alert on arbitrage.alerts (cold: no live run)" in measured
    assert "stage runs live per topic-partition during the warm window" in measured
    assert all(row.n for row in rows)


def test_cli_prints_one_table(services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--quick", "--only", "fee_model", "--no-write"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4 + 3 + 2
