"""Alert delivery, the pure part: the event rule, filters, the webhook's body and signature,
the e-mail's Message-ID, and when to retry.

The notifications stage (arbitrage/engine/processors.py, ``NotificationsProcessor``) reads
``arbitrage.alerts`` and hands each event to every channel whose filter passes it; the network
code is in arbitrage/clients/notify.py, the channels file in notifications_config.py. Nothing
here reads the environment or opens a socket.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.notifications_config import (
    EVENT_KINDS,
    ChannelFilter,
    RetryPolicy,
)

# An event's ASIN: fullmatch, never ``$`` (which also matches before a trailing newline).
ASIN = re.compile(r"[A-Z0-9]{10}")
# Event, alert and opportunity ids: visible ASCII, spaces only inside. Each is part of a document
# id, an HTTP header and an e-mail header, which refuse line breaks; ASCII keeps bytes = chars.
MAX_ID_CHARS = 200
EVENT_ID = re.compile(rf"[!-~](?:[ -~]{{0,{MAX_ID_CHARS - 2}}}[!-~])?")
# Elasticsearch refuses longer document ids.
MAX_DOCUMENT_ID_BYTES = 512

SIGNATURE_HEADER = "X-Arbitrage-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Arbitrage-Event"
TIMESTAMP_HEADER = "X-Arbitrage-Timestamp"  # Unix seconds when the request was signed
# How far from its own clock a receiver should accept a signed timestamp; it keeps the keys it
# has seen at least this long, so a replay is either too old or a known key.
REPLAY_WINDOW_S = 300
# HTTP answers worth another attempt: the receiver is busy or briefly broken, not refusing.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class NotAnEventError(ValueError):
    """A message on the alerts topic that is not an alert event (→ the DLQ with this reason)."""


@dataclass(frozen=True)
class AlertEvent:
    """One message of the alerts topic under the event rule (``alert_event``)."""

    event: str
    event_id: str
    alert_id: str
    asin: str
    message: dict[str, Any] = field(repr=False)  # as received, with ``event``/``event_id`` set


# --- events ----------------------------------------------------------------------------------


def alert_event(message: dict[str, Any]) -> AlertEvent:
    """The one owner of the event rule: a message without ``event`` is an ``opened`` event (the
    alerts from before the opportunity lifecycle), one without ``event_id`` is identified by its
    ``alert_id`` (each alert id is raised once, so it is unique per event too).

    Strict, because every field read here ends up somewhere that refuses or misreads hostile
    text: ids in document ids (512 bytes), HTTP and e-mail headers (no line breaks), the ASIN
    and the route in a subject line. A message that breaks the rule is dead-lettered with the
    reason before anything of its batch is delivered.
    """
    alert_id = _id_field(message, "alert_id", "the message")
    where = f"alert {alert_id}"
    asin = message.get("asin")
    if asin is None or asin == "":
        raise NotAnEventError(f"{where} has no asin")
    if not isinstance(asin, str) or not ASIN.fullmatch(asin):
        raise NotAnEventError(f"{where}: asin must be 10 characters A-Z, 0-9 (got {_shown(asin)})")
    event = message.get("event", "opened")
    if event not in EVENT_KINDS:
        raise NotAnEventError(f"{where}: unknown event {_shown(event)}")
    event_id = _id_field(message, "event_id", where) if "event_id" in message else alert_id
    if message.get("opportunity_id") is not None:
        _id_field(message, "opportunity_id", where)
    for key in ("buy_market", "sell_market"):
        market = message.get(key)
        if not isinstance(market, str) or market not in MARKETPLACES:
            raise NotAnEventError(
                f"{where}: {key} must be one of {', '.join(sorted(MARKETPLACES))} "
                f"(got {_shown(market)})"
            )
    for key, types in _OPTIONAL_TYPES.items():
        value = message.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            raise NotAnEventError(f"{where}: {key} has the wrong type ({type(value).__name__})")
    return AlertEvent(
        event, event_id, alert_id, asin, {**message, "event": event, "event_id": event_id}
    )


# Fields the messages are made of, when present: anything else is refused, not guessed at.
_OPTIONAL_TYPES: dict[str, type | tuple[type, ...]] = {
    "title": str,
    "profit_eur_cents": int,
    "roi": (int, float),
    "detected_at": str,
    "buy_price": dict,
    "sell_price": dict,
}


def _id_field(message: dict[str, Any], key: str, where: str) -> str:
    value = message.get(key)
    if value is None or value == "":
        raise NotAnEventError(f"{where} has no {key}")
    if not isinstance(value, str) or not EVENT_ID.fullmatch(value):
        raise NotAnEventError(
            f"{where}: {key} must be a string of 1-{MAX_ID_CHARS} visible ASCII characters "
            f"(spaces inside allowed), got {_shown(value)}"
        )
    return value


def _shown(value: Any) -> str:
    """A hostile value as a reason shows it: its repr, cut (a reason is no place for 256 KiB)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}... ({len(text)} characters)"


