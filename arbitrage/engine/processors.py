"""What each stage does with a batch beyond the pure transform: its Elasticsearch writes and the
records it produces. One processor per stage; the runner drives them the same way.

A processor's ``start`` handles a batch's records; ``finish`` waits for what is still in flight
and produces the batch's outputs and dead letters. A pipelined processor's batch is finished
during the next batch's ``start`` (or at the end), so the runner commits it then; otherwise the
runner finishes and commits each batch at once.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from arbitrage.clients.elasticsearch import BulkOp, BulkOutcome
from arbitrage.clients.kafka import CheckedProducer
from arbitrage.clients.notify import DeliveryResult
from arbitrage.domain.lifecycle import OPEN, OPENED, Route, apply_batch, close_stale, committed_view
from arbitrage.domain.messages.codec import decode_json_object, encode
from arbitrage.domain.messages.timestamps import utc_now_iso
from arbitrage.domain.messages.types import EnrichedProduct
from arbitrage.domain.notifications import AlertEvent, alert_event, delivery_id, filtered_out
from arbitrage.domain.price_history import observation
from arbitrage.domain.stage_specs import ARBITRAGE, ENRICHMENT, NOTIFICATIONS
from arbitrage.domain.transforms import Rejected, SourceRecord, arbitrage_records, enrich_records
from arbitrage.engine.checkpoint import InFlight
from arbitrage.engine.dead_letters import check_reject_rate, produce_dead_letters
from arbitrage.engine.faults import reach
from arbitrage.engine.stage_setup import StageSetup
from arbitrage.engine.stats import StageStats

# On every output message: when the stage read the batch it came from (epoch ms, ASCII). With
# the source's and the output's Kafka timestamps it splits a record's latency into waiting to
# be read and being processed (bench/latency.py).
READ_AT_HEADER = "arbitrage-read-at-ms"
# The arbitrage stage's counters of routes the rules removed: filtered_<reason>.
FILTERED_PREFIX = "filtered_"
# The arbitrage stage's counters of the events it published: events_opened, _updated, _closed.
EVENTS_PREFIX = "events_"
# The enrichment stage's counters of price observations (arbitrage/domain/price_history.py).
OBSERVATIONS_INDEXED = "price_observations_indexed"
OBSERVATIONS_UNCHANGED = "price_observations_unchanged"
# The notifications stage's counters, per channel: <outcome>:<channel>.
DELIVERY_OUTCOMES = ("delivered", "failed", "skipped", "filtered")


def read_at_header() -> dict[str, bytes]:
    return {READ_AT_HEADER: str(int(time.time() * 1000)).encode()}


class BatchProcessor(ABC):
    """One stage's writes for one partition range; the runner drives every stage's the same."""

    pipelined: ClassVar[bool] = False
    # Whether the next batch may be prepared while this one's transaction commits
    # (arbitrage/engine/checkpoint.py, ``Checkpoint.commit``).
    commits_in_background: ClassVar[bool] = False

    def __init__(
        self, setup: StageSetup, producer: CheckedProducer, group_id: str, partition: int
    ) -> None:
        self.setup = setup
        self.spec, self.es, self.fees = setup.spec, setup.es, setup.fees
        self.rules, self.channels, self.faults = setup.rules, setup.channels, setup.faults
        self.write_chunk_size = setup.write_chunk_size
        self.max_reject_ratio = setup.max_reject_ratio
        self.producer = producer
        self.group_id, self.partition = group_id, partition

    @abstractmethod
    def start(
        self, records: list[SourceRecord], stats: StageStats, previous: InFlight | None
    ) -> InFlight: ...

    def finish(self, batch: InFlight, stats: StageStats) -> None:  # noqa: B027 - optional hook
        """Wait for the batch's writes and produce its outputs (nothing left by default)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the processor holds (nothing by default)."""


