"""Helpers for the Dagster tests: timestamped messages, run requests executed in-process."""

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from confluent_kafka import KafkaError, Message, Producer

from arbitrage.clients.kafka import KafkaClient
from pipelines.definitions import defs
from tests.factories import offer, raw_update, steady_signals


def hours_ago(hours: int) -> datetime:
    """The start of the hour ``hours`` before the current one (a complete hourly partition)."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - timedelta(hours=hours)


def partition_key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def opportunity(asin: str, at: datetime) -> dict[str, Any]:
    """A raw update that is cheap in DE and dear in FR: exactly one alert (DE → FR)."""
    return raw_update(
        asin=asin,
        markets={
            "DE": offer("DE", new=4500, amazon=-1, buy_box=4700),
            "FR": offer("FR", buy_box=9000, new=8900, signals=steady_signals(9000)),
        },
        timestamp=iso(at),
    )


def produce_at(
    kafka: KafkaClient, topic: str, items: list[tuple[str, bytes, int, datetime | None]]
) -> None:
    """Produce (key, value, partition, Kafka timestamp or None for now); every delivery checked."""
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(err.str())

    producer = Producer(kafka.producer_config())
    for key, value, partition, at in items:
        extra = {"timestamp": int(at.timestamp() * 1000)} if at is not None else {}
        producer.produce(
            topic, key=key, value=value, partition=partition, on_delivery=on_delivery, **extra
        )
        producer.poll(0)
    assert producer.flush(30) == 0 and not failures, failures


def produce_updates(
    kafka: KafkaClient,
    topic: str,
    updates: list[dict[str, Any]],
    partitions: list[int],
    at: list[datetime | None] | None = None,
) -> None:
    produce_at(
        kafka,
        topic,
        [
            (
                update["asin"],
                json.dumps(update).encode(),
                partition,
                (at or [None] * len(updates))[n],
            )
            for n, (update, partition) in enumerate(zip(updates, partitions, strict=True))
        ],
    )


def execute_request(
    instance: dg.DagsterInstance,
    job_name: str,
    request: dg.RunRequest,
    resources: Mapping[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Run what a sensor asked for, as the daemon would: same job, config and tags."""
    return defs.resolve_job_def(job_name).execute_in_process(
        run_config=request.run_config,
        tags=request.tags,
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )


def materializations(result: dg.ExecuteInProcessResult, node: str) -> dict[str, Any]:
    return {m.asset_key.to_user_string(): m for m in result.asset_materializations_for_node(node)}


@contextmanager
def temp_instance() -> Iterator[dg.DagsterInstance]:
    """A persistent (SQLite, temporary directory) instance: sensors need run storage."""
    with dg.instance_for_test() as instance:
        yield instance
