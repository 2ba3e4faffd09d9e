"""Time partitions of the stage assets: one per hour of Kafka message timestamps."""

from __future__ import annotations

import dagster as dg

# Topics keep 7 days; older partitions replay nothing but stay listed for history.
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00", timezone="UTC")
