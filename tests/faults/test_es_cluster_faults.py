"""An Elasticsearch cluster of three nodes loses one under a live enrichment run.

Three cases on a cluster of three nodes (each master-eligible and a data node, the indices with
one replica): a data node holding a copy of the products index (not the elected master)
SIGKILLed mid-bulk and restarted; the elected master SIGKILLed mid-bulk and restarted; the node
holding the products primary frozen (SIGSTOP) 30 s, then thawed. The run (a real `dagster job
execute` process whose ELASTICSEARCH_URL lists every node) carries on, or fails without
committing and a rerun completes; the cluster is green again afterwards; the opportunities page
answers throughout with the alerts it had; the audit finds every source record once.

The cluster is the suite's Elasticsearch when that is one (ES_NODES=3), else three nodes this
module starts in DEVSERVICES_HOME/faults-es-cluster (where the user Elasticsearch runs as can
reach it; its data deleted first, so each run bootstraps a new cluster) on free ports below
32768, in the suite's mode (plain or secure), and stops at the end: `make faults` runs these
cases whatever ES_NODES is.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from arbitrage.cli.reset import reset_pipeline
from arbitrage.clients.elasticsearch import BulkOp, ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.validation import validate_raw_update
from arbitrage.domain.rules_config import load_rules_config
from arbitrage.domain.transforms import opportunity_events
from arbitrage.settings import Settings
from arbitrage.web.app import create_app
from arbitrage.web.server import serving
from devservices import secure, service
from devservices.elasticsearch import Elasticsearch as EsNode
from devservices.elasticsearch import elasticsearch_nodes
from devservices.settings import Settings as DevSettings
from tests.faults.audit import audit_enrichment, stage_process
from tests.faults.test_service_faults import why_it_ended
from tests.faults.test_two_runs import wait_for_first_commit
from tests.integration.kafka_io import produce
from tests.integration.test_stages import good_updates

# They kill nodes of the suite's cluster when it is one: alone, never beside a parallel worker.
pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.exclusive]
NODES = 3
RECORDS = 6000
FROZEN_S = 30
# The alerts on the page while the nodes die: the opportunities of these updates.
PAGE_UPDATES = 12


@dataclass
class Cluster:
    nodes: list[EsNode]
    # A new resource (its own client) on every call: the page and the test each get one.
    resource: Callable[[], ElasticsearchClient]
    # Over the environment of the stage processes: where this cluster is, as whom.
    env: dict[str, str] = field(default_factory=dict)

    def node(self, name: str) -> EsNode:
        found = [node for node in self.nodes if node.name == name]
        assert found, f"no local node {name!r} among {[node.name for node in self.nodes]}"
        return found[0]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ranges() -> tuple[int, int]:
    """An HTTP and a transport base port, each with NODES free ports from it, below 32768."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(20000, 32000 - 100 - NODES)
        ports = [base + offset + node for offset in (0, 100) for node in range(NODES)]
        if all(_port_free(port) for port in ports):
            return base, base + 100
    raise AssertionError("no free port ranges for a three-node Elasticsearch below 32768")


def _own_cluster(home: Path) -> tuple[DevSettings, list[EsNode]]:
    for data in home.glob("elasticsearch-*/data"):
        shutil.rmtree(data)
    http, transport = _free_ranges()
    env = {
        **os.environ,
        "DEVSERVICES_HOME": str(home),
        "ES_NODES": str(NODES),
        "ES_PORT": str(http),
        "ES_TRANSPORT_PORT": str(transport),
    }
    settings = DevSettings.from_env(env)
    return settings, elasticsearch_nodes(settings)


def _stop_all(nodes: list[EsNode]) -> None:
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        list(pool.map(service.down, nodes))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    suite = DevSettings.from_env()
    if suite.es_nodes >= NODES:
        yield Cluster(elasticsearch_nodes(suite), lambda: Settings.from_env().elasticsearch())
        return
    settings, nodes = _own_cluster(suite.state_dir / "faults-es-cluster")
    try:
        service.up(nodes, timeout=max(settings.timeout, 300))
        env = {"ELASTICSEARCH_URL": settings.elasticsearch_urls}
        if settings.secure:
            env = {
                name: value
                for name, value in secure.client_env(settings).items()
                if name.startswith("ELASTICSEARCH_")
            }
        fields = {
            "url": env["ELASTICSEARCH_URL"],
            "username": env.get("ELASTICSEARCH_USERNAME", ""),
            "password": env.get("ELASTICSEARCH_PASSWORD"),
            "ca_certs": env.get("ELASTICSEARCH_CA_CERTS", ""),
        }
        yield Cluster(nodes, lambda: ElasticsearchClient(**fields), env)
    finally:
        _stop_all(nodes)


