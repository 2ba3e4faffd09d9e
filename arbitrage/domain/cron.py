"""Five-field cron schedules (minute hour day-of-month month day-of-week, UTC), as the
schedules of this project write them: ``*``, ``*/n``, ``a-b``, ``a-b/n`` and lists. Enough to say
when a schedule fires within a window without importing Dagster (the planner and the CLI run
without it); Dagster itself runs the schedules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


class CronError(ValueError):
    """Not a five-field cron this module reads."""


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first_text, last_text = span.split("-", 1)
            first, last = int(first_text), int(last_text)
        else:
            first = last = int(span)
            if step_text:
                last = high
        if step < 1 or not low <= first <= last <= high:
            raise CronError(f"{part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse(schedule: str) -> tuple[frozenset[int], ...]:
    fields = schedule.split()
    if len(fields) != 5:
        raise CronError(f"{schedule!r} is not five fields")
    try:
        parsed = tuple(
            _field(text, low, high) for text, (low, high) in zip(fields, _RANGES, strict=True)
        )
    except ValueError as exc:
        raise CronError(f"{schedule!r}: {exc}") from None
    # Sunday is 0 (and 7 in some crons); Python's weekday() has Monday 0.
    return parsed


def fires(schedule: str, start_ms: int, minutes: int) -> Iterator[int]:
    """The epoch ms of each minute in [start, start + minutes) at which ``schedule`` fires."""
    minute_set, hours, days, months, weekdays = parse(schedule)
    moment = datetime.fromtimestamp(start_ms / 1000, UTC).replace(second=0, microsecond=0)
    if moment.timestamp() * 1000 < start_ms:
        moment += timedelta(minutes=1)
    end = start_ms + minutes * 60_000
    while moment.timestamp() * 1000 < end:
        if (
            moment.minute in minute_set
            and moment.hour in hours
            and moment.day in days
            and moment.month in months
            and (moment.weekday() + 1) % 7 in weekdays
        ):
            yield int(moment.timestamp() * 1000)
        moment += timedelta(minutes=1)