@dataclass(frozen=True)
class _EnrichedChunk:
    """One bulk request of the enrichment stage: the products' ops first, one per product, then
    their price observations' ops (the pull's, at most one per product, then those of Keepa's
    history, any number per product), ``owners[i]`` the product of observation op ``i``."""

    products: list[tuple[SourceRecord, EnrichedProduct, bytes]]
    owners: list[int]


def split_outcome(outcome: BulkOutcome, first: int) -> tuple[BulkOutcome, BulkOutcome]:
    """One bulk answer as two: ops ``[0, first)`` and the rest (positions renumbered from 0).
    Retries (counted per attempt, not per op) stay with the first part."""
    head = BulkOutcome(
        rejected={p: r for p, r in outcome.rejected.items() if p < first},
        conflicts=[p for p in outcome.conflicts if p < first],
        retries=outcome.retries,
    )
    tail = BulkOutcome(
        rejected={p - first: r for p, r in outcome.rejected.items() if p >= first},
        conflicts=[p - first for p in outcome.conflicts if p >= first],
    )
    head.unchanged, tail.unchanged = len(head.conflicts), len(tail.conflicts)
    head.written = first - head.unchanged - len(head.rejected)
    tail.written = outcome.written - head.written
    return head, tail


class EnrichmentProcessor(BatchProcessor):
    """Enrichment is CPU-bound Python and indexing is Elasticsearch's work, so the two overlap.

    A batch is enriched in chunks of ``write_chunk_size``, each chunk handed to a writer thread
    that sends its bulk request and waits for the answer (the GIL is free while it waits) while
    this thread enriches the next chunk. Batches overlap the same way: batch k's last writes are
    still being indexed, and its messages delivered, while batch k+1 is enriched; k is committed
    after that. The commit rule is unchanged: a batch's offset moves only once all its bulk
    items are acknowledged and all its messages (products and dead letters) are delivered, and
    nothing of a batch is produced unless every one of its bulk requests succeeded.
    """

    pipelined = True
    commits_in_background = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        (self.history_index,) = (side.name for side in self.spec.side_indices)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="es-bulk")

    def start(
        self, records: list[SourceRecord], stats: StageStats, previous: InFlight | None
    ) -> InFlight:
        """Enrich the batch chunk by chunk and queue the chunks' bulk writes.

        ``previous`` (the batch before, if any) is finished after the first chunk: by then its
        last bulk request has been answered while that chunk was being enriched.
        """
        stats.count_in(records)
        batch = InFlight(records[-1].offset + 1, len(records), headers=read_at_header())
        for start in range(0, len(records), self.write_chunk_size):
            chunk = records[start : start + self.write_chunk_size]
            enriched = enrich_records(chunk, self.fees, int(time.time() * 1000))
            batch.rejected += enriched.rejected
            # Encoded once: the same bytes are the bulk source and the Kafka value.
            encoded = [(record, product, encode(product)) for record, product in enriched.products]
            ops = [
                BulkOp("index", self.spec.index, p["asin"], value, p["source_timestamp_ms"])
                for _, p, value in encoded
            ]
            # In the same request: the prices of this pull, once per (ASIN, pull).
            owners: list[int] = []
            for owner, (_, product, _) in enumerate(encoded):
                seen = observation(product)
                if seen is not None:
                    ops.append(BulkOp("create", self.history_index, seen[0], encode(seen[1])))
                    owners.append(owner)
            # ... and the points of Keepa's history the pull asked for, once per (ASIN, time).
            for owner, history in enumerate(enriched.history):
                for point_id, document in history:
                    ops.append(BulkOp("create", self.history_index, point_id, encode(document)))
                    owners.append(owner)
            chunk_writes = _EnrichedChunk(encoded, owners)
            batch.writes.append((chunk_writes, self._writer.submit(self.es.bulk_write, ops)))
            if previous is not None:
                self.finish(previous, stats)
                previous = None
            if any(f.done() and f.exception() is not None for _, f in batch.writes):
                break  # Elasticsearch already failed: finish() raises it for this batch
        return batch

    def finish(self, batch: InFlight, stats: StageStats) -> None:
        """Wait for the batch's bulk answers, then produce what was accepted and the DLQ."""
        outcomes = [future.result() for _, future in batch.writes]  # raises if ES failed
        reach(self.faults, self.spec.name, "after_bulk_ack")
        accepted: list[tuple[str, bytes]] = []
        es_rejected: list[Rejected] = []
        for (chunk, _), outcome in zip(batch.writes, outcomes, strict=True):
            products, history = split_outcome(outcome, len(chunk.products))
            stats.count_bulk(products)
            stats.count(OBSERVATIONS_INDEXED, history.written)
            stats.count(OBSERVATIONS_UNCHANGED, history.unchanged)
            # A product any of whose observations was refused is dead-lettered whole (its
            # redrive writes them all again, idempotently); the first refusal is its reason.
            refused: dict[int, str] = {}
            for p, reason in sorted(history.rejected.items()):
                refused.setdefault(chunk.owners[p], reason)
            for position, (record, product, value) in enumerate(chunk.products):
                if position in products.rejected:
                    es_rejected.append(Rejected(record, products.rejected[position]))
                elif position in refused:
                    reason = f"its price observation was refused: {refused[position]}"
                    es_rejected.append(Rejected(record, reason))
                else:
                    accepted.append((product["asin"], value))
        # Validation rejects first, then Elasticsearch's, each in record order.
        rejected = batch.rejected + es_rejected
        check_reject_rate(self.spec, rejected, batch.records, self.max_reject_ratio)
        self.producer.produce_many(self.spec.output_topic, accepted, batch.headers)
        produce_dead_letters(self.producer, self.spec, rejected, stats)

    def close(self) -> None:
        # After a failure, writes still queued are dropped: nothing past the last commit
        # counts, and the next run starts from there.
        self._writer.shutdown(wait=True, cancel_futures=True)


