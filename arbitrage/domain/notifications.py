"""Alert delivery, the pure part: the channels file, the event rule, filters, the webhook's body
and signature, the e-mail's Message-ID, and when to retry.

The notifications stage (arbitrage/engine/processors.py, ``NotificationsProcessor``) reads
``arbitrage.alerts`` and hands each event to every channel whose filter passes it; the network
code is in arbitrage/clients/notify.py. Nothing here reads the environment or opens a socket:
secrets are named in the file (``secret_env``, ``url_env``) and resolved by the resource.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

from arbitrage.domain.config_files import read_toml
from arbitrage.domain.fee_config import REPO_ROOT
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.redaction import secure_endpoint_problem

DEFAULT_NOTIFICATIONS_FILE = REPO_ROOT / "config" / "notifications.toml"
# Named in error messages: the setting that points at another channels file.
NOTIFICATIONS_FILE_ENV = "ARBITRAGE_NOTIFICATIONS_FILE"

EventKind = Literal["opened", "updated", "closed"]
EVENT_KINDS: tuple[str, ...] = ("opened", "updated", "closed")
ChannelType = Literal["webhook", "apprise", "email"]
CHANNEL_TYPES: tuple[str, ...] = ("webhook", "apprise", "email")
# A channel's name is part of its deliveries' document ids (``<channel>:<event_id>``).
_CHANNEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ROUTE = re.compile(r"([A-Z]{2})->([A-Z]{2})")
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


class NotificationsConfigError(ValueError):
    """The channels file is missing, malformed or names an unknown setting."""


class NotAnEventError(ValueError):
    """A message on the alerts topic that is not an alert event (→ the DLQ with this reason)."""


@dataclass(frozen=True)
class ChannelFilter:
    """Which events a channel gets; every set condition must hold."""

    min_profit_eur_cents: int = 0
    min_roi: float | None = None
    routes: frozenset[tuple[str, str]] = frozenset()  # empty: every route
    buy_markets: frozenset[str] = frozenset()
    sell_markets: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset({"opened"})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one delivery tries: attempts, capped exponential backoff, ``Retry-After`` honoured
    up to a cap, a timeout per request and a bound on the whole delivery."""

    max_attempts: int = 4
    timeout_s: float = 5.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 10.0
    retry_after_cap_s: float = 30.0
    max_total_s: float = 30.0


@dataclass(frozen=True)
class Channel:
    name: str
    type: ChannelType
    filter: ChannelFilter
    retry: RetryPolicy
    url: str = ""  # webhook: the receiver's address (no credentials in it), or …
    secret_env: str = ""  # webhook: the variable holding the HMAC secret
    url_env: str = ""  # … the variable holding the URL (apprise, email: always; it has secrets)
    digest: bool = True  # gets the daily digest (arbitrage/domain/digest.py) besides its events
    ca_file: str = ""  # email: a PEM file of CAs to verify the server by (default: the system's)


