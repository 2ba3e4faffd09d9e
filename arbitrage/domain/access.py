"""Who may touch what: the pipeline's accounts and their grants, stated once from its names.

One account per job to be done (docs/decisions.md, 42), each with the operations that job
performs and nothing more:

* ``provision``: creates the topics, the index templates and the indices (`arbitrage
  provision`, `make topics`); reads and alters topic settings. Runs nothing.
* one per stage (``keepa_pull``, ``enrichment``, ``arbitrage``, ``notifications``; the Keepa
  pull's also keeps the registry of tracked ASINs discovery fills): reads its
  source topic under its own groups, writes its output topic and its DLQ, uses its own
  transactional ids, writes its own indices; may see that the other topics exist (a run checks
  they do) but not read or write them.
* ``digest``: the daily digest (asset and `arbitrage digest`): reads the alerts, records its
  deliveries beside the notifications stage's.
* ``operator``: the CLI, the sensors, the checks and the web page: reads every topic
  and index, describes and commits the stages' groups (lag, `arbitrage offsets`), writes the
  stages' source topics (DLQ redrive) and its own ledgers; creates nothing it does not own.

The local secure services (devservices) create exactly these accounts and grants, and
docs/security.md tables them. Pure: names in, grants out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from arbitrage.domain import topics
from arbitrage.domain.stage_specs import STAGES, StageSpec

KafkaResourceKind = Literal["topic", "group", "transactional_id", "cluster"]
# Kafka's ACL operations (org.apache.kafka.common.acl.AclOperation) the accounts use.
KafkaOperation = Literal[
    "ALL",
    "READ",
    "WRITE",
    "CREATE",
    "DELETE",
    "DESCRIBE",
    "DESCRIBE_CONFIGS",
    "ALTER_CONFIGS",
    "IDEMPOTENT_WRITE",
]
KAFKA_CLUSTER = "kafka-cluster"  # the one name Kafka gives its cluster resource


@dataclass(frozen=True)
class KafkaGrant:
    """Operations on one resource name, or on every name starting with it (prefixed)."""

    kind: KafkaResourceKind
    name: str
    operations: tuple[KafkaOperation, ...]
    prefixed: bool = False


@dataclass(frozen=True)
class IndexGrant:
    """Elasticsearch index privileges on some index names or patterns."""

    names: tuple[str, ...]
    privileges: tuple[str, ...]


@dataclass(frozen=True)
class Account:
    """One account on both services: its key (``enrichment``), its user name, its grants."""

    key: str
    user: str
    kafka: tuple[KafkaGrant, ...]
    es_cluster: tuple[str, ...]
    es_indices: tuple[IndexGrant, ...]

    @property
    def variable_suffix(self) -> str:
        """``KAFKA_SASL_USERNAME_<suffix>`` and friends name this account's credentials."""
        return self.key.upper().replace("-", "_")


# Account keys. The stages' are their StageSpec names; the Keepa pull is a stage of its own.
PROVISION = "provision"
OPERATOR = "operator"
KEEPA_PULL = "keepa_pull"
DIGEST = "digest"
OPERATOR_USER = "arbitrage"  # the account `client.env` names without a suffix

# The namespaces the local services grant besides the plain names: the tests' ("test", and
# "test-gw<n>" per pytest-xdist worker, tests/__init__.py) and the benchmarks' ("bench").
# Kafka's ACLs match literal names or prefixes only, never "<anything>.raw.keepa_updates", so
# each namespace a stage account works in is listed.
SCRATCH_NAMESPACES = ("test", "bench")
TEST_WORKERS = 8
LOCAL_NAMESPACES = ("", "test", *(f"test-gw{n}" for n in range(TEST_WORKERS)), "bench")


def _in(prefix: str, name: str) -> str:
    """``name`` (as this process names it) moved into the namespace ``prefix``."""
    return prefix + topics.plain_name(name)


def _topic_names(prefix: str) -> tuple[str, ...]:
    return tuple(_in(prefix, spec.name) for spec in topics.TOPICS)


def _stage_indices(prefix: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_in(prefix, index) for spec in STAGES for index in spec.indices))


def _see_every_topic(prefix: str) -> list[KafkaGrant]:
    # A run checks the pipeline's topics exist before it starts (KafkaClient.ensure_topics):
    # a topic the account cannot describe looks missing, and creating it is refused.
    return [KafkaGrant("topic", name, ("DESCRIBE",)) for name in _topic_names(prefix)]


