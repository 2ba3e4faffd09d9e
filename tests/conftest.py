"""Shared fixtures. Integration tests use the real Kafka and Elasticsearch and fail loudly if
they are not running (never skip)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from arbitrage.cli.reset import reset_pipeline
from arbitrage.clients.elasticsearch import ElasticsearchClient, ElasticsearchUnavailableError
from arbitrage.clients.kafka import KafkaClient, KafkaUnavailableError
from arbitrage.settings import Settings
from tests.faults.audit import AUDIT_LINES

SECURE = os.environ.get("ARBITRAGE_SECURE", "").strip().lower() in {"1", "on", "true", "yes"}
# KAFKA_BROKERS=3 make test: the local services are a three-node Kafka cluster.
CLUSTER_BROKERS = 3
CLUSTER = int(os.environ.get("KAFKA_BROKERS", "").strip() or 1) >= CLUSTER_BROKERS


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--phase",
        choices=("all", "shared", "exclusive"),
        default="all",
        help="shared: the tests that may run beside others (in parallel workers); exclusive: "
        "the tests that stop or break a shared service, to be run alone (scripts/test.sh)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (counted as such, not skipped) the tests of the secured services outside secure
    mode, the tests of a Kafka cluster below KAFKA_BROKERS=3 (there is nothing for them to
    test), and the tests of the other --phase."""
    phase = config.getoption("--phase")
    unwanted = {name for name, wanted in (("secure", SECURE), ("cluster", CLUSTER)) if not wanted}

    def wanted(item: pytest.Item) -> bool:
        if any(item.get_closest_marker(name) is not None for name in unwanted):
            return False
        exclusive = item.get_closest_marker("exclusive") is not None
        return phase == "all" or exclusive == (phase == "exclusive")

    chosen = [item for item in items if wanted(item)]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
        items[:] = chosen


# Fault cases' audit lines (tests/faults/audit.py) as the test reports bring them: from this
# process, or from a parallel worker (xdist sends each report, user_properties included, to the
# process that prints the summary).
_AUDIT_REPORTED: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    while AUDIT_LINES:
        report.user_properties.append(("audit", AUDIT_LINES.pop(0)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _AUDIT_REPORTED.extend(value for name, value in report.user_properties if name == "audit")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _AUDIT_REPORTED:
        terminalreporter.section("fault audit: one line per case")
        for line in _AUDIT_REPORTED:
            terminalreporter.write_line(line)


START_HINT = "Start them with `make services-up` (or run the whole suite with `make test`)."


@pytest.fixture(scope="session")
def kafka() -> KafkaClient:
    resource = Settings.from_env().kafka(timeout_s=5.0)
    try:
        resource.check_reachable()
    except KafkaUnavailableError as exc:
        pytest.fail(
            f"Integration tests need the real Kafka broker: {exc}. {START_HINT}", pytrace=False
        )
    resource.ensure_topics()  # the tests' namespace (tests/__init__.py), once per session
    return resource


@pytest.fixture(scope="session")
def es() -> ElasticsearchClient:
    resource = Settings.from_env().elasticsearch()
    try:
        resource.health()
    except ElasticsearchUnavailableError as exc:
        pytest.fail(
            f"Integration tests need the real Elasticsearch: {exc}. {START_HINT}", pytrace=False
        )
    resource.ensure_indices()
    return resource


@pytest.fixture
def clean_pipeline(kafka: KafkaClient, es: ElasticsearchClient) -> Iterator[None]:
    """Empty pipeline topics, consumer groups and indices, so a test sees only its own data."""
    reset_pipeline(kafka, es, allow_anywhere=Settings.from_env().allow_reset_anywhere)
    yield
