"""A client given every node's URL goes on when one of them does not answer: refused (a node
down) or silent (a node frozen), against the real Elasticsearch behind the other URL."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from arbitrage.clients.elasticsearch import BulkOp, ElasticsearchClient, elasticsearch_hosts
from arbitrage.domain import topics
from arbitrage.settings import Settings

pytestmark = pytest.mark.integration


def _scheme() -> str:
    return urlsplit(elasticsearch_hosts(Settings.from_env().elasticsearch_url)[0]).scheme


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never answers: a node frozen (SIGSTOP) looks so."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed on return: connections are refused


def _with_first(url: str, **overrides: object) -> ElasticsearchClient:
    settings = Settings.from_env()
    return settings.elasticsearch(url=f"{url},{settings.elasticsearch_url}", **overrides)


@pytest.mark.usefixtures("clean_pipeline")
def test_a_node_that_refuses_is_passed_over(es: ElasticsearchClient) -> None:
    dead = _with_first(f"{_scheme()}://127.0.0.1:{_closed_port()}")
    for _ in range(5):  # whichever node the pool picks first
        assert dead.health()["status"] in ("green", "yellow")
    op = BulkOp("index", topics.PRODUCTS_INDEX, "B0NODES001", {"asin": "B0NODES001"}, 1)
    assert dead.bulk_write([op]).written == 1
    assert dead.count(topics.PRODUCTS_INDEX) == 1


@pytest.mark.usefixtures("clean_pipeline")
def test_a_node_that_never_answers_costs_one_timeout(
    es: ElasticsearchClient, silent_port: int
) -> None:
    silent = _with_first(f"{_scheme()}://127.0.0.1:{silent_port}", request_timeout_s=2.0)
    op = BulkOp("index", topics.PRODUCTS_INDEX, "B0NODES002", {"asin": "B0NODES002"}, 1)
    started = time.monotonic()
    # One of them meets the silent node first, times out, and is sent to the other node.
    outcomes = [silent.bulk_write([op]) for _ in range(3)]
    assert [(o.written, o.unchanged) for o in outcomes] == [(1, 0), (0, 1), (0, 1)]
    # The silent node is then left alone for a while (marked dead): one timeout, not one each.
    assert time.monotonic() - started < 2 * 2.0 + 10
    assert silent.count(topics.PRODUCTS_INDEX) == 1
