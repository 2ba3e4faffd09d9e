"""The daily digest, the network part: read a day's top opportunities from the alerts index, and
send the digest to every channel that takes it, once per day and channel.

Once, as the notifications stage does it: before sending, the ``<channel>:digest:<day>``
documents of ``alert-deliveries`` are looked up (mget is realtime) and delivered ones skipped;
each delivery is recorded as soon as it is tried. A run killed between a send and its record
resends that one digest; the webhook's Idempotency-Key (``digest:<day>:<channel>``) and the
e-mail's Message-ID let the receiver drop it. The pure part is arbitrage/domain/digest.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from arbitrage.clients.elasticsearch import BulkOp, ElasticsearchClient
from arbitrage.clients.notify import DeliveryResult, Sender
from arbitrage.domain import topics
from arbitrage.domain.digest import (
    DIGEST_EVENT,
    PROFIT_SORT,
    Digest,
    closed_query,
    digest_delivery_id,
    digest_event_id,
    digest_rows,
    opened_query,
    top_query,
)
from arbitrage.domain.messages.timestamps import utc_now_iso

DELIVERED, FAILED, SKIPPED = "delivered", "failed", "skipped"


@dataclass(frozen=True)
class DigestDelivery:
    """What happened to the digest on one channel."""

    channel: str
    channel_type: str
    status: str  # delivered | failed | skipped (delivered by an earlier run)
    attempts: int = 0
    error: str = ""  # redacted by the sender


def read_digest(es: ElasticsearchClient, day: date, top_n: int) -> Digest:
    """The day's top ``top_n`` open opportunities and its opened / closed counts."""
    es.refresh(topics.ALERTS_INDEX)
    sources = es.search_sources(topics.ALERTS_INDEX, top_query(day), top_n, sort=PROFIT_SORT)
    return Digest(
        day=day,
        rows=digest_rows(sources, top_n),
        opened=es.count_matching(topics.ALERTS_INDEX, opened_query(day)),
        closed=es.count_matching(topics.ALERTS_INDEX, closed_query(day)),
    )


def send_digest(
    es: ElasticsearchClient, senders: Sequence[Sender], digest: Digest, png: bytes
) -> list[DigestDelivery]:
    """Send to each channel that takes the digest (``digest = true``, the default) and has not
    had this day's yet; record each try in ``alert-deliveries``."""
    wanted = [sender for sender in senders if sender.channel.digest]
    ids = {
        sender.channel.name: digest_delivery_id(sender.channel.name, digest.day)
        for sender in wanted
    }
    done = es.delivered_ids(topics.DELIVERIES_INDEX, list(ids.values()))
    outcomes = []
    for sender in wanted:
        channel = sender.channel
        if ids[channel.name] in done:
            outcomes.append(DigestDelivery(channel.name, channel.type, SKIPPED))
            continue
        result = sender.send_digest(digest, png)
        _record(es, ids[channel.name], channel.name, channel.type, digest.day, result)
        outcomes.append(
            DigestDelivery(
                channel.name,
                channel.type,
                DELIVERED if result.delivered else FAILED,
                result.attempts,
                result.error,
            )
        )
    return outcomes


def _record(
    es: ElasticsearchClient,
    doc_id: str,
    channel: str,
    channel_type: str,
    day: date,
    result: DeliveryResult,
) -> None:
    now = utc_now_iso()
    document = {
        "channel": channel,
        "channel_type": channel_type,
        "event_id": digest_event_id(day),
        "event": DIGEST_EVENT,
        "status": DELIVERED if result.delivered else FAILED,
        "attempts": result.attempts,
        "last_error": result.error or None,
        "delivered_at": now if result.delivered else None,
        "updated_at": now,
    }
    outcome = es.bulk_write([BulkOp("index", topics.DELIVERIES_INDEX, doc_id, document)])
    if outcome.rejected:
        raise RuntimeError(
            f"{topics.DELIVERIES_INDEX} refused delivery document {doc_id}: {outcome.rejected[0]}"
        )
