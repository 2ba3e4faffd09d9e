"""The notifications file (config/notifications.toml, or ARBITRAGE_NOTIFICATIONS_FILE): its
channels, their filters and retry policies, loaded and checked with a sentence for every
mistake. Names only the variables that hold secrets (``secret_env``, ``url_env``); the
resource resolves them (resources/notify.py)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from arbitrage.domain.config_files import read_toml, refuse_unknown_keys
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


class NotificationsConfigError(ValueError):
    """The channels file is missing, malformed or names an unknown setting."""


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
    refuse_unknown_keys(raw, keys, where, NotificationsConfigError)


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
