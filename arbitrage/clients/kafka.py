"""The Kafka client: delivery-checked producer, consumer factory, topic provisioning, lag.

Plain Python (no Dagster): the engine, the CLI and the page use it as it is; the Dagster layer
hands it to assets and sensors through resources/kafka.py."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from arbitrage.clients.kafka_offsets import (
    SERVICES_HINT,
    KafkaUnavailableError,
    LagReaderProcess,
    PartitionLag,
    commit_offsets,
    read_lag,
    topic_partitions,
)
from arbitrage.clients.kafka_security import KafkaSecurity
from arbitrage.domain import topics
from arbitrage.domain.topics import PARTITIONS, TOPIC_MAX_MESSAGE_BYTES, TOPICS, TopicSpec

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class DeliveryError(RuntimeError):
    """At least one produced message was not acknowledged by the broker."""


@dataclass
class DeliveryReport:
    """What a producer session wrote: counts and the offset range per (topic, partition)."""

    delivered: int = 0
    delivered_by_topic: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    offsets: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def record(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            key = msg.key().decode("utf-8", "replace") if msg.key() else None
            self.failures.append(f"{msg.topic()} key={key}: {err.str()}")
            return
        # Called once per delivered message: each accessor is read once.
        topic, offset = msg.topic(), msg.offset()
        self.delivered += 1
        self.delivered_by_topic[topic] = self.delivered_by_topic.get(topic, 0) + 1
        slot = (topic, msg.partition())
        span = self.offsets.get(slot)
        if span is None:
            self.offsets[slot] = (offset, offset)
        elif offset < span[0] or offset > span[1]:
            self.offsets[slot] = (min(span[0], offset), max(span[1], offset))

    def per_partition(self, topic: str) -> dict[int, tuple[int, int]]:
        return {p: span for (t, p), span in sorted(self.offsets.items()) if t == topic}

    def merge(self, other: DeliveryReport) -> None:
        """Fold another session's report into this one (a run spans many batches)."""
        self.delivered += other.delivered
        for topic, count in other.delivered_by_topic.items():
            self.delivered_by_topic[topic] = self.delivered_by_topic.get(topic, 0) + count
        self.failures += other.failures
        for slot, (low, high) in other.offsets.items():
            old_low, old_high = self.offsets.get(slot, (low, high))
            self.offsets[slot] = (min(low, old_low), max(high, old_high))


# How many messages produce_many hands over between two services of delivery callbacks.
_POLL_EVERY = 1000


class CheckedProducer:
    """An idempotent producer whose every delivery report is checked before ``flush`` returns."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self.report = DeliveryReport()
        self._pending = 0

    def produce(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes,
        headers: dict[str, bytes] | None = None,
    ) -> None:
        self.produce_many(topic, [(key, value)], headers)

    def produce_many(
        self,
        topic: str,
        messages: Iterable[tuple[str | bytes | None, bytes]],
        headers: dict[str, bytes] | None = None,
    ) -> None:
        """Hand each (key, value) to the client, every delivery report checked at ``flush``.

        A stage hands over thousands of messages at once: the client's queue is served every
        ``_POLL_EVERY`` messages (and after the last) instead of after each, and nothing is
        looked up per message that the loop can hold.
        """
        send = self._producer.produce
        on_delivery = self._on_delivery
        for sent, (key, value) in enumerate(messages, start=1):
            while True:
                try:
                    send(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
                    break
                except BufferError:
                    # The local queue is full: serve delivery callbacks to make room, retry.
                    self._producer.poll(0.1)
            self._pending += 1
            if sent % _POLL_EVERY == 0:
                self._producer.poll(0)
        self._producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self._pending -= 1
        self.report.record(err, msg)

    def flush(self, timeout_s: float = 60.0) -> DeliveryReport:
        """Wait for every outstanding message; raise unless all were acknowledged."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(
                f"{remaining} messages were still unacknowledged after {timeout_s:.0f}s"
            )
        if self.report.failures:
            shown = "; ".join(self.report.failures[:3])
            raise DeliveryError(f"{len(self.report.failures)} messages were not delivered: {shown}")
        return self.report