def filtered_out(channel_filter: ChannelFilter, event: AlertEvent) -> str | None:
    """Why the channel does not get the event (a short counter name), or None when it does."""
    message = event.message
    if event.event not in channel_filter.events:
        return "event"
    route = (message.get("buy_market"), message.get("sell_market"))
    if channel_filter.routes and route not in channel_filter.routes:
        return "route"
    if channel_filter.buy_markets and route[0] not in channel_filter.buy_markets:
        return "route"
    if channel_filter.sell_markets and route[1] not in channel_filter.sell_markets:
        return "route"
    if event.event == "closed":
        return None  # a closed event may carry no figures; its thresholds held when it opened
    profit = message.get("profit_eur_cents")
    minimum = channel_filter.min_profit_eur_cents
    if minimum and (not isinstance(profit, int) or profit < minimum):
        return "profit"
    roi = message.get("roi")
    min_roi = channel_filter.min_roi
    if min_roi is not None and (not isinstance(roi, int | float) or roi < min_roi):
        return "roi"
    return None


def delivery_id(channel: str, event_id: str) -> str:
    """The delivery's document id in ``alert-deliveries``: one per (channel, event).

    ``<channel>:<event_id>``, which the event rule keeps within 241 bytes; an id Elasticsearch
    would refuse (over 512 bytes) becomes ``<channel>:sha256:<hex>`` instead, so no event can
    make its delivery unrecordable (such an id was never stored, so no earlier record is lost).
    """
    plain = f"{channel}:{event_id}"
    if len(plain.encode()) <= MAX_DOCUMENT_ID_BYTES:
        return plain
    return f"{channel}:sha256:{hashlib.sha256(event_id.encode()).hexdigest()}"


# --- what is sent ----------------------------------------------------------------------------


def webhook_body(event: AlertEvent) -> bytes:
    """The exact bytes POSTed (and signed): the event as received, ``event``/``event_id`` set."""
    return json.dumps(event.message, sort_keys=True, separators=(",", ":")).encode()


def signed_bytes(timestamp: int, key: str, body: bytes) -> bytes:
    """What the signature covers: ``<timestamp>.<Idempotency-Key>.<body>``. The timestamp lets
    a receiver refuse a replayed request after its window; the key binds the body to the id
    the receiver deduplicates by, so neither can be swapped under a valid signature."""
    return f"{timestamp}.{key}.".encode() + body


def signature(secret: bytes, timestamp: int, key: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of signed_bytes>``: the X-Arbitrage-Signature header's value."""
    return (
        "sha256=" + hmac.new(secret, signed_bytes(timestamp, key, body), hashlib.sha256).hexdigest()
    )


def signature_valid(
    secret: bytes,
    body: bytes,
    key: str,
    timestamp_header: str,
    signature_header: str,
    now: float,
    window_s: int = REPLAY_WINDOW_S,
) -> bool:
    """What a receiver does (docs/security.md, *Notifications*): the timestamp within
    ``window_s`` of its own clock, then a constant-time compare. The tests' receivers use it."""
    if not timestamp_header.isascii() or not timestamp_header.isdigit():
        return False
    timestamp = int(timestamp_header)
    if abs(now - timestamp) > window_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, key, body), signature_header)


def _money(price: Any) -> str:
    if isinstance(price, dict) and isinstance(price.get("amount"), int):
        return f"{price['amount'] / 100:.2f} {price.get('currency', '')}".strip()
    return "?"


