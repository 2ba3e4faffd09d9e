"""A consumer group's position on a topic, read through a path that cannot crash the caller.

Why not ``AdminClient.list_consumer_group_offsets``: on a brand-new cluster (no group
coordinator yet) or after a coordinator move, the broker answers OffsetFetch with
NOT_COORDINATOR, and librdkafka 2.16's admin path then dereferences a consumer-group handle that
an admin client does not have: SIGSEGV in ``rdk:main`` (librdkafka issue 5040). The sensors read
offsets on every tick inside the long-lived code server, so one such answer killed it.

Two defences, see docs/decisions.md:

* ``read_lag`` uses a ``Consumer`` with the group id: ``committed()`` goes through the
  consumer-group machinery, which looks the coordinator up and retries NOT_COORDINATOR.
  Watermarks come from the same consumer. No admin client is involved.
* ``LagReaderProcess`` runs ``read_lag`` in a child process that stays alive between calls,
  so a native crash of any future librdkafka bug costs one sensor tick, not the code server.

This module imports no Dagster: the child process starts in well under a second.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

SERVICES_HINT = "start the local services with `make services-up` (or `docker compose up -d kafka`)"


# librdkafka logs every refused connection to stderr; the errors reach callers as exceptions,
# so the log lines of these short-lived consumers are dropped.
_QUIET = logging.getLogger("arbitrage.kafka_offsets.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


T = TypeVar("T")


class KafkaUnavailableError(RuntimeError):
    """The broker did not answer, or the topic is missing; the message says what to do."""


class LagReaderCrashedError(RuntimeError):
    """The child process reading offsets died (a native crash) or stopped answering."""


@dataclass
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group has no offset here yet
    low_watermark: int
    high_watermark: int

    @property
    def start_offset(self) -> int:
        """Where the group resumes: its committed offset, else the oldest retained message."""
        if self.committed is None or self.committed < self.low_watermark:
            return self.low_watermark
        return self.committed

    @property
    def lag(self) -> int:
        return max(0, self.high_watermark - self.start_offset)

    @property
    def ahead_of_log(self) -> bool:
        """Committed past the end of the log (topic recreated, records deleted): every record
        below the committed offset would be skipped silently, so this must stop the stage."""
        return self.committed is not None and self.committed > self.high_watermark

    @property
    def lost_to_retention(self) -> int:
        """Records retention deleted before the group read them (it resumes at the low mark)."""
        if self.committed is None or self.committed >= self.low_watermark:
            return 0
        return self.low_watermark - self.committed


def topic_partitions(client: Any, topic: str, timeout_s: float, address: str) -> list[int]:
    """The topic's partitions (client: a Consumer or AdminClient); KafkaUnavailableError if the
    broker at ``address`` is silent or the topic is missing."""
    try:
        metadata = client.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"Kafka at {address} did not answer ({exc}); {SERVICES_HINT}"
        ) from None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        raise KafkaUnavailableError(
            f"topic {topic} does not exist on {address}; create the topics with `make topics` "
            "(the pipeline also creates them at start)"
        )
    return sorted(found.partitions)


def read_lag(
    client_config: dict[str, Any], group_id: str, topic: str, timeout_s: float
) -> list[PartitionLag]:
    """Per partition: the group's committed offset, the watermarks, and the lag between.

    The consumers never join the group (no subscribe), so reading does not rebalance it.
    The committed offsets are read without waiting for open transactions (a crashed run's
    transaction would block a ``read_committed`` reader until it is aborted, and the next run,
    which aborts it, must plan first); the run re-reads them once it holds the partition. The
    high watermark is the last stable offset: records of open transactions are not lag yet.
    """
    settings = {
        **client_config,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "logger": _QUIET,
    }
    offsets_reader = Consumer({**settings, "isolation.level": "read_uncommitted"})
    marks_reader = Consumer({**settings, "isolation.level": "read_committed"})
    try:
        address = client_config.get("bootstrap.servers", "?")
        partitions = topic_partitions(marks_reader, topic, timeout_s, address)
        committed = _committed_with_retries(offsets_reader, group_id, topic, partitions, timeout_s)
        try:
            marks = {
                p: marks_reader.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=timeout_s, cached=False
                )
                for p in partitions
            }
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"could not read the watermarks of {topic} at {address} ({exc}); " + SERVICES_HINT
            ) from None
    finally:
        offsets_reader.close()
        marks_reader.close()
    by_partition = {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in committed}
    return [
        PartitionLag(topic, p, by_partition.get(p), marks[p][0], marks[p][1]) for p in partitions
    ]


# Answers that mean "the group coordinator is not ready here yet" (a brand-new cluster, a
# broker restart, a coordinator move): the consumer re-discovers the coordinator on retry.
_COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


def _when_coordinator_ready(call: Callable[[], T], timeout_s: float) -> T:
    """``call()``, retried while the group coordinator is not ready (a brand-new cluster, a
    broker restart, a coordinator move) until ``timeout_s``; any other error raises at once."""
    deadline = time.monotonic() + timeout_s
    pause_s = 0.1
    while True:
        try:
            return call()
        except KafkaException as exc:
            if exc.args[0].code() not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                raise
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 1.0)


def _committed_with_retries(
    consumer: Consumer, group_id: str, topic: str, partitions: list[int], timeout_s: float
) -> list[TopicPartition]:
    wanted = [TopicPartition(topic, p) for p in partitions]
    try:
        return _when_coordinator_ready(
            lambda: consumer.committed(wanted, timeout=timeout_s), timeout_s
        )
    except KafkaException as exc:
        raise KafkaUnavailableError(
            f"could not read group {group_id}'s committed offsets on {topic} ({exc}); "
            + SERVICES_HINT
        ) from None


def committed_offset(
    consumer: Consumer, topic: str, partition: int, timeout_s: float = 30.0
) -> int | None:
    """The consumer's group's committed offset on one partition (None if it has none)."""
    found = _when_coordinator_ready(
        lambda: consumer.committed([TopicPartition(topic, partition)], timeout=timeout_s),
        timeout_s,
    )
    return found[0].offset if found[0].offset >= 0 else None


def commit_offsets(
    consumer: Consumer, offsets: list[TopicPartition], timeout_s: float = 30.0
) -> None:
    """Commit synchronously; retried while the group coordinator is not ready."""
    _when_coordinator_ready(lambda: consumer.commit(offsets=offsets, asynchronous=False), timeout_s)


class LagReaderProcess:
    """``read_lag`` in a long-lived child process, restarted after it dies.

    One request at a time over stdin/stdout as JSON lines. A crash or a silence longer than the
    deadline kills the child and raises LagReaderCrashedError; the next call starts a new one.
    """

    def __init__(self, answer_deadline_s: float | None = None) -> None:
        # Default: list_topics + committed + a watermark request per partition, each bounded.
        self.answer_deadline_s = answer_deadline_s
        self._child: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self.starts = 0  # child processes started so far: more than one means a restart

    def read_lag(
        self, client_config: dict[str, Any], group_id: str, topic: str, timeout_s: float
    ) -> list[PartitionLag]:
        request = {
            "config": client_config,
            "group": group_id,
            "topic": topic,
            "timeout_s": timeout_s,
        }
        deadline_s = self.answer_deadline_s or timeout_s * 6 + 10
        with self._lock:
            child = self._ensure_child()
            answer = self._exchange(child, json.dumps(request), deadline_s)
        if "error" in answer:
            error = (
                KafkaUnavailableError if answer["kind"] == "unavailable" else LagReaderCrashedError
            )
            raise error(answer["error"])
        return [PartitionLag(**row) for row in answer["lags"]]

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _ensure_child(self) -> subprocess.Popen[str]:
        if self._child is None or self._child.poll() is not None:
            self.starts += 1
            self._child = subprocess.Popen(
                [sys.executable, "-m", "arbitrage.clients.kafka_offsets"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self._child

    def _exchange(self, child: subprocess.Popen[str], line: str, deadline_s: float) -> dict:
        assert child.stdin is not None and child.stdout is not None
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(child.stdout.readline()))
        try:
            child.stdin.write(line + "\n")
            child.stdin.flush()
        except BrokenPipeError:
            pass  # it died already: the read below sees EOF and reports the exit code
        reader.start()
        reader.join(deadline_s)
        if reader.is_alive() or not answer or not answer[0]:
            silent = reader.is_alive()
            self._stop()
            reader.join(5)
            why = (
                f"did not answer within {deadline_s:.0f}s"
                if silent
                else f"died with exit code {child.returncode}"
            )
            raise LagReaderCrashedError(
                f"the process reading Kafka offsets {why}; a fresh one is started on the next call"
            )
        return json.loads(answer[0])

    def _stop(self) -> None:
        if self._child is not None:
            if self._child.poll() is None:
                self._child.kill()
            self._child.wait()
            self._child = None


def _serve() -> None:
    """Child side: answer one JSON request per line until stdin closes."""
    for line in sys.stdin:
        request = json.loads(line)
        try:
            lags = read_lag(
                request["config"], request["group"], request["topic"], request["timeout_s"]
            )
            answer: dict[str, Any] = {"lags": [asdict(lag) for lag in lags]}
        except KafkaUnavailableError as exc:
            answer = {"error": str(exc), "kind": "unavailable"}
        except Exception as exc:
            answer = {"error": f"reading offsets failed: {exc!r}", "kind": "failed"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
