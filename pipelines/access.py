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

KafkaResourceKind = Literal["topic", "group", "transactional_id"]


@dataclass(frozen=True)
class KafkaGrant:
    """All operations on one resource name, or on every name starting with it (prefixed)."""

    kind: KafkaResourceKind
    name: str
    prefixed: bool = False


# The local services (devservices) also grant every namespace starting with one of these: the
# tests' ("test", "test-gw1" per parallel worker) and the benchmarks' ("bench").
SCRATCH_NAMESPACES = ("test", "bench")
_KAFKA_KINDS: tuple[KafkaResourceKind, ...] = ("topic", "group", "transactional_id")


def kafka_grants(prefix: str = topics.NAMESPACE_PREFIX) -> tuple[KafkaGrant, ...]:
    """The grants of the pipeline in the namespace ``prefix`` (``"staging."``; ``""``: none).

    A namespace owns every name it prefixes, so a namespaced pipeline gets one prefixed grant
    per kind; without a namespace the grants name the pipeline's resources one by one.
    """
    if prefix:
        return tuple(KafkaGrant(kind, prefix, prefixed=True) for kind in _KAFKA_KINDS)
    # The tools' groups and the tests' and benchmarks' indices (pipelines/topics.py: tool_name).
    tool_prefix = topics.plain_name(topics.TOOL_PREFIX)
    groups = [topics.plain_name(group) for group in PIPELINE_GROUPS]
    grants = [KafkaGrant("topic", topics.plain_name(spec.name)) for spec in topics.TOPICS]
    grants += [KafkaGrant("group", group) for group in groups]
    grants.append(KafkaGrant("group", tool_prefix, prefixed=True))
    # transactional.id is ``<group>:<topic>:<partition>`` (resources/kafka_transactions.py):
    # the stages' groups, and the benchmarks' and tests' groups under the tool prefix.
    grants.append(KafkaGrant("transactional_id", tool_prefix, prefixed=True))
    grants += [KafkaGrant("transactional_id", f"{group}:", prefixed=True) for group in groups]
    return tuple(grants)


def elasticsearch_indices(prefix: str = topics.NAMESPACE_PREFIX) -> tuple[str, ...]:
    """Index names and patterns of the pipeline's Elasticsearch role in the namespace ``prefix``."""
    if prefix:
        return (f"{prefix}*",)
    stage_indices = tuple(
        dict.fromkeys(topics.plain_name(index) for spec in STAGES for index in spec.indices)
    )
    return (
        *stage_indices,
        topics.plain_name(topics.REDRIVE_LEDGER_INDEX),
        topics.plain_name(topics.RETENTION_LOSS_INDEX),
        f"{topics.plain_name(topics.TOOL_PREFIX)}*",
    )


def local_kafka_grants() -> tuple[KafkaGrant, ...]:
    """What the local secure services grant: the plain names and the scratch namespaces."""
    scratch = (KafkaGrant(kind, name, True) for name in SCRATCH_NAMESPACES for kind in _KAFKA_KINDS)
    return (*kafka_grants(""), *scratch)


def local_elasticsearch_indices() -> tuple[str, ...]:
    return (*elasticsearch_indices(""), *(f"{name}*" for name in SCRATCH_NAMESPACES))