def wait_green(es: ElasticsearchClient, timeout_s: int = 300) -> float:
    """Seconds until every primary and replica is assigned and started."""
    started = time.monotonic()
    health = es.client().options(ignore_status=408, request_timeout=timeout_s + 30)
    found = health.cluster.health(wait_for_status="green", timeout=f"{timeout_s}s")
    assert found["status"] == "green", dict(found)
    return time.monotonic() - started


def replicas(es: ElasticsearchClient, index: str) -> int:
    settings = es.client().indices.get_settings(index=index)[index]["settings"]["index"]
    return int(settings["number_of_replicas"])


def seed_alerts(es: ElasticsearchClient) -> int:
    """Alert states as the arbitrage stage indexes them (the domain functions' events), for
    the page to serve; the number of open ones."""
    config = load_fee_config()
    rules = load_rules_config(Settings.from_env().rules_file)
    products = [enrich(validate_raw_update(u), config) for u in good_updates(PAGE_UPDATES)]
    events = opportunity_events(products, config, rules, "2026-12-06T06:00:00.000Z").events
    ops = [BulkOp("index", topics.ALERTS_INDEX, e["opportunity_id"], e) for e in events]
    assert es.bulk_write(ops).written == len(ops) > 0
    es.refresh(topics.ALERTS_INDEX)
    return len(ops)


def primary_node(es: ElasticsearchClient, index: str) -> str:
    rows = es.client().cat.shards(index=index, format="json")
    return next(row["node"] for row in rows if row["prirep"] == "p" and row["state"] == "STARTED")


def copy_nodes(es: ElasticsearchClient, index: str) -> list[str]:
    rows = es.client().cat.shards(index=index, format="json")
    return [row["node"] for row in rows if row["state"] == "STARTED"]


def master_node(es: ElasticsearchClient) -> str:
    return str(es.client().cat.master(format="json")[0]["node"])


@dataclass
class Answer:
    at_s: float
    path: str
    status: int
    took_s: float
    open: int | None = None