IDEMPOTENT = KafkaGrant("cluster", KAFKA_CLUSTER, ("IDEMPOTENT_WRITE",))
# Every stage records the records retention removed before it read them (resources/
# retention_losses.py), creating that index on first use.
_LOSSES_PRIVILEGES = ("read", "index", "create_index", "view_index_metadata")


def stage_account(spec: StageSpec, prefix: str = topics.NAMESPACE_PREFIX) -> Account:
    """Read the source under the stage's groups, write output and DLQ transactionally under
    ids ``<group>:<topic>:<partition>`` (arbitrage/engine/kafka_transactions.py), write its
    indices."""
    grants = [KafkaGrant("topic", _in(prefix, spec.source_topic), ("READ", "DESCRIBE"))]
    outputs = [spec.output_topic] if spec.output_topic is not None else []
    grants += [
        KafkaGrant("topic", _in(prefix, topic), ("WRITE", "DESCRIBE"))
        for topic in (*outputs, spec.dlq_topic)
    ]
    grants += _see_every_topic(prefix)
    for group in spec.groups:
        grants.append(KafkaGrant("group", _in(prefix, group), ("READ", "DESCRIBE")))
        grants.append(
            KafkaGrant("transactional_id", f"{_in(prefix, group)}:", ("WRITE", "DESCRIBE"), True)
        )
    grants.append(IDEMPOTENT)
    indices = tuple(_in(prefix, index) for index in spec.indices)
    return Account(
        key=spec.name,
        user=f"arbitrage-{spec.name}",
        kafka=tuple(grants),
        es_cluster=("monitor",),
        es_indices=(
            # maintenance: a stage refreshes its index before it reads its own writes back.
            IndexGrant(indices, ("read", "index", "maintenance", "view_index_metadata")),
            IndexGrant((_in(prefix, topics.RETENTION_LOSS_INDEX),), _LOSSES_PRIVILEGES),
        ),
    )


def keepa_pull_account(prefix: str = topics.NAMESPACE_PREFIX) -> Account:
    """Everything that spends Keepa tokens: writes the raw updates, keeps the registry of
    tracked ASINs the discovery sources fill (creating it on first use, deleting the own
    list's findings that left the list) and the token ledger of every request; reads what the
    token planner weighs (the products' last refresh, the open alerts)."""
    raw = KafkaGrant("topic", _in(prefix, topics.RAW_UPDATES), ("WRITE", "DESCRIBE"))
    registry = (_in(prefix, topics.TRACKED_ASINS_INDEX),)
    ledger = (_in(prefix, topics.KEEPA_LEDGER_INDEX),)
    return Account(
        key=KEEPA_PULL,
        user="arbitrage-keepa-pull",
        kafka=(raw, *_see_every_topic(prefix), IDEMPOTENT),
        es_cluster=("monitor",),
        es_indices=(
            IndexGrant(
                registry,
                ("read", "index", "delete", "create_index", "maintenance", "view_index_metadata"),
            ),
            IndexGrant(
                ledger, ("read", "index", "create_index", "maintenance", "view_index_metadata")
            ),
            # The token planner weighs each ASIN by its last refresh and open opportunities.
            IndexGrant(
                (_in(prefix, topics.PRODUCTS_INDEX), _in(prefix, topics.ALERTS_INDEX)),
                ("read", "view_index_metadata"),
            ),
        ),
    )


def digest_account(prefix: str = topics.NAMESPACE_PREFIX) -> Account:
    """Reads the day's alerts, records each digest it sent (arbitrage/clients/digest.py); no
    Kafka."""
    alerts = (_in(prefix, topics.ALERTS_INDEX),)
    deliveries = (_in(prefix, topics.DELIVERIES_INDEX),)
    return Account(
        key=DIGEST,
        user="arbitrage-digest",
        kafka=(),
        es_cluster=("monitor",),
        es_indices=(
            IndexGrant(alerts, ("read", "maintenance", "view_index_metadata")),
            IndexGrant(deliveries, ("read", "index", "view_index_metadata")),
        ),
    )


