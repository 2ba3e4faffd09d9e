"""Timestamps on the wire: ISO-8601 UTC text with millisecond precision and a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now_iso() -> str:
    return format_utc(datetime.now(UTC))


def format_utc(moment: datetime) -> str:
    """ISO-8601 UTC with millisecond precision and a ``Z`` suffix."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def parse_utc(text: str) -> datetime:
    """Parse an ISO-8601 timestamp that must carry a UTC offset (``Z`` or ``+00:00``)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None or moment.utcoffset() != UTC.utcoffset(None):
        raise ValueError("not UTC")
    return moment


def epoch_ms(text: str) -> int:
    return int(parse_utc(text).timestamp() * 1000)