class ArbitrageProcessor(BatchProcessor):
    """Turn enriched products into opportunity events: opened, updated, closed
    (arbitrage/domain/lifecycle.py), each opportunity's current state in the alerts index.

    The run keeps the states of the ASINs it has seen (its partition's: the topics are keyed by
    ASIN), loading the others from Elasticsearch on first sight. Per batch: the lifecycle runs
    over the batch's records (and, on the live group, closes the opportunities whose data went
    stale), the changed states are indexed, then the events go out in the batch's transaction.

    Exactly once: each stored state names the batch that wrote it (``updated_by``) and keeps
    the state before that batch (``base``). A rerun that finds a state written at or after its
    committed offset builds on ``base`` (that batch's events were never published), so it makes
    the same events again, once. States are indexed with ``external_gte`` versions set to the
    run's start: a run that was fenced by a newer one (frozen, then thawed) is refused by
    Elasticsearch instead of overwriting the newer run's states.
    """

    # The watermark must move this much (data time) between two sweeps for stale opportunities.
    SWEEP_EVERY_MS = 60_000
    # At most this many stale opportunities closed per batch (the rest at the next batches).
    SWEEP_LIMIT = 2_000
    # ASINs per search for their stored states (30 routes each at most).
    LOAD_CHUNK = 300

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.states: dict[str, dict[Route, dict[str, Any]]] = {}
        self.run_version = int(time.time() * 1000)
        self.watermark_ms = -1
        self.swept_at_ms: int | None = None
        self.sweep_more = False
        self.refreshed = False
        self.live = self.group_id == self.spec.live_group

    def start(
        self, records: list[SourceRecord], stats: StageStats, previous: InFlight | None
    ) -> InFlight:
        stats.count_in(records)
        headers = read_at_header()
        if self.rules is None:
            raise ValueError(
                "the arbitrage stage needs its rules (ARBITRAGE_RULES_FILE, config/rules_none.toml "
                "for none); StageRunner was built without them"
            )
        batch = arbitrage_records(records, self.fees, self.rules, utc_now_iso())
        for reason, count in batch.filtered.items():
            stats.count(f"{FILTERED_PREFIX}{reason}", count)
        check_reject_rate(self.spec, batch.rejected, len(records), self.max_reject_ratio)
        first = records[0].offset
        self._load({routes.asin for routes in batch.routes}, first)
        lifecycle = apply_batch(batch.routes, self.states, self.rules.lifecycle, self.watermark_ms)
        events, changed = lifecycle.events, lifecycle.changed
        stats.count("records_already_seen", lifecycle.already_seen)
        stats.count("alerts_raised", 0)  # reported even when nothing opened
        if self._sweep_due(lifecycle.watermark_ms):
            swept = close_stale(
                self._stale(lifecycle.watermark_ms, first, changed),
                self.rules.lifecycle,
                lifecycle.watermark_ms,
            )
            events, changed = events + swept.events, {**changed, **swept.changed}
            stats.count("opportunities_swept_stale", len(swept.events))
        refused = self._store(changed, first, records[0], stats)
        reach(self.faults, self.spec.name, "after_bulk_ack")
        rejected = list(batch.rejected)
        for asin, reason in refused.items():
            # Its state was refused: none of its events may go out, and its records go to
            # the DLQ (a redrive runs them again from the state before).
            rejected += [
                Rejected(record, f"its opportunity state was refused: {reason}")
                for record, product in batch.products
                if product["asin"] == asin
            ]
        for event in events:
            if event["asin"] in refused:
                continue
            stats.count(f"{EVENTS_PREFIX}{event['event']}", 1)
            if event["event"] == OPENED:
                stats.count("alerts_raised", 1)
            self.producer.produce(self.spec.output_topic, event["asin"], encode(event), headers)
        produce_dead_letters(self.producer, self.spec, rejected, stats)
        # This run's view: what it stored (its transaction commits next, or the run fails).
        for state in changed.values():
            if state["asin"] not in refused:
                self.states.setdefault(state["asin"], {})[_route(state)] = state
        for asin in refused:
            self.states.pop(asin, None)  # loaded again from Elasticsearch if seen again
        self.watermark_ms = lifecycle.watermark_ms
        return InFlight(records[-1].offset + 1, len(records))

    def _load(self, asins: set[str], first_offset: int) -> None:
        """The committed states of the ASINs this run has not seen yet."""
        unseen = sorted(asin for asin in asins if asin not in self.states)
        if not unseen:
            return
        if not self.refreshed:
            # The previous run's last writes may not be searchable yet (1 s refresh).
            self.es.refresh(self.spec.index)
            self.refreshed = True
        for asin in unseen:
            self.states[asin] = {}
        for start in range(0, len(unseen), self.LOAD_CHUNK):
            chunk = unseen[start : start + self.LOAD_CHUNK]
            query = self._versions_query([{"terms": {"asin": chunk}}])
            for stored in self.es.search_sources(self.spec.index, query, 30 * len(chunk)):
                state = committed_view(stored, self.group_id, self.partition, first_offset)
                if state is not None:
                    self.states[state["asin"]][_route(state)] = state

    def _versions_query(self, clauses: list[dict[str, Any]]) -> dict[str, Any]:
        assert self.rules is not None
        return {
            "bool": {
                "filter": [
                    {"exists": {"field": "opportunity_id"}},
                    {"term": {"fee_model_version": self.fees.version}},
                    {"term": {"rules_version": self.rules.version}},
                    *clauses,
                ]
            }
        }

    def _sweep_due(self, watermark_ms: int) -> bool:
        if not self.live or watermark_ms < 0:
            return False
        due = (
            self.swept_at_ms is None
            or self.sweep_more
            or watermark_ms - self.swept_at_ms >= self.SWEEP_EVERY_MS
        )
        if due:
            self.swept_at_ms = watermark_ms
        return due

    def _stale(
        self, watermark_ms: int, first_offset: int, changed: dict[str, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """This partition's open opportunities whose data is older than the rules allow."""
        assert self.rules is not None
        cutoff = watermark_ms - self.rules.lifecycle.max_data_age_ms
        query = self._versions_query(
            [
                {"term": {"status": OPEN}},
                {"term": {"updated_by.partition": self.partition}},
                {"range": {"confirmed_source_ms": {"lt": cutoff}}},
            ]
        )
        self.es.refresh(self.spec.index)
        found = self.es.search_sources(self.spec.index, query, self.SWEEP_LIMIT)
        self.sweep_more = len(found) == self.SWEEP_LIMIT
        self._load({stored["asin"] for stored in found}, first_offset)
        stale: dict[str, dict[str, Any]] = {}
        for stored in found:
            # This run's own view (and this batch's changes) over what the search returned.
            mine = self.states.get(stored["asin"], {}).get(_route(stored))
            state = changed.get(stored["opportunity_id"], mine)
            if state is not None:
                stale[state["opportunity_id"]] = state
        return list(stale.values())

    def _store(
        self,
        changed: dict[str, dict[str, Any]],
        first_offset: int,
        first: SourceRecord,
        stats: StageStats,
    ) -> dict[str, str]:
        """Index the changed states; the ASINs whose state was refused, with the reason."""
        by = {
            "group": self.group_id,
            "topic": first.topic,
            "partition": self.partition,
            "offset": first_offset,
        }
        states = list(changed.values())
        ops = []
        for state in states:
            base = self.states.get(state["asin"], {}).get(_route(state))
            document = {**state, "updated_by": by, "base": base}
            ops.append(
                BulkOp(
                    "index",
                    self.spec.index,
                    state["opportunity_id"],
                    encode(document),
                    self.run_version,
                    "external_gte",
                )
            )
        outcome = self.es.bulk_write(ops)
        if outcome.conflicts:
            raise StateFencedError(
                f"{len(outcome.conflicts)} opportunity state(s) of partition {self.partition} "
                "were written by a newer run: this run was fenced and stops without committing"
            )
        stats.count("opportunity_states_written", outcome.written)
        return {states[p]["asin"]: reason for p, reason in outcome.rejected.items()}


class StateFencedError(RuntimeError):
    """A newer run of the partition has written opportunity states: this one must stop."""


def _route(state: dict[str, Any]) -> Route:
    return (state["buy_market"], state["sell_market"])


class NotificationsProcessor(BatchProcessor):
    """Deliver each alert event to every channel whose filter passes it, at most once each.

    Before sending, the batch's ``<channel>:<event_id>`` ids are looked up in the deliveries
    index (mget is realtime) and delivered ones skipped; each delivery is recorded right after
    it succeeds, not at the batch's end. So a run killed mid-batch resends at most the one
    delivery that was in flight (sent, not yet recorded); the webhook's Idempotency-Key and the
    e-mail's Message-ID let receivers drop that one. A delivery that still fails after its
    retries, or that its event made throw, is recorded ``failed`` and dead-lettered with the
    reason; so is an event whose delivery record Elasticsearch refused. A message that breaks
    the event rule (``alert_event``) is dead-lettered before anything of the batch is sent. The
    stage goes on; only Kafka or Elasticsearch failing stops it. The dead letters are produced
    at the batch's end, so the Kafka transaction stays open only for the commit, however long
    the deliveries took.
    """

    def start(
        self, records: list[SourceRecord], stats: StageStats, previous: InFlight | None
    ) -> InFlight:
        stats.count_in(records)
        if self.channels is None:
            raise ValueError(
                "the notifications stage needs its channels (ARBITRAGE_NOTIFICATIONS_FILE); "
                "StageRunner was built without them"
            )
        rejected: list[Rejected] = []
        events: list[tuple[SourceRecord, AlertEvent]] = []
        for record in records:
            try:
                events.append((record, alert_event(decode_json_object(record.value, "alert"))))
            except ValueError as exc:
                rejected.append(Rejected(record, str(exc)))
        check_reject_rate(self.spec, rejected, len(records), self.max_reject_ratio)
        wanted = []
        for sender in self.channels.senders:
            name = sender.channel.name
            for record, event in events:
                if filtered_out(sender.channel.filter, event) is not None:
                    stats.count(f"filtered:{name}", 1)
                else:
                    wanted.append((sender, record, event, delivery_id(name, event.event_id)))
        done = self.es.delivered_ids(self.spec.index, [item[3] for item in wanted])
        failed_in_a_row: dict[str, int] = {}
        breaker_after = self.channels.config.breaker_after
        for sender, record, event, doc_id in wanted:
            name = sender.channel.name
            if doc_id in done:
                stats.count(f"skipped:{name}", 1)
                continue
            if failed_in_a_row.get(name, 0) >= breaker_after:
                result = DeliveryResult(
                    False,
                    0,
                    f"not tried: the channel failed {breaker_after} deliveries in a row in this "
                    "batch",
                )
            else:
                result = sender.send(event)  # never raises: a failure is a result (notify.py)
            if result.delivered:
                reach(self.faults, self.spec.name, "after_send_before_record")
                failed_in_a_row[name] = 0
                done.add(doc_id)  # the same event twice in a batch is delivered once
            else:
                failed_in_a_row[name] = failed_in_a_row.get(name, 0) + 1
            refused = self._record(doc_id, name, sender.channel.type, record, event, result)
            if not result.delivered or refused:
                # One dead letter per (event, channel), with every reason it has.
                reasons = [] if result.delivered else [result.error]
                if refused:
                    sent = "delivered, but " if result.delivered else ""
                    reasons.append(f"{sent}its delivery record was refused: {refused}")
                why = "; ".join(reasons)
                rejected.append(Rejected(record, f"channel {name} ({sender.channel.type}): {why}"))
            stats.count(f"{'delivered' if result.delivered else 'failed'}:{name}", 1)
        produce_dead_letters(self.producer, self.spec, rejected, stats)
        return InFlight(records[-1].offset + 1, len(records))

    def _record(
        self,
        doc_id: str,
        channel: str,
        channel_type: str,
        record: SourceRecord,
        event: AlertEvent,
        result: DeliveryResult,
    ) -> str | None:
        """Record the delivery; the reason when Elasticsearch refused the document."""
        now = utc_now_iso()
        opportunity = event.message.get("opportunity_id")
        document = {
            "channel": channel,
            "channel_type": channel_type,
            "event_id": event.event_id,
            "alert_id": event.alert_id,
            "opportunity_id": opportunity if isinstance(opportunity, str) else None,
            "asin": event.asin,
            "event": event.event,
            "status": "delivered" if result.delivered else "failed",
            "attempts": result.attempts,
            "last_error": result.error or None,
            "delivered_at": now if result.delivered else None,
            "updated_at": now,
            "updated_by": {
                "group": self.group_id,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        }
        # Elasticsearch being down raises (the run fails, nothing commits); a refusal of this
        # one document is this event's (→ its dead letter says so), never the batch's.
        outcome = self.es.bulk_write([BulkOp("index", self.spec.index, doc_id, document)])
        return outcome.rejected[0] if outcome.rejected else None


_PROCESSORS: dict[str, type[BatchProcessor]] = {
    ENRICHMENT.name: EnrichmentProcessor,
    ARBITRAGE.name: ArbitrageProcessor,
    NOTIFICATIONS.name: NotificationsProcessor,
}


def build_processor(
    setup: StageSetup, producer: CheckedProducer, group_id: str, partition: int
) -> BatchProcessor:
    try:
        processor = _PROCESSORS[setup.spec.name]
    except KeyError:
        raise ValueError(
            f"stage {setup.spec.name!r} has no processor in arbitrage/engine/processors.py"
        ) from None
    return processor(setup, producer, group_id, partition)