def read_partition(
    consumer: Consumer, topic: str, partition: int, start: int, end: int, timeout_s: float = 10.0
) -> Iterator[Message]:
    """The committed messages of one partition in [start, end), in offset order.

    Offsets are not message counts: transaction markers and aborted records take offsets a
    ``read_committed`` consumer never sees, so the read ends when the consumer's position
    reaches ``end``, not after ``end - start`` messages. Raises if the broker stops answering
    for ``timeout_s`` before that.
    """
    if start >= end:
        return
    slot = TopicPartition(topic, partition)
    consumer.assign([TopicPartition(topic, partition, start)])
    last_progress = time.monotonic()
    while True:
        position = max(start, consumer.position([slot])[0].offset)  # negative: none yet
        if position >= end:
            return
        # Short waits: how many messages are left is unknown (markers), the position tells.
        batch = consumer.consume(num_messages=1000, timeout=0.1)
        for message in batch:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            if message.offset() >= end:
                return
            yield message
        if batch:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > timeout_s:
            raise KafkaUnavailableError(
                f"{topic}[{partition}] returned nothing for {timeout_s:.0f}s at offset "
                f"{position} (reading up to {end})"
            )


@dataclass
class KafkaClient:
    """Connection to the Kafka cluster carrying the pipeline's topics."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    # Replication factor of new topics; None: one copy per broker of the cluster, at most 3.
    replication_factor: int | None = None
    client_id: str = "arbitrage"
    timeout_s: float = 10.0  # admin and metadata requests
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str = ""
    ssl_certificate_location: str = ""
    ssl_key_location: str = ""
    # One admin client per client: futures fail if their admin is garbage-collected early.
    _admin: AdminClient | None = field(default=None, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ clients

    def security(self) -> KafkaSecurity:
        return KafkaSecurity(
            protocol=self.security_protocol.upper(),
            sasl_mechanism=self.sasl_mechanism.upper(),
            sasl_username=self.sasl_username,
            ssl_ca_location=self.ssl_ca_location,
            ssl_certificate_location=self.ssl_certificate_location,
            ssl_key_location=self.ssl_key_location,
        )

    def client_config(self) -> dict[str, Any]:
        """What every client of this cluster shares: where it is, who is asking, and how it
        proves it (arbitrage/clients/kafka_security.py)."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            **self.security().librdkafka_config(self.sasl_password),
        }

    def tools_properties(self) -> str:
        """The same settings as a properties file for Kafka's Java tools (bin/kafka-*)."""
        return self.security().java_properties(self.bootstrap_servers, self.sasl_password)

    def producer_config(self) -> dict[str, Any]:
        return {
            **self.client_config(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
            "batch.size": 512 * 1024,
            "message.max.bytes": TOPIC_MAX_MESSAGE_BYTES,
            "queue.buffering.max.messages": 500_000,
        }

    @contextmanager
    def producer(self) -> Iterator[CheckedProducer]:
        """A producer for one unit of work; flushed and checked when the block ends normally."""
        checked = CheckedProducer(self.producer_config())
        yield checked
        checked.flush()

    def consumer(self, group_id: str, **overrides: Any) -> Consumer:
        """A consumer that never commits on its own: stages commit after downstream acks."""
        config = {
            **self.client_config(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.max.bytes": 4 * TOPIC_MAX_MESSAGE_BYTES,
            "max.partition.fetch.bytes": 2 * 1024 * 1024,
            # Prefetch a few batches ahead, not librdkafka's default of up to 100 000 messages
            # (64 MiB): a stage's memory then depends on its batch size, not on the backlog.
            "queued.max.messages.kbytes": 16 * 1024,
            **overrides,
        }
        return Consumer(config)

    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self.client_config())
        return self._admin

    # ------------------------------------------------------------------ health and topics

    def check_reachable(self) -> list[str]:
        """Topic names on the cluster; raises KafkaUnavailableError with a hint if unreachable."""
        return sorted(self._metadata().topics)

    def broker_ids(self) -> list[int]:
        """The brokers of the cluster that are up (registered and not fenced)."""
        return sorted(self._metadata().brokers)

    def replication_problems(self, specs: tuple[TopicSpec, ...] = TOPICS) -> list[str]:
        """A sentence per existing topic replicated less than this cluster would create it now
        (fewer replicas, or a lower min.insync.replicas): `arbitrage provision` warns with them."""
        metadata = self._metadata()
        present = [spec for spec in specs if spec.name in metadata.topics]
        if not present:
            return []
        described = self.describe_topics([spec.name for spec in present])
        problems: list[str] = []
        for spec in present:
            about = described[spec.name]
            problems += spec.replication_problems(
                about["replication_factor"],
                about["min.insync.replicas"],
                len(metadata.brokers),
                self.replication_factor,
            )
        return problems

    def _metadata(self) -> Any:
        """The cluster's metadata (brokers, topics); raises KafkaUnavailableError with a hint."""
        try:
            return self.admin().list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"Kafka at {self.bootstrap_servers} did not answer ({exc}); {SERVICES_HINT}"
            ) from None

    def ensure_topics(self, specs: tuple[TopicSpec, ...] = TOPICS) -> dict[str, str]:
        """Create missing topics (3 partitions, 7-day retention, as many replicas as the cluster
        has brokers up to 3: arbitrage/domain/topics.py); report 'created' or 'exists'."""
        metadata = self._metadata()
        existing = set(metadata.topics)
        # Brokers the controller counts as alive: what a new topic's replicas can be put on.
        replicas = topics.replication_factor(len(metadata.brokers), self.replication_factor)
        admin = self.admin()
        outcome = {spec.name: "exists" for spec in specs if spec.name in existing}
        missing = [
            NewTopic(spec.name, PARTITIONS, replicas, config=spec.config(replicas))
            for spec in specs
            if spec.name not in existing
        ]
        if missing:
            for name, future in admin.create_topics(
                missing, request_timeout=self.timeout_s
            ).items():
                try:
                    future.result()
                    outcome[name] = "created"
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                    outcome[name] = "exists"
        return outcome

    def describe_topics(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Partition count, replication (the fewest replicas of any partition, and
        min.insync.replicas) and the retention/max-size settings of each topic."""
        from confluent_kafka.admin import ConfigResource, ResourceType

        metadata = self._metadata()
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
        described: dict[str, dict[str, Any]] = {}
        for resource, future in self.admin().describe_configs(resources).items():
            entries = future.result()
            partitions = metadata.topics[resource.name].partitions
            described[resource.name] = {
                "partitions": len(partitions),
                "replication_factor": min(len(p.replicas) for p in partitions.values()),
                "min.insync.replicas": int(entries["min.insync.replicas"].value),
                "retention.ms": int(entries["retention.ms"].value),
                "max.message.bytes": int(entries["max.message.bytes"].value),
            }
        return described

    # ------------------------------------------------------------------ offsets and lag

    def partitions(self, topic: str) -> list[int]:
        return topic_partitions(self.admin(), topic, self.timeout_s, self.bootstrap_servers)

    def watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        """(low, high) offsets per partition, from the broker (ListOffsets; no message bodies).

        ``high`` is the last stable offset: the end of what ``read_committed`` readers can see
        (it stops before a transaction still open). ``high - low`` counts offsets, which include
        transaction markers, so it is an upper bound on the messages, not their number.
        """
        admin = self.admin()
        parts = self.partitions(topic)
        lows = admin.list_offsets(
            {TopicPartition(topic, p): OffsetSpec.earliest() for p in parts},
            request_timeout=self.timeout_s,
        )
        highs = admin.list_offsets(
            {TopicPartition(topic, p): OffsetSpec.latest() for p in parts},
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=self.timeout_s,
        )
        low_by_p = {tp.partition: f.result().offset for tp, f in lows.items()}
        high_by_p = {tp.partition: f.result().offset for tp, f in highs.items()}
        return {p: (low_by_p[p], high_by_p[p]) for p in parts}

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset at or after timestamp_ms (else the high watermark)."""
        admin = self.admin()
        parts = self.partitions(topic)
        futures = admin.list_offsets(
            {TopicPartition(topic, p): OffsetSpec.for_timestamp(timestamp_ms) for p in parts},
            request_timeout=self.timeout_s,
        )
        found = {tp.partition: f.result().offset for tp, f in futures.items()}
        highs = self.watermarks(topic)
        # -1 means "no message at or after that time": the window ends at the high watermark.
        return {p: found[p] if found[p] >= 0 else highs[p][1] for p in parts}

    def committed_offsets(self, group_id: str, topic: str) -> dict[int, int | None]:
        """The group's committed offset per partition (None where it has none)."""
        return {lag.partition: lag.committed for lag in self.lag(group_id, topic)}

    def lag(self, group_id: str, topic: str) -> list[PartitionLag]:
        """Per partition: the group's committed offset, the watermarks, and the lag between.

        Read through a consumer, never the admin client's OffsetFetch, which crashes librdkafka
        on a brand-new cluster (arbitrage/clients/kafka_offsets.py says why).
        """
        return read_lag(self.client_config(), group_id, topic, self.timeout_s)

    def lag_in_child_process(self, group_id: str, topic: str) -> list[PartitionLag]:
        """``lag``, read in a child process: for long-lived callers (the sensors in the code
        server), where a native crash must cost one call, not the process."""
        return _LAG_READER.read_lag(self.client_config(), group_id, topic, self.timeout_s)

    def newest_messages(self, topic: str, count: int, group_id: str) -> list[Message]:
        """The newest ``count`` messages of a topic across partitions, oldest first (reading
        with ``group_id``, which commits nothing)."""
        consumer = self.consumer(group_id)
        found: list[Message] = []
        try:
            for partition, (low, high) in self.watermarks(topic).items():
                # ``count`` offsets back holds at most ``count`` messages (markers take offsets
                # too): with transactions the newest few may be fewer; that is what is shown.
                start = max(low, high - count)
                if start < high:
                    found += read_partition(consumer, topic, partition, start, high)
        finally:
            consumer.close()
        found.sort(key=lambda m: (m.timestamp()[1], m.partition(), m.offset()))
        return found[-count:]

    def messages_since(self, topic: str, since_ms: int | None, group_id: str) -> Iterator[Message]:
        """The committed messages of every partition from the first offset at ``since_ms`` (None:
        the oldest retained) to the high watermark now, partition by partition, read by a
        consumer of ``group_id`` that commits nothing."""
        marks = self.watermarks(topic)
        starts = self.offsets_for_time(topic, since_ms) if since_ms is not None else None
        consumer = self.consumer(group_id)
        try:
            for partition, (low, high) in marks.items():
                start = max(low, starts[partition]) if starts else low
                yield from read_partition(consumer, topic, partition, start, high)
        finally:
            consumer.close()

    def count_messages(self, topic: str, spans: dict[int, tuple[int, int]]) -> int:
        """How many committed messages lie in [start, end) of each partition. Offsets are not
        messages (transaction markers take offsets too), so they are read and counted."""
        consumer = self.consumer(topics.tool_name("counter"))
        try:
            return sum(
                sum(1 for _ in read_partition(consumer, topic, partition, start, end))
                for partition, (start, end) in spans.items()
            )
        finally:
            consumer.close()

    def newest_timestamp_ms(self, topic: str) -> int | None:
        """The largest message timestamp on the topic (ListOffsets max-timestamp: no bodies)."""
        futures = self.admin().list_offsets(
            {TopicPartition(topic, p): OffsetSpec.max_timestamp() for p in self.partitions(topic)},
            request_timeout=self.timeout_s,
        )
        stamps = [future.result().timestamp for future in futures.values()]
        return max((stamp for stamp in stamps if stamp >= 0), default=None)

    def commit(self, group_id: str, topic: str, offsets: dict[int, int]) -> None:
        """Commit next-offsets for a group without joining it (used by stage runs and tests)."""
        consumer = self.consumer(group_id)
        try:
            commit_offsets(consumer, [TopicPartition(topic, p, o) for p, o in offsets.items()])
        finally:
            consumer.close()


# One per process: the code server's sensors share it across ticks.
_LAG_READER = LagReaderProcess()
