"""Offset ranges a stage run processes, and planning them from a consumer group's lag."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from arbitrage.clients.kafka_offsets import PartitionLag


@dataclass(frozen=True)
class PartitionRange:
    """Offsets [start, end) of one partition."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def plan_ranges(
    lags: Sequence[PartitionLag],
    partitions: list[int] | None = None,
    max_records: int | None = None,
) -> list[PartitionRange]:
    """From the group's committed offset (or the oldest retained) to the high watermark now."""
    ranges = []
    for lag in lags:
        if partitions is not None and lag.partition not in partitions:
            continue
        end = lag.high_watermark
        if max_records is not None:
            end = min(end, lag.start_offset + max_records)
        if end > lag.start_offset:
            ranges.append(PartitionRange(lag.partition, lag.start_offset, end))
    return ranges
