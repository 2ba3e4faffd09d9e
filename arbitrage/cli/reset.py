"""Empty the pipeline: delete and recreate its topics, consumer groups and indices.

For tests and benchmarks on throwaway local services only; nothing in the pipeline calls it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from arbitrage.cli.redrive import LEDGER_INDEX
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.retention_losses import LOSS_INDEX
from arbitrage.domain import topics
from arbitrage.domain.redaction import remote_hosts
from arbitrage.domain.stage_specs import PIPELINE_GROUPS, STAGES


def delete_groups(kafka: KafkaClient, groups: Sequence[str]) -> None:
    """Delete consumer groups; a group that never existed is not an error.

    With an admin client of its own, made for this call: a coordinator request (this is the
    only one we send) that meets a connection a broker has dropped, as every connection to a
    killed and restarted broker is, frees its handle too early in librdkafka 2.16 and the
    process aborts (assertion ``eonce->refcnt > 0``, librdkafka PR 5397; seen here after the
    leader-kill test, which keeps the session's client across a broker restart). A new
    client has no such connection.
    """
    if not groups:
        return
    admin = AdminClient(kafka.client_config())
    futures = admin.delete_consumer_groups(list(groups), request_timeout=10)
    for future in futures.values():
        with contextlib.suppress(KafkaException):
            future.result()


def _delete_topics(kafka: KafkaClient, names: Sequence[str], deadline: float) -> None:
    existing = set(kafka.check_reachable())
    doomed = [name for name in names if name in existing]
    if doomed:
        for future in kafka.admin().delete_topics(doomed, operation_timeout=60).values():
            future.result()
    while set(doomed) & set(kafka.check_reachable()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"topics {doomed} were not deleted in time")
        time.sleep(0.2)


class ResetRefusedError(RuntimeError):
    """The reset would empty a cluster that is not on this machine."""


def check_reset_allowed(kafka: KafkaClient, es: ElasticsearchClient, anywhere: bool) -> None:
    """Refuse outside a namespace (the pipeline's own names are never emptied), and unless both
    services are on loopback, or ``anywhere`` (ARBITRAGE_ALLOW_RESET=1)."""
    if not topics.NAMESPACE:
        raise ResetRefusedError(
            "refusing to delete the pipeline's own topics, groups and indices: tests and "
            f"benchmarks reset only their namespace. Set {topics.NAMESPACE_VARIABLE} (the tests "
            "use 'test', the benchmarks 'bench')"
        )
    remote = sorted({*remote_hosts(kafka.bootstrap_servers), *remote_hosts(es.url)})
    if remote and not anywhere:
        raise ResetRefusedError(
            f"refusing to delete the pipeline's topics, groups and indices on {', '.join(remote)}: "
            "tests and benchmarks reset only services on 127.0.0.1. If that cluster really is a "
            "throwaway one, set ARBITRAGE_ALLOW_RESET=1"
        )


def reset_pipeline(
    kafka: KafkaClient,
    es: ElasticsearchClient,
    extra_indices: Sequence[str] = (),
    timeout_s: float = 60.0,
    allow_anywhere: bool = False,
) -> None:
    """Return topics, groups and indices to their just-provisioned, empty state."""
    check_reset_allowed(kafka, es, allow_anywhere)
    deadline = time.monotonic() + timeout_s
    # The groups too: a committed offset past a recreated topic's end would hide its lag.
    delete_groups(kafka, PIPELINE_GROUPS)
    names = [spec.name for spec in topics.TOPICS]
    _delete_topics(kafka, names, deadline)
    stage_indices = [index for spec in STAGES for index in spec.indices]
    for index in (*stage_indices, LEDGER_INDEX, LOSS_INDEX, *extra_indices):
        es.client().options(ignore_status=404).indices.delete(index=index)
    while True:
        try:
            kafka.ensure_topics()
            break
        except KafkaException:
            # A just-deleted topic can stay "marked for deletion" for a moment.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    es.ensure_indices()
    # Wait until every partition has a leader, or the first produce stalls on metadata.
    while True:
        metadata = kafka.admin().list_topics(timeout=10)
        ready = all(
            name in metadata.topics
            and metadata.topics[name].partitions
            and all(p.leader >= 0 for p in metadata.topics[name].partitions.values())
            for name in names
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("pipeline topics have no partition leaders in time")
        time.sleep(0.2)