def message_text(event: AlertEvent, chat: bool = False) -> tuple[str, str]:
    """Title and body of a chat message or e-mail (plain text). The event's free text (the
    product title, ids, a currency, a date) is put on one line (``one_line``) and, for a chat
    message, made inert (``chat_safe``)."""
    m = event.message

    def outside(value: object, limit: int) -> str:
        text = one_line(value, limit)
        return chat_safe(text) if chat else text

    route = f"{m['buy_market']}→{m['sell_market']}"
    profit = m.get("profit_eur_cents")
    profit_text = f"{profit / 100:.2f} EUR" if isinstance(profit, int) else "?"
    roi = m.get("roi")
    roi_text = f"{roi:.0%}" if isinstance(roi, int | float) else "?"
    title = f"[{event.event}] {event.asin} {route}: +{profit_text} ({roi_text})"
    event_id, alert_id = (outside(i, MAX_ID_CHARS) for i in (event.event_id, event.alert_id))
    body = "\n".join(
        [
            outside(m.get("title") or event.asin, TITLE_CHARS),
            f"ASIN {event.asin}, route {route} ({event.event})",
            f"buy {outside(_money(m.get('buy_price')), 40)}, "
            f"sell {outside(_money(m.get('sell_price')), 40)}",
            f"profit {profit_text}, ROI {roi_text}",
            f"detected {outside(m.get('detected_at', '?'), 40)}",
            f"event {event_id} (alert {alert_id})",
        ]
    )
    return title, body


# Longest product title shown in a message (Keepa's are up to a few hundred characters).
TITLE_CHARS = 300
# Control and format characters: line breaks, bidi overrides, zero-width joiners and spaces.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def one_line(value: object, limit: int) -> str:
    """Text from outside, safe on one line: control and format characters become spaces (a
    line break must not start a new line of the message, nor a bidi override reverse it), runs
    of spaces one, at most ``limit`` characters."""
    text = "".join(" " if unicodedata.category(c) in _INVISIBLE else c for c in str(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# What chat services read as markup with an effect beyond looks: mentions (@everyone, @here,
# Slack's <!channel>, Discord's <@id>), links and images whose shown text hides their target
# ([text](url), ![alt](url), <url|text>), HTML tags. Each becomes a look-alike that is only text.
_CHAT_INERT = str.maketrans({"@": "＠", "<": "‹", ">": "›", "[": "［", "]": "］"})


def chat_safe(text: str) -> str:
    """A chat message's text with no mention, link or tag left in it (``_CHAT_INERT``)."""
    return text.translate(_CHAT_INERT)


def email_message_id(event_id: str, domain: str = "arbitrage.invalid") -> str:
    """A Message-ID fixed by the event: a resent e-mail is recognisably the same message."""
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:32]
    return f"<alert-{digest}@{domain}>"


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): traffic that never leaves the
    machine, the only place a password may cross without TLS."""
    name = host.strip().rstrip(".").lower().strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def plaintext_login_problem(host: str, tls: bool) -> str | None:
    """Why logging in to ``host`` must not happen (a password in the clear), or None."""
    if tls or is_loopback(host):
        return None
    return (
        f"refused to log in to {host} without TLS (the server offered no STARTTLS): use "
        "smtps:// or a server that offers STARTTLS; only a loopback host may go without"
    )


# --- retries ---------------------------------------------------------------------------------


def backoff_s(attempt: int, policy: RetryPolicy) -> float:
    """The wait after failed attempt ``attempt`` (1-based): base·2^(attempt-1), capped."""
    return min(policy.backoff_cap_s, policy.backoff_base_s * 2 ** (attempt - 1))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None
    when it is absent or unreadable; a date in the past is 0."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def next_wait_s(
    attempt: int, retry_after: float | None, elapsed_s: float, policy: RetryPolicy
) -> float | None:
    """How long to wait before attempt ``attempt + 1``, or None to give up: attempts used up,
    or the wait plus one more request's timeout would pass the delivery's bound."""
    if attempt >= policy.max_attempts:
        return None
    wait = backoff_s(attempt, policy)
    if retry_after is not None:
        wait = min(max(wait, retry_after), policy.retry_after_cap_s)
    if elapsed_s + wait + policy.timeout_s > policy.max_total_s + 1e-9:
        return None
    return wait if math.isfinite(wait) else None