@dataclass(frozen=True)
class NotificationsConfig:
    path: str
    channels: tuple[Channel, ...] = ()
    # After this many failed deliveries in a row on one channel, the rest of the batch's events
    # for it fail at once (→ DLQ): a dead receiver costs a few bounded deliveries, not a batch.
    breaker_after: int = 3

    @property
    def secret_variables(self) -> tuple[str, ...]:
        """Every environment variable the channels read."""
        names = (name for c in self.channels for name in (c.url_env, c.secret_env))
        return tuple(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class AlertEvent:
    """One message of the alerts topic under the event rule (``alert_event``)."""

    event: str
    event_id: str
    alert_id: str
    asin: str
    message: dict[str, Any] = field(repr=False)  # as received, with ``event``/``event_id`` set


# --- the channels file -----------------------------------------------------------------------


def load_notifications_config(
    path: str | os.PathLike[str] = DEFAULT_NOTIFICATIONS_FILE,
) -> NotificationsConfig:
    """Read and check a channels file (by default config/notifications.toml)."""
    file = Path(path)
    data = read_toml(
        file,
        "notifications file",
        NOTIFICATIONS_FILE_ENV,
        NotificationsConfigError,
        " (config/notifications.toml has no channels enabled)",
    )
    return parse_notifications_config(data, str(file))


def parse_notifications_config(data: dict[str, Any], where: str) -> NotificationsConfig:
    _known(data, {"breaker_after", "defaults", "channel"}, where)
    breaker_after = _int(data, "breaker_after", 3, where, minimum=1)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise NotificationsConfigError(f"{where}: [defaults] must be a table")
    _known(defaults, {"retry", "filter"}, f"{where} [defaults]")
    raw_channels = data.get("channel", [])
    if not isinstance(raw_channels, list):
        raise NotificationsConfigError(f"{where}: channels are [[channel]] tables")
    channels: list[Channel] = []
    for position, raw in enumerate(raw_channels, 1):
        if not isinstance(raw, dict):
            raise NotificationsConfigError(f"{where}: [[channel]] {position} must be a table")
        channel = _channel(raw, defaults, f"{where} [[channel]] {position}")
        if channel is None:
            continue
        if any(other.name == channel.name for other in channels):
            raise NotificationsConfigError(
                f"{where}: two enabled channels are named {channel.name!r}; names must differ"
            )
        channels.append(channel)
    return NotificationsConfig(where, tuple(channels), breaker_after)


_CHANNEL_KEYS = {
    "name",
    "type",
    "enabled",
    "url",
    "secret_env",
    "url_env",
    "filter",
    "retry",
    "digest",
    "ca_file",
}


def _channel(raw: dict[str, Any], defaults: dict[str, Any], where: str) -> Channel | None:
    _known(raw, _CHANNEL_KEYS, where)
    name = raw.get("name")
    if not isinstance(name, str) or not _CHANNEL_NAME.fullmatch(name):
        raise NotificationsConfigError(
            f"{where}: name must be 1-40 characters of a-z, 0-9, '-', '_' (got {name!r})"
        )
    where = f"{where} ({name})"
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise NotificationsConfigError(f"{where}: enabled must be true or false")
    digest = raw.get("digest", True)
    if not isinstance(digest, bool):
        raise NotificationsConfigError(
            f"{where}: digest must be true or false (false: no daily digest on this channel), "
            f"got {digest!r}"
        )
    kind = raw.get("type")
    if kind not in CHANNEL_TYPES:
        raise NotificationsConfigError(
            f"{where}: type must be one of {', '.join(CHANNEL_TYPES)} (got {kind!r})"
        )
    if not enabled:
        return None
    url, secret_env, url_env, ca_file = "", "", "", ""
    if kind == "email" and "ca_file" in raw:
        ca_file = _str(raw, "ca_file", where)
    else:
        _absent(raw, "ca_file", where, "only e-mail channels take a CA file")
    if kind == "webhook":
        # The address in the file, or (when its path holds a token) in a variable it names.
        if ("url" in raw) == ("url_env" in raw):
            raise NotificationsConfigError(f"{where}: give a webhook either url or url_env")
        if "url" in raw:
            url = _str(raw, "url", where)
            problem = secure_endpoint_problem(url)
            if problem:
                raise NotificationsConfigError(f"{where}: url {problem}")
        else:
            url_env = _env_name(raw, "url_env", where)
        secret_env = _env_name(raw, "secret_env", where)
    else:
        _absent(raw, "url", where, "its URL carries credentials: name a variable in `url_env`")
        _absent(raw, "secret_env", where, "only webhooks are signed")
        url_env = _env_name(raw, "url_env", where)
    retry = _retry({**defaults.get("retry", {}), **raw.get("retry", {})}, f"{where} retry")
    filter_ = _filter({**defaults.get("filter", {}), **raw.get("filter", {})}, f"{where} filter")
    return Channel(name, kind, filter_, retry, url, secret_env, url_env, digest, ca_file)


def _filter(raw: dict[str, Any], where: str) -> ChannelFilter:
    keys = {"min_profit_eur_cents", "min_roi", "routes", "buy_markets", "sell_markets", "events"}
    _known(raw, keys, where)
    min_roi = raw.get("min_roi")
    if min_roi is not None and (isinstance(min_roi, bool) or not isinstance(min_roi, int | float)):
        raise NotificationsConfigError(f"{where}: min_roi must be a number such as 0.15")
    routes = set()
    for text in _str_list(raw, "routes", where):
        match = _ROUTE.fullmatch(text.strip().upper())
        if not match or not {match[1], match[2]} <= set(MARKETPLACES):
            raise NotificationsConfigError(
                f"{where}: routes: {text!r} is not BUY->SELL of known markets "
                f'({", ".join(sorted(MARKETPLACES))}), e.g. "DE->FR"'
            )
        routes.add((match[1], match[2]))
    events = _str_list(raw, "events", where) if "events" in raw else ["opened"]
    unknown = [e for e in events if e not in EVENT_KINDS]
    if unknown or not events:
        raise NotificationsConfigError(
            f"{where}: events must list some of {', '.join(EVENT_KINDS)} (got {events!r})"
        )
    return ChannelFilter(
        min_profit_eur_cents=_int(raw, "min_profit_eur_cents", 0, where, minimum=0),
        min_roi=None if min_roi is None else float(min_roi),
        routes=frozenset(routes),
        buy_markets=_markets(raw, "buy_markets", where),
        sell_markets=_markets(raw, "sell_markets", where),
        events=frozenset(events),
    )


def _retry(raw: dict[str, Any], where: str) -> RetryPolicy:
    default = RetryPolicy()
    _known(raw, set(RetryPolicy.__dataclass_fields__), where)
    policy = RetryPolicy(
        max_attempts=_int(raw, "max_attempts", default.max_attempts, where, minimum=1),
        **{
            name: _seconds(raw, name, getattr(default, name), where)
            for name in (
                "timeout_s",
                "backoff_base_s",
                "backoff_cap_s",
                "retry_after_cap_s",
                "max_total_s",
            )
        },
    )
    if policy.max_total_s < policy.timeout_s:
        raise NotificationsConfigError(
            f"{where}: max_total_s ({policy.max_total_s}) must be at least timeout_s "
            f"({policy.timeout_s}): one attempt must fit in the delivery's time"
        )
    return policy


def _known(raw: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(raw) - keys)
    if unknown:
        raise NotificationsConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(keys))}"
        )


