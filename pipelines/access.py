"""What the pipeline's own account may touch, stated once from the names it uses.

The local secure services (devservices) grant exactly this, and docs/security.md describes it:
Kafka ACLs on the pipeline's topics, consumer groups and transactional ids, and an
Elasticsearch role on its indices. Pure: names in, grants out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelines import topics
from pipelines.stage_specs import PIPELINE_GROUPS, STAGES

# Groups of the operator CLI, the checks, the counters, the tests and the benchmarks all start
# with this (``arbitrage-cli-tail``, ``arbitrage-checks``, ``arbitrage-bench.…``).
TOOL_GROUP_PREFIX = "arbitrage-"
# Test and benchmark indices, and the index templates' names, start with this.
INDEX_PREFIX = "arbitrage-"

KafkaResourceKind = Literal["topic", "group", "transactional_id"]


@dataclass(frozen=True)
class KafkaGrant:
    """All operations on one resource name, or on every name starting with it (prefixed)."""

    kind: KafkaResourceKind
    name: str
    prefixed: bool = False


def kafka_grants() -> tuple[KafkaGrant, ...]:
    grants = [KafkaGrant("topic", spec.name) for spec in topics.TOPICS]
    grants += [KafkaGrant("group", group) for group in PIPELINE_GROUPS]
    grants.append(KafkaGrant("group", TOOL_GROUP_PREFIX, prefixed=True))
    # transactional.id is ``<group>:<topic>:<partition>`` (resources/kafka_transactions.py):
    # the stages' groups, and the benchmarks' and tests' groups under the tool prefix.
    grants.append(KafkaGrant("transactional_id", TOOL_GROUP_PREFIX, prefixed=True))
    grants += [
        KafkaGrant("transactional_id", f"{group}:", prefixed=True) for group in PIPELINE_GROUPS
    ]
    return tuple(grants)


def elasticsearch_indices() -> tuple[str, ...]:
    """Index names and patterns of the pipeline's Elasticsearch role."""
    stage_indices = tuple(dict.fromkeys(spec.index for spec in STAGES))
    return (
        *stage_indices,
        topics.REDRIVE_LEDGER_INDEX,
        topics.RETENTION_LOSS_INDEX,
        f"{INDEX_PREFIX}*",
    )
