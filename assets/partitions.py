"""Time partitions: the stage assets', one per hour of Kafka message timestamps; the daily
digest's, one per UTC day."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

# Topics keep 7 days; older partitions replay nothing but stay listed for history.
# end_offset=1: the current hour is a partition too, so live runs can record it and it can be
# replayed before it closes.
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00", timezone="UTC", end_offset=1)
# The last partition is yesterday: a day's digest is sent once the day is over.
DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC")


def hour_partition_key(hour_start_ms: int) -> str:
    """Epoch milliseconds of an hour's start → that hour's partition key."""
    moment = datetime.fromtimestamp(hour_start_ms / 1000, tz=UTC)
    return moment.strftime(HOURLY.fmt)
