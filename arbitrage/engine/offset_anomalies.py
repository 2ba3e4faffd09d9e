"""Offsets that do not fit the log, made loud instead of silently skipping records.

A committed offset above the high watermark (the topic was recreated, or records deleted past
it) would make the stage skip every record produced below it: the run fails with a sentence
naming the group, partition and offsets, and the recovery command. A committed offset below the
low watermark means retention deleted records the group never read: the run goes on from the
oldest retained record and reports how many were lost.
"""

from __future__ import annotations

from collections.abc import Sequence

from arbitrage.clients.kafka_offsets import PartitionLag
from arbitrage.clients.retention_losses import RetentionLoss


class OffsetAheadOfLogError(RuntimeError):
    """The group's committed offset lies past the end of the partition's log."""


def reset_command(group: str, topic: str) -> str:
    where = f"--group {group} --topic {topic}"
    return f"arbitrage offsets reset {where} --to earliest|latest|<ISO time>"


def acknowledge_command(group: str, topic: str) -> str:
    return f"arbitrage offsets acknowledge-loss --group {group} --topic {topic}"


def check_offsets(group: str, lags: Sequence[PartitionLag]) -> list[RetentionLoss]:
    """Raise for a committed offset ahead of the log; else the records lost to retention (one
    per partition that lost some)."""
    ahead = [lag for lag in lags if lag.ahead_of_log]
    if ahead:
        where = "; ".join(
            f"{lag.topic}[{lag.partition}] committed {lag.committed} > high watermark "
            f"{lag.high_watermark}"
            for lag in ahead
        )
        raise OffsetAheadOfLogError(
            f"group {group}: {where}. The topic was recreated or records were deleted past the "
            "committed offset, so records below it would be skipped; nothing was processed. "
            f"Decide where the group resumes and run: {reset_command(group, ahead[0].topic)}"
        )
    return [
        RetentionLoss(group, lag.topic, lag.partition, lag.committed, lag.low_watermark)
        for lag in lags
        if lag.lost_to_retention and lag.committed is not None
    ]
