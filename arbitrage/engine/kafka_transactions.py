"""Kafka transactions for the stages: a batch's outputs, dead letters and source offset commit
together or not at all (docs/design.md, "Delivery").

One transactional producer per (consumer group, source topic, partition): its
``transactional.id`` names that partition's work, so a second run of the same partition fences
the first (the broker refuses the older producer from then on, and aborts what it had open).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, NoReturn

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from arbitrage.clients.kafka import CheckedProducer, DeliveryError, DeliveryReport

# Answers that mean another producer with our transactional.id has taken over.
_FENCED = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}
COMMIT_ATTEMPTS = 5
# How long past its own timeout a transactional call may block before the run gives up on it.
OVERDUE_GRACE_S = 15.0


class FencedError(RuntimeError):
    """A newer run of the same partition took over; this run stopped without committing."""


class TransactionFailedError(RuntimeError):
    """A transaction was aborted; nothing of its batch is visible or committed."""


def transactional_id(group: str, topic: str, partition: int) -> str:
    """The id that makes one partition's work single-writer: the group (so live runs and
    replays never fence each other), the source topic and the partition."""
    return f"{group}:{topic}:{partition}"


def returns_within(step: Callable[[], object], seconds: float, name: str) -> bool:
    """Run ``step`` in a daemon thread and wait at most ``seconds`` for it: False when it is
    still running then (it is left to finish or hang on its own); its exception is raised here."""
    raised: list[BaseException] = []

    def call() -> None:
        try:
            step()
        except BaseException as exc:  # handed to the waiting thread as it is
            raised.append(exc)

    worker = threading.Thread(target=call, name=name, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        return False
    if raised:
        raise raised[0]
    return True


class TransactionalProducer(CheckedProducer):
    """A ``CheckedProducer`` whose messages become visible only when ``commit`` succeeds.

    A transaction begins with the first message (or the commit) after the previous one ended,
    so a processor produces exactly as it would without transactions.
    """

    def __init__(self, config: dict[str, Any], txn_id: str, timeout_s: float = 30.0) -> None:
        self._fatal: KafkaError | None = None
        super().__init__({**config, "transactional.id": txn_id, "error_cb": self._on_error})
        self.txn_id = txn_id
        self.timeout_s = timeout_s
        self._open = False
        # Set when a call never returned: the client is stuck in it, so nothing more is asked.
        self._stuck: str | None = None
        # A transaction being committed by commit_in_background; nothing else may use the
        # producer until it has ended.
        self._committing: Future[DeliveryReport] | None = None
        # Fences any older producer with this id and aborts what it left open.
        self._call(lambda: self._producer.init_transactions(timeout_s), "start transactions")

    def produce_many(
        self,
        topic: str,
        messages: Iterable[tuple[str | bytes | None, bytes]],
        headers: dict[str, bytes] | None = None,
    ) -> None:
        # ``produce`` comes here too (CheckedProducer): the first message opens a transaction.
        self._begin()
        with self._kafka_errors("produce"):
            super().produce_many(topic, messages, headers)

    def commit(
        self,
        consumer: Consumer,
        offsets: list[TopicPartition],
        on_step: Callable[[str], None] = lambda step: None,
    ) -> DeliveryReport:
        """Deliver the open transaction's messages and commit them with ``offsets`` for
        ``consumer``'s group, atomically; returns what the transaction delivered. Raises (after
        aborting) if that cannot be done. ``on_step`` hears "after_flush", "before_commit" and
        "after_commit" (the fault suite's kill points)."""
        self._wait_for_commit()
        return self._commit(consumer, offsets, on_step)

    def _commit(
        self,
        consumer: Consumer,
        offsets: list[TopicPartition],
        on_step: Callable[[str], None],
    ) -> DeliveryReport:
        self._begin_now()
        try:
            with self._kafka_errors("deliver the batch"):
                self.flush(self.timeout_s)  # every delivery report checked: failures raise
        except DeliveryError:
            self._abort_now()
            raise
        on_step("after_flush")
        group = consumer.consumer_group_metadata()
        self._call(
            lambda: self._producer.send_offsets_to_transaction(offsets, group, self.timeout_s),
            "add the source offsets to the transaction",
        )
        on_step("before_commit")
        self._call(lambda: self._producer.commit_transaction(self.timeout_s), "commit")
        self._open = False
        # Every delivery report of the transaction was served by the flush above.
        delivered, self.report = self.report, DeliveryReport()
        on_step("after_commit")
        return delivered

    def commit_in_background(
        self,
        consumer: Consumer,
        offsets: list[TopicPartition],
        on_step: Callable[[str], None] = lambda step: None,
    ) -> Future[DeliveryReport]:
        """``commit`` on a thread of its own, so the caller can go on preparing the next batch
        (enriching, indexing) during the round trips. The producer's next use (``produce``,
        ``commit``, ``abort``) waits for it to end and raises its failure; the future says the
        same to whoever counts the batch as committed."""
        self._wait_for_commit()
        future: Future[DeliveryReport] = Future()

        def run() -> None:
            try:
                future.set_result(self._commit(consumer, offsets, on_step))
            except BaseException as exc:  # handed to the waiting thread as it is
                future.set_exception(exc)

        self._committing = future
        threading.Thread(target=run, name="kafka-txn-commit", daemon=True).start()
        return future

    def _wait_for_commit(self) -> None:
        committing, self._committing = self._committing, None
        if committing is not None:
            committing.result()

    def abort(self) -> None:
        """Abort the open transaction, if any (best effort: a fenced producer cannot)."""
        with contextlib.suppress(Exception):
            self._wait_for_commit()  # its failure was (or will be) raised to its caller
        self._abort_now()

    def _abort_now(self) -> None:
        # Also called on the committing thread, which must not wait for itself.
        if not self._open or self._stuck is not None:
            return
        self._open = False
        # Fenced or fatal: the broker aborts it on its own (the fencing run, or the timeout).
        with contextlib.suppress(KafkaException, TransactionFailedError):
            self._bounded(lambda: self._producer.abort_transaction(self.timeout_s), "abort")

    def _begin(self) -> None:
        self._wait_for_commit()
        self._begin_now()

    def _begin_now(self) -> None:
        if not self._open:
            self._call(self._producer.begin_transaction, "begin a transaction")
            self._open = True

    def _call(self, step: Any, what: str) -> None:
        """Run one transactional step: retried while the error is retriable; aborted and
        raised when the transaction cannot go on; a fenced producer raises FencedError."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self._bounded(step, what)
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.retriable() and attempt < COMMIT_ATTEMPTS:
                    time.sleep(min(0.2 * 2**attempt, 2.0))
                    continue
                self._fail(error, what)

    def _bounded(self, step: Callable[[], object], what: str) -> None:
        """Run a blocking transactional call, but never wait on it much past its timeout.

        librdkafka can block in a transactional call past the timeout it was given: measured
        here, ``send_offsets_to_transaction`` waited forever for the group coordinator after
        the only broker was killed and restarted (librdkafka issues 5456 and 5511; the
        2.16.0 we run still has it). The call runs in a daemon thread; when it is overdue the run
        fails without committing, and the transaction it left open is aborted by the next
        run's ``init_transactions`` (or the broker's transaction timeout).
        """
        if self._stuck is not None:
            raise TransactionFailedError(
                f"could not {what} for transactional id {self.txn_id!r}: the Kafka client is "
                f"still stuck in an earlier call ({self._stuck}); nothing of the batch was "
                "committed"
            )
        if not returns_within(step, self.timeout_s + OVERDUE_GRACE_S, f"kafka-txn-{what}"):
            self._stuck = what
            self._open = False
            raise TransactionFailedError(
                f"could not {what} for transactional id {self.txn_id!r}: the Kafka client did "
                f"not return within {self.timeout_s + OVERDUE_GRACE_S:.0f}s (its own timeout "
                f"is {self.timeout_s:.0f}s; a broker or coordinator is unreachable); nothing of "
                "the batch was committed"
            )

    @contextlib.contextmanager
    def _kafka_errors(self, what: str) -> Iterator[None]:
        """Translate the client's errors raised inside the block (see ``_fail``)."""
        try:
            yield
        except KafkaException as exc:
            self._fail(exc.args[0], what)
        except SystemError as exc:
            # A fatal error (e.g. fenced) met inside poll()/flush() can surface from the C
            # extension as a bare SystemError; the error callback has heard the real one.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, KafkaException):
                self._fail(cause.args[0], what)
            self._producer.poll(0)  # serves the error callback if it has not run yet
            if self._fatal is not None:
                self._fail(self._fatal, what)
            try:  # the transaction's state says why: a fenced producer cannot abort either
                self._bounded(lambda: self._producer.abort_transaction(self.timeout_s), "abort")
            except KafkaException as state:
                self._fail(state.args[0], what)
            self._open = False
            raise

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error

    def _fail(self, error: KafkaError, what: str) -> NoReturn:
        """Raise what ``error`` means for the run, after aborting where that is still possible."""
        if error.code() in _FENCED:
            self._open = False
            raise FencedError(
                f"transactional id {self.txn_id!r} was taken over by a newer run of the same "
                f"partition while this run tried to {what}; this run stopped and committed "
                "nothing of its current batch (the newer run carries on)"
            ) from None
        if error.txn_requires_abort():
            self._abort_now()
        raise TransactionFailedError(
            f"could not {what} for transactional id {self.txn_id!r}: {error.str()}; "
            "nothing of the batch was committed"
        ) from None
