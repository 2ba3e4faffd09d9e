"""Names and settings of the pipeline's Kafka topics and Elasticsearch indices.

Which stage reads and writes which of them (and under which consumer groups) is stated in
arbitrage/domain/stage_specs.py.
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
# Alert events the notifications stage could not deliver to a channel (or could not read).
ARBITRAGE_ALERTS_DLQ = named("arbitrage.alerts.dlq")

PRODUCTS_INDEX = named("products")
ALERTS_INDEX = named("arbitrage-alerts")
# Every price the enrichment stage has seen, one document per (ASIN, time): the
# opportunities page's price-history charts (arbitrage/web/, docs/decisions.md 33).
PRICE_OBSERVATIONS_INDEX = named("price-observations")
# The operator's indices: the DLQ redrive ledger (arbitrage/cli/redrive.py), acknowledged retention
# losses
# (arbitrage/clients/retention_losses.py).
REDRIVE_LEDGER_INDEX = named("dlq-redrives")
RETENTION_LOSS_INDEX = named("retention-losses")
# The registry of tracked ASINs: one document per ASIN, which discovery sources found it, when
# and why, and when it ages out (arbitrage/clients/tracked_asins.py).
TRACKED_ASINS_INDEX = named("tracked-asins")
# The token ledger: one document per Keepa request that spent tokens, its purpose and cost
# (arbitrage/clients/keepa_ledger.py, `arbitrage tokens`).
KEEPA_LEDGER_INDEX = named("keepa-ledger")
# One document per (channel, alert event) the notifications stage handled, id
# ``<channel>:<event_id>``: what makes a rerun skip what was already delivered.
DELIVERIES_INDEX = named("alert-deliveries")
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
# Copies of each partition where the cluster has the brokers for them, and how many must have a
# write before it is acknowledged (producers send acks=all): one broker may die, or be restarted,
# without writes stopping or an acknowledged record being lost (docs/decisions.md, 28).
MAX_REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2


def replication_factor(brokers: int, requested: int | None = None) -> int:
    """Copies of each partition of a new topic: ``requested`` (KAFKA_REPLICATION_FACTOR) when
    set, else one per broker of the cluster, at most ``MAX_REPLICATION_FACTOR``."""
    if requested is not None:
        return requested
    return max(1, min(MAX_REPLICATION_FACTOR, brokers))


def min_insync_replicas(replicas: int) -> int:
    """Two acknowledging copies once there are three; below that every copy must stay writable
    on its own (two of two would stop all writes while either broker is down)."""
    return MIN_INSYNC_REPLICAS if replicas >= MAX_REPLICATION_FACTOR else 1


@dataclass(frozen=True)
class TopicSpec:
    name: str
    description: str

    def config(self, replicas: int) -> dict[str, str]:
        """The topic's settings for a topic of ``replicas`` copies per partition."""
        return {
            "retention.ms": str(RETENTION_MS),
            "max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES),
            "cleanup.policy": "delete",
            # Producer time (our producers stamp at produce): replays find an hour's window with
            # offsets_for_times, and tests can write messages into past hours.
            "message.timestamp.type": "CreateTime",
            # Set on the topic, not left to the broker's default: what a write needs is part of
            # the topic's contract wherever it is created.
            "min.insync.replicas": str(min_insync_replicas(replicas)),
        }

    def replication_problems(
        self, replicas: int, min_insync: int, brokers: int, requested: int | None = None
    ) -> list[str]:
        """Why an existing topic is replicated less than this cluster would create it (an empty
        list when it is not): Kafka cannot change that in place, so provisioning says so."""
        wanted = replication_factor(brokers, requested)
        problems = []
        if replicas < wanted:
            problems.append(
                f"topic {self.name} has replication factor {replicas}, but new topics on this "
                f"cluster of {brokers} brokers get {wanted}: it was created before the cluster "
                "grew, and a broker failure can lose its acknowledged records or stop its "
                "writes. Move it to more brokers with bin/kafka-reassign-partitions, or, on a "
                "throwaway cluster, delete it and run `arbitrage provision` again"
            )
        if min_insync < min_insync_replicas(replicas):
            problems.append(
                f"topic {self.name} has min.insync.replicas={min_insync} with {replicas} "
                f"replicas (wanted {min_insync_replicas(replicas)}): an acknowledged write may "
                "exist on one broker only. Set it with bin/kafka-configs --alter --entity-type "
                f"topics --entity-name {self.name} --add-config "
                f"min.insync.replicas={min_insync_replicas(replicas)}"
            )
        return problems


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(RAW_UPDATES, "One raw update per ASIN per Keepa pull, keyed by ASIN."),
    TopicSpec(PRODUCTS_ENRICHED, "Validated, enriched products keyed by ASIN."),
    TopicSpec(ARBITRAGE_ALERTS, "Opportunity events (opened, updated, closed), keyed by ASIN."),
    TopicSpec(RAW_UPDATES_DLQ, "Raw updates the enrichment stage could not use, with the reason."),
    TopicSpec(
        PRODUCTS_ENRICHED_DLQ,
        "Enriched products the arbitrage stage could not use, with the reason.",
    ),
    TopicSpec(
        ARBITRAGE_ALERTS_DLQ,
        "Alert events the notifications stage could not deliver (or read), with the reason.",
    ),
)
TOPIC_BY_NAME = {spec.name: spec for spec in TOPICS}
