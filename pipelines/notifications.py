"""Alert delivery, the pure part: the channels file, the event rule, filters, the webhook's body
and signature, the e-mail's Message-ID, and when to retry.

The notifications stage (engine/processors.py, ``NotificationsProcessor``) reads
``arbitrage.alerts`` and hands each event to every channel whose filter passes it; the network
code is in resources/notify.py. Nothing here reads the environment or opens a socket: secrets are
named in the file (``secret_env``, ``url_env``) and resolved by the resource.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

from pipelines.config_files import read_toml
from pipelines.fee_config import REPO_ROOT
from pipelines.markets import MARKETPLACES
from pipelines.redaction import secure_endpoint_problem

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

SIGNATURE_HEADER = "X-Arbitrage-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Arbitrage-Event"
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
    digest: bool = True  # gets the daily digest (pipelines/digest.py) besides its events


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
    url, secret_env, url_env = "", "", ""
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
    return Channel(name, kind, filter_, retry, url, secret_env, url_env, digest)


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
    ``alert_id`` (each alert id is raised once, so it is unique per event too)."""
    alert_id = message.get("alert_id")
    asin = message.get("asin")
    if not isinstance(alert_id, str) or not alert_id:
        raise NotAnEventError("the message has no alert_id")
    if not isinstance(asin, str) or not asin:
        raise NotAnEventError(f"alert {alert_id} has no asin")
    event = message.get("event", "opened")
    if event not in EVENT_KINDS:
        raise NotAnEventError(f"alert {alert_id}: unknown event {event!r}")
    event_id = message.get("event_id", alert_id)
    if not isinstance(event_id, str) or not event_id or len(event_id) > 200:
        raise NotAnEventError(f"alert {alert_id}: event_id must be a string of 1-200 characters")
    return AlertEvent(
        event, event_id, alert_id, asin, {**message, "event": event, "event_id": event_id}
    )


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
    """The delivery's document id in ``alert-deliveries``: one per (channel, event)."""
    return f"{channel}:{event_id}"


# --- what is sent ----------------------------------------------------------------------------


def webhook_body(event: AlertEvent) -> bytes:
    """The exact bytes POSTed (and signed): the event as received, ``event``/``event_id`` set."""
    return json.dumps(event.message, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: bytes, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the body>``: the X-Arbitrage-Signature header's value."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does (constant-time compare); the tests' receivers use it."""
    return hmac.compare_digest(signature(secret, body), header)


def _money(price: Any) -> str:
    if isinstance(price, dict) and isinstance(price.get("amount"), int):
        return f"{price['amount'] / 100:.2f} {price.get('currency', '')}".strip()
    return "?"


def message_text(event: AlertEvent) -> tuple[str, str]:
    """Title and body of a chat message or e-mail (plain text)."""
    m = event.message
    route = f"{m.get('buy_market', '?')}→{m.get('sell_market', '?')}"
    profit = m.get("profit_eur_cents")
    profit_text = f"{profit / 100:.2f} EUR" if isinstance(profit, int) else "?"
    roi = m.get("roi")
    roi_text = f"{roi:.0%}" if isinstance(roi, int | float) else "?"
    title = f"[{event.event}] {event.asin} {route}: +{profit_text} ({roi_text})"
    body = "\n".join(
        [
            f"{m.get('title') or event.asin}",
            f"ASIN {event.asin}, route {route} ({event.event})",
            f"buy {_money(m.get('buy_price'))}, sell {_money(m.get('sell_price'))}",
            f"profit {profit_text}, ROI {roi_text}",
            f"detected {m.get('detected_at', '?')}",
            f"event {event.event_id} (alert {event.alert_id})",
        ]
    )
    return title, body


def email_message_id(event_id: str, domain: str = "arbitrage.invalid") -> str:
    """A Message-ID fixed by the event: a resent e-mail is recognisably the same message."""
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:32]
    return f"<alert-{digest}@{domain}>"


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