def _absent(raw: dict[str, Any], key: str, where: str, why: str) -> None:
    if key in raw:
        raise NotificationsConfigError(f"{where}: {key} does not apply here ({why})")


def _str(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise NotificationsConfigError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def _env_name(raw: dict[str, Any], key: str, where: str) -> str:
    value = _str(raw, key, where)
    if not _ENV_NAME.fullmatch(value):
        # Most likely the secret itself was pasted here: never echo it.
        raise NotificationsConfigError(
            f"{where}: {key} must name an environment variable (letters, digits, '_'), not "
            "hold the value itself"
        )
    return value


def _int(raw: dict[str, Any], key: str, default: int, where: str, minimum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise NotificationsConfigError(f"{where}: {key} must be an integer ≥ {minimum}")
    return value


def _seconds(raw: dict[str, Any], key: str, default: float, where: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise NotificationsConfigError(f"{where}: {key} must be a number of seconds > 0")
    return float(value)


def _str_list(raw: dict[str, Any], key: str, where: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise NotificationsConfigError(f"{where}: {key} must be a list of strings")
    return value


def _markets(raw: dict[str, Any], key: str, where: str) -> frozenset[str]:
    codes = [code.strip().upper() for code in _str_list(raw, key, where)]
    unknown = [code for code in codes if code not in MARKETPLACES]
    if unknown:
        raise NotificationsConfigError(
            f"{where}: {key}: unknown market(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(MARKETPLACES))}"
        )
    return frozenset(codes)


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
