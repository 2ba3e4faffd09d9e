"""Names and settings of the pipeline's Kafka topics and Elasticsearch indices.

Which stage reads and writes which of them (and under which consumer groups) is stated in
pipelines/stage_specs.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# ARBITRAGE_NAMESPACE prefixes every topic, consumer group (so every transactional id) and index
# the pipeline, its tools, tests and benchmarks use: "test" makes "test.raw.keepa_updates",
# "test.products". Empty (the default) keeps the plain names. Tests and benchmarks work in their
# own namespace, so they never reset or consume a running pipeline's data. Read once at import:
# every process of one deployment shares its environment.
NAMESPACE_VARIABLE = "ARBITRAGE_NAMESPACE"
# Lower case for Elasticsearch; no dot, so the namespace is always the first dotted segment.
_NAMESPACE_RULE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class NamespaceError(ValueError):
    """ARBITRAGE_NAMESPACE is not a name Kafka and Elasticsearch both accept."""


def namespace_prefix(namespace: str) -> str:
    """``"test"`` → ``"test."``; ``""`` → ``""``; anything else is refused with the rule."""
    namespace = namespace.strip()
    if not namespace:
        return ""
    if not _NAMESPACE_RULE.fullmatch(namespace):
        raise NamespaceError(
            f"{NAMESPACE_VARIABLE}={namespace!r} is not a namespace: use 1-40 characters of "
            "a-z, 0-9, '-' and '_', starting with a letter or digit (e.g. 'test', 'staging')"
        )
    return namespace + "."


NAMESPACE = os.environ.get(NAMESPACE_VARIABLE, "").strip()
NAMESPACE_PREFIX = namespace_prefix(NAMESPACE)


def named(name: str) -> str:
    """A topic, group or index name in this process's namespace."""
    return NAMESPACE_PREFIX + name


def plain_name(name: str) -> str:
    """The name without this process's namespace (asset keys and metric labels stay stable)."""
    return name.removeprefix(NAMESPACE_PREFIX)


RAW_UPDATES = named("raw.keepa_updates")
PRODUCTS_ENRICHED = named("products.enriched")
ARBITRAGE_ALERTS = named("arbitrage.alerts")
RAW_UPDATES_DLQ = named("raw.keepa_updates.dlq")
PRODUCTS_ENRICHED_DLQ = named("products.enriched.dlq")

PRODUCTS_INDEX = named("products")
ALERTS_INDEX = named("arbitrage-alerts")
# The operator's indices: the DLQ redrive ledger (cli/redrive.py), acknowledged retention losses
# (resources/retention_losses.py).
REDRIVE_LEDGER_INDEX = named("dlq-redrives")
RETENTION_LOSS_INDEX = named("retention-losses")
# Groups of the operator CLI, the checks, the counters, the tests and the benchmarks all start
# with this (``arbitrage-cli-tail``, ``arbitrage-checks``, ``arbitrage-bench.…``), as do the
# tests' and benchmarks' own indices.
TOOL_PREFIX = named("arbitrage-")


def tool_name(name: str) -> str:
    """``"checks"`` → ``"<namespace.>arbitrage-checks"``: a tool's group or a scratch index."""
    return TOOL_PREFIX + name


PARTITIONS = 3
RETENTION_MS = 7 * 24 * 60 * 60 * 1000
# The broker's limit per message (topic max.message.bytes), far above the largest record a stage
# accepts: an oversize record still reaches the DLQ whole (base64 adds a third).
TOPIC_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str

    def config(self) -> dict[str, str]:
        return {
            "retention.ms": str(RETENTION_MS),
            "max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES),
            "cleanup.policy": "delete",
            # Producer time (our producers stamp at produce): replays find an hour's window with
            # offsets_for_times, and tests can write messages into past hours.
            "message.timestamp.type": "CreateTime",
        }


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(RAW_UPDATES, "One raw update per ASIN per Keepa pull, keyed by ASIN."),
    TopicSpec(PRODUCTS_ENRICHED, "Validated, enriched products keyed by ASIN."),
    TopicSpec(ARBITRAGE_ALERTS, "Profitable buy→sell routes after fees, keyed by ASIN."),
    TopicSpec(RAW_UPDATES_DLQ, "Raw updates the enrichment stage could not use, with the reason."),
    TopicSpec(
        PRODUCTS_ENRICHED_DLQ,
        "Enriched products the arbitrage stage could not use, with the reason.",
    ),
)
TOPIC_BY_NAME = {spec.name: spec for spec in TOPICS}