class PagePoller:
    """Asks the page for its list and its JSON, one after the other, until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="page-poller", daemon=True)

    def ask(self, path: str) -> Answer:
        began = time.monotonic()
        opened: int | None = None
        try:
            with urllib.request.urlopen(self.url + path, timeout=120) as response:
                status, body = response.status, response.read()
            if path.startswith("/api/"):
                opened = int(json.loads(body)["open"])
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError):
            status = 0  # no answer at all
        answer = Answer(began - self._started, path, status, time.monotonic() - began, opened)
        self.answers.append(answer)
        return answer

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.ask("/")
            self.ask("/api/opportunities")
            self._stop.wait(0.5)

    def __enter__(self) -> PagePoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=180)


def rerun_until_done(env: dict[str, str], attempts: int = 4) -> None:
    """As the sensor would: a rerun, a few times, until one succeeds."""
    output = ""
    for _ in range(attempts):
        process = stage_process("enrichment", batch_size=500, extra_env=env)
        output, _ = process.communicate(timeout=600)
        if process.returncode == 0:
            return
        time.sleep(5)
    raise AssertionError(f"no rerun succeeded in {attempts} attempts: {why_it_ended(output)}")


Fault = Callable[[EsNode], None]


def kill_and_restart(node: EsNode) -> None:
    """SIGKILL to the node's process group (the launcher and the server JVM), a few seconds
    without it, then started again; `up` returns once it is back in the cluster."""
    _, pid = node.check_pid(cleanup=False)
    assert pid is not None, f"{node.name} is not running"
    os.killpg(pid, signal.SIGKILL)
    time.sleep(5)
    service.up([node], timeout=300)


def freeze(node: EsNode) -> None:
    _, pid = node.check_pid(cleanup=False)
    assert pid is not None, f"{node.name} is not running"
    os.killpg(pid, signal.SIGSTOP)
    try:
        time.sleep(FROZEN_S)
    finally:
        os.killpg(pid, signal.SIGCONT)


def break_a_node_mid_bulk(
    kafka: KafkaClient,
    cluster: Cluster,
    case: str,
    victim_of: Callable[[ElasticsearchClient], str],
    fault: Fault,
) -> None:
    es = cluster.resource()
    reset_pipeline(kafka, es, allow_anywhere=Settings.from_env().allow_reset_anywhere)
    wait_green(es)
    for index in (topics.PRODUCTS_INDEX, topics.ALERTS_INDEX):
        assert replicas(es, index) == 1, f"{index} has no replica on a {NODES}-node cluster"
    seeded = seed_alerts(es)
    updates = good_updates(RECORDS)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in updates])

    with serving(create_app(cluster.resource(), poll_s=5.0)) as url, PagePoller(url) as page:
        run = stage_process("enrichment", batch_size=50, extra_env=cluster.env)
        try:
            committed = wait_for_first_commit(kafka)
            victim = cluster.node(victim_of(es))
            assert run.poll() is None, "the run finished before the fault"
            print(f"{case}: {victim.name} at committed offsets {committed}")
            broken_at = time.monotonic()
            fault(victim)
            output, _ = run.communicate(timeout=600)
            ran_s = time.monotonic() - broken_at
        finally:
            if run.poll() is None:
                run.kill()
        carried_on = run.returncode == 0
        ended = "carried on" if carried_on else f"failed: {why_it_ended(output or '')}"
        print(f"{case}: the live run ended {ran_s:.0f}s after the fault ({ended})")
        if not carried_on:
            rerun_until_done(cluster.env)
        green_s = wait_green(es)
        print(f"{case}: green again {green_s:.0f}s after the runs")
        page.ask("/")
        page.ask("/api/opportunities")

    # The page answered throughout, with every alert it had.
    wrong = [a for a in page.answers if a.status != 200 or a.open not in (None, seeded)]
    slowest = max(page.answers, key=lambda a: a.took_s)
    print(
        f"{case}: page asked {len(page.answers)} times, slowest answer {slowest.took_s:.1f}s "
        f"({slowest.path} at {slowest.at_s:.0f}s)"
    )
    assert not wrong, wrong[:5]
    assert page.answers[-1].open == seeded

    outcome = "the run carried on" if carried_on else "the run failed, its rerun completed"
    audit = audit_enrichment(f"{case} ({outcome})", kafka, es, [u["asin"] for u in updates])
    assert audit.source_records == RECORDS
    audit.assert_exactly_once()


def a_data_node(es: ElasticsearchClient) -> str:
    """A node with a copy of the products index that is not the elected master: the primary's
    when it can be, else the replica's."""
    master = master_node(es)
    primary = primary_node(es, topics.PRODUCTS_INDEX)
    holders = [primary] + [n for n in copy_nodes(es, topics.PRODUCTS_INDEX) if n != primary]
    return next(node for node in holders if node != master)


@pytest.mark.timeout(1800)
def test_a_data_node_killed_mid_bulk_and_restarted(kafka: KafkaClient, cluster: Cluster) -> None:
    break_a_node_mid_bulk(
        kafka,
        cluster,
        f"enrichment: Elasticsearch data node SIGKILLed mid-bulk on a {NODES}-node cluster, "
        "restarted",
        a_data_node,
        kill_and_restart,
    )


@pytest.mark.timeout(1800)
def test_the_elected_master_killed_mid_bulk_and_restarted(
    kafka: KafkaClient, cluster: Cluster
) -> None:
    break_a_node_mid_bulk(
        kafka,
        cluster,
        f"enrichment: Elasticsearch elected master SIGKILLed mid-bulk on a {NODES}-node "
        "cluster, restarted",
        master_node,
        kill_and_restart,
    )


@pytest.mark.timeout(1800)
def test_the_primary_node_frozen_30_s_mid_bulk(kafka: KafkaClient, cluster: Cluster) -> None:
    break_a_node_mid_bulk(
        kafka,
        cluster,
        f"enrichment: Elasticsearch node with the products primary SIGSTOPped {FROZEN_S} s "
        f"mid-bulk on a {NODES}-node cluster",
        lambda es: primary_node(es, topics.PRODUCTS_INDEX),
        freeze,
    )