def provision_account(prefix: str = topics.NAMESPACE_PREFIX) -> Account:
    """Creates topics, index templates and indices; reads and alters topic settings."""
    operations: tuple[KafkaOperation, ...] = (
        "CREATE",
        "DESCRIBE",
        "DESCRIBE_CONFIGS",
        "ALTER_CONFIGS",
    )
    indices = (
        *_stage_indices(prefix),
        _in(prefix, topics.REDRIVE_LEDGER_INDEX),
        _in(prefix, topics.RETENTION_LOSS_INDEX),
    )
    return Account(
        key=PROVISION,
        user="arbitrage-provision",
        kafka=tuple(KafkaGrant("topic", name, operations) for name in _topic_names(prefix)),
        # Elasticsearch has no narrower privilege for templates: any template, any pattern.
        # This account is the only one holding it.
        es_cluster=("monitor", "manage_index_templates"),
        es_indices=(
            IndexGrant(
                indices,
                # Adding a field an existing index lacks is a mapping update, not `manage`
                # (which could also delete the index).
                ("create_index", "view_index_metadata", "indices:admin/mapping/put"),
            ),
        ),
    )


def operator_account(prefix: str = topics.NAMESPACE_PREFIX) -> Account:
    """Reads everything, moves the stages' committed offsets, redrives dead letters into the
    stages' sources, keeps its ledgers; its own tool groups (``arbitrage-cli-tail``…)."""
    sources = tuple(dict.fromkeys(_in(prefix, spec.source_topic) for spec in STAGES))
    grants = [KafkaGrant("topic", name, ("READ", "DESCRIBE")) for name in _topic_names(prefix)]
    grants += [KafkaGrant("topic", name, ("WRITE",)) for name in sources]
    grants += [
        KafkaGrant("group", _in(prefix, group), ("READ", "DESCRIBE"))
        for spec in STAGES
        for group in spec.groups
    ]
    grants.append(
        KafkaGrant("group", _in(prefix, topics.TOOL_PREFIX), ("READ", "DESCRIBE", "DELETE"), True)
    )
    grants.append(IDEMPOTENT)
    ledgers = (_in(prefix, topics.REDRIVE_LEDGER_INDEX), _in(prefix, topics.RETENTION_LOSS_INDEX))
    return Account(
        key=OPERATOR,
        user=OPERATOR_USER,
        kafka=tuple(grants),
        es_cluster=("monitor",),
        es_indices=(
            # maintenance: the CLI's counters refresh before they count.
            IndexGrant(_stage_indices(prefix), ("read", "maintenance", "view_index_metadata")),
            IndexGrant(ledgers, ("read", "index", "create_index", "view_index_metadata")),
            # `arbitrage tokens` and the registry's size: read only.
            IndexGrant(
                (_in(prefix, topics.KEEPA_LEDGER_INDEX), _in(prefix, topics.TRACKED_ASINS_INDEX)),
                ("read", "maintenance", "view_index_metadata"),
            ),
        ),
    )


def accounts(prefix: str = topics.NAMESPACE_PREFIX) -> tuple[Account, ...]:
    """Every account of the pipeline in the namespace ``prefix`` (``"staging."``; ``""``)."""
    stages = tuple(stage_account(spec, prefix) for spec in STAGES)
    return (
        provision_account(prefix),
        keepa_pull_account(prefix),
        *stages,
        digest_account(prefix),
        operator_account(prefix),
    )


def runtime_account_keys() -> tuple[str, ...]:
    return (KEEPA_PULL, *(spec.name for spec in STAGES), DIGEST)


def _scratch_operator() -> Account:
    """The operator in the tests' and benchmarks' namespaces owns them: they are emptied,
    deleted and recreated there on every run (arbitrage/cli/reset.py)."""
    kinds: tuple[KafkaResourceKind, ...] = ("topic", "group", "transactional_id")
    return Account(
        key=OPERATOR,
        user=OPERATOR_USER,
        kafka=tuple(
            KafkaGrant(kind, name, ("ALL",), True) for name in SCRATCH_NAMESPACES for kind in kinds
        ),
        es_cluster=("monitor", "manage_index_templates"),
        es_indices=(IndexGrant(tuple(f"{name}*" for name in SCRATCH_NAMESPACES), ("all",)),),
    )


def local_accounts() -> tuple[Account, ...]:
    """What the local secure services grant: every account in the plain names and in each
    local namespace, one Account per user with the grants of all of them."""
    merged: dict[str, Account] = {}
    every = [a for prefix in LOCAL_NAMESPACES for a in accounts(prefix + "." if prefix else "")]
    every.append(_scratch_operator())
    for account in every:
        found = merged.get(account.user)
        if found is None:
            merged[account.user] = account
            continue
        merged[account.user] = Account(
            key=found.key,
            user=found.user,
            kafka=tuple(dict.fromkeys((*found.kafka, *account.kafka))),
            es_cluster=tuple(dict.fromkeys((*found.es_cluster, *account.es_cluster))),
            es_indices=(*found.es_indices, *account.es_indices),
        )
    return tuple(merged.values())
