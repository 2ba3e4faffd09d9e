"""ARBITRAGE_NAMESPACE prefixes every topic, group, transactional id and index, and nothing else;
a pipeline without one is never reset. Each case runs in a fresh interpreter: the namespace is
read once, when arbitrage/domain/topics.py is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from arbitrage.domain.topics import NamespaceError, namespace_prefix

REPO = Path(__file__).resolve().parents[2]

NAMES = """
import json
from assets import keys
from assets.checks import DLQ_READER_GROUP
from arbitrage.domain import access, topics
from arbitrage.domain.stage_specs import ENRICHMENT
from arbitrage.engine.kafka_transactions import transactional_id
print(json.dumps({
    "topics": [spec.name for spec in topics.TOPICS],
    "indices": [topics.PRODUCTS_INDEX, topics.ALERTS_INDEX, topics.REDRIVE_LEDGER_INDEX,
                topics.RETENTION_LOSS_INDEX],
    "groups": [*ENRICHMENT.groups, DLQ_READER_GROUP],
    "txn": transactional_id(ENRICHMENT.live_group, ENRICHMENT.source_topic, 1),
    "asset_keys": [keys.RAW_UPDATES_KEY.to_user_string(), keys.ES_ALERTS_KEY.to_user_string()],
    "grants": [[g.kind, g.name, g.prefixed] for a in access.accounts() for g in a.kafka],
    "es_role": [name for a in access.accounts() for grant in a.es_indices for name in grant.names],
}))
"""


def names_in(namespace: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "ARBITRAGE_NAMESPACE"}
    if namespace is not None:
        env["ARBITRAGE_NAMESPACE"] = namespace
    done = subprocess.run(
        [sys.executable, "-c", NAMES], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_without_a_namespace_the_names_are_the_plain_ones() -> None:
    names = names_in(None)
    assert names["topics"] == [
        "raw.keepa_updates",
        "products.enriched",
        "arbitrage.alerts",
        "raw.keepa_updates.dlq",
        "products.enriched.dlq",
        "arbitrage.alerts.dlq",
    ]
    assert names["indices"] == ["products", "arbitrage-alerts", "dlq-redrives", "retention-losses"]
    assert names["groups"] == ["enrichment", "replay.enrichment", "arbitrage-checks"]
    assert names["txn"] == "enrichment:raw.keepa_updates:1"
    assert ["topic", "raw.keepa_updates", False] in names["grants"]


def test_a_namespace_prefixes_every_name_but_not_the_asset_keys() -> None:
    names = names_in("staging")
    plain = names_in(None)
    for kind in ("topics", "indices", "groups"):
        assert names[kind] == [f"staging.{name}" for name in plain[kind]]
    assert names["txn"] == "staging.enrichment:staging.raw.keepa_updates:1"
    assert (
        names["asset_keys"]
        == plain["asset_keys"]
        == [
            "kafka/raw_keepa_updates",
            "elasticsearch/arbitrage_alerts",
        ]
    )
    # Every grant names a resource of the namespace (the cluster's idempotent writes aside).
    named = [grant for grant in names["grants"] if grant[0] != "cluster"]
    assert named and all(name.startswith("staging.") for _kind, name, _prefixed in named)
    assert ["topic", "staging.raw.keepa_updates", False] in named
    assert names["es_role"] and all(name.startswith("staging.") for name in names["es_role"])


@pytest.mark.parametrize("bad", ["Test", "a.b", "-x", "x" * 41, "caf\u00e9", "a b"])
def test_a_bad_namespace_is_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(NamespaceError, match=r"ARBITRAGE_NAMESPACE=.*1-40 characters"):
        namespace_prefix(bad)
    env = {**os.environ, "ARBITRAGE_NAMESPACE": bad}
    done = subprocess.run(
        [sys.executable, "-c", "import arbitrage.domain.topics"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "is not a namespace" in done.stderr


def test_good_namespaces() -> None:
    assert namespace_prefix("") == ""
    assert namespace_prefix(" test-gw1 ") == "test-gw1."
    assert namespace_prefix("0_staging") == "0_staging."


def test_reset_refuses_the_pipelines_own_names() -> None:
    script = (
        "from arbitrage.cli.reset import check_reset_allowed\n"
        "from arbitrage.clients.elasticsearch import ElasticsearchClient\n"
        "from arbitrage.clients.kafka import KafkaClient\n"
        "check_reset_allowed(KafkaClient(bootstrap_servers='127.0.0.1:9092'),"
        " ElasticsearchClient(url='http://127.0.0.1:9200'), anywhere=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARBITRAGE_NAMESPACE"}
    refused = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert refused.returncode != 0
    assert "refusing to delete the pipeline's own topics" in refused.stderr
    allowed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**env, "ARBITRAGE_NAMESPACE": "test"},
        capture_output=True,
        text=True,
    )
    assert allowed.returncode == 0, allowed.stderr
