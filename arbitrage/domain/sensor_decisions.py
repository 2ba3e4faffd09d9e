"""What a stage sensor decides on one tick, without Dagster or Kafka.

Given each source partition's lag, what is in flight, and the partition's newest finished run,
the tick requests one run per lagging partition that has none in flight and is not backing off,
over ``[start, min(high, start + max_records))``. A run key is de-duplicated by Dagster forever,
so keys carry a per-partition request counter kept in the cursor: a range whose run failed is
requested again, after a capped exponential backoff. assets/sensors.py gathers the inputs and
turns the decision into a ``SensorResult``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

# Lag is reported at least this often, and when it changed, at most this often: under a steady
# stream it changes on every tick, and an observation per tick would grow the event log with
# the run of the clock.
OBSERVATION_HEARTBEAT_S = 60.0
OBSERVATION_MIN_INTERVAL_S = 15.0


class PartitionLagView(Protocol):
    @property
    def partition(self) -> int: ...
    @property
    def start_offset(self) -> int: ...
    @property
    def high_watermark(self) -> int: ...
    @property
    def lag(self) -> int: ...
    @property
    def committed(self) -> int | None: ...
    @property
    def ahead_of_log(self) -> bool: ...
    @property
    def lost_to_retention(self) -> int: ...


@dataclass(frozen=True)
class FinishedRun:
    """The newest finished run of one partition."""

    run_id: str
    succeeded: bool
    ended_at: float | None  # epoch seconds


@dataclass
class PartitionState:
    """What a sensor remembers about one source partition between ticks."""

    requests: int = 0  # runs requested so far: makes every run_key unique
    failures: int = 0  # consecutive failed (or canceled) runs
    last_failed_run: str | None = None
    retry_after: float = 0.0  # epoch seconds; no new run before then


@dataclass
class SensorCursor:
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    observed_lag: dict[int, int] | None = None
    observed_at: float = 0.0

    @classmethod
    def parse(cls, raw: str | None) -> SensorCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        observed = data.get("observed_lag")
        return cls(
            partitions={int(p): PartitionState(**s) for p, s in data["partitions"].items()},
            observed_lag=(
                {int(p): lag for p, lag in observed.items()} if observed is not None else None
            ),
            observed_at=data.get("observed_at", 0.0),
        )

    def dump(self) -> str:
        observed = self.observed_lag
        return json.dumps(
            {
                "partitions": {str(p): asdict(s) for p, s in sorted(self.partitions.items())},
                "observed_lag": (
                    {str(p): lag for p, lag in sorted(observed.items())}
                    if observed is not None
                    else None
                ),
                "observed_at": self.observed_at,
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class RangeRequest:
    partition: int
    start: int
    end: int
    run_key: str


@dataclass
class TickDecision:
    requests: list[RangeRequest] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # partitions backing off, as sentences
    # Offsets that do not fit the log, as sentences for the tick's log: a partition whose
    # committed offset is past the end of the log gets no run (its run would fail) until reset.
    anomalies: list[str] = field(default_factory=list)
    skip_reason: str | None = None
    observe_lag: bool = False  # report the lag as an observation on this tick


@dataclass(frozen=True)
class SensorPolicy:
    max_records: int
    backoff_base_s: float
    backoff_cap_s: float


def backoff_seconds(failures: int, base_s: float, cap_s: float) -> float:
    """base, 2·base, 4·base, … after 1, 2, 3, … consecutive failures, never above cap."""
    return min(cap_s, base_s * 2 ** max(0, failures - 1))


def partition_tag_value(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def note_finished_run(
    state: PartitionState, run: FinishedRun | None, policy: SensorPolicy, now: float
) -> None:
    """Fold the partition's newest finished run into its state: a new failure extends the
    backoff, a success clears it."""
    if run is None:
        return
    if run.succeeded:
        state.failures, state.last_failed_run, state.retry_after = 0, None, 0.0
        return
    if run.run_id == state.last_failed_run:
        return
    state.failures += 1
    state.last_failed_run = run.run_id
    ended = run.ended_at if run.ended_at is not None else now
    state.retry_after = ended + backoff_seconds(
        state.failures, policy.backoff_base_s, policy.backoff_cap_s
    )


def decide_tick(
    job_name: str,
    topic: str,
    lags: Sequence[PartitionLagView],
    cursor: SensorCursor,
    now: float,
    policy: SensorPolicy,
    *,
    in_flight: Callable[[], tuple[set[str], bool]],
    last_finished: Callable[[str], FinishedRun | None],
    upstream_busy: bool = False,
) -> TickDecision:
    """One tick. ``in_flight()`` gives the topic-partition tags of this stage's queued or
    running runs and whether an untagged run is draining every partition; ``last_finished``
    gives a tag's newest finished run. Both are asked only when there is lag. Updates
    ``cursor`` in place.

    ``upstream_busy``: the stage feeding this one has lag, so records are about to arrive
    here; every partition without a run gets one now (its runs follow the partition), instead
    of after they arrive. A run start takes seconds, and otherwise a record would wait for two
    in a row.
    """
    decision = TickDecision()
    current = {lag.partition: lag.lag for lag in lags}
    since = now - cursor.observed_at
    if (current != cursor.observed_lag and since >= OBSERVATION_MIN_INTERVAL_S) or (
        since >= OBSERVATION_HEARTBEAT_S
    ):
        decision.observe_lag = True
        cursor.observed_lag, cursor.observed_at = current, now

    for lag in lags:
        tag_value = partition_tag_value(topic, lag.partition)
        if lag.ahead_of_log:
            decision.anomalies.append(
                f"{tag_value}: committed offset {lag.committed} is past the high watermark "
                f"{lag.high_watermark} (topic recreated or records deleted); no run until the "
                "group's offset is reset with `arbitrage offsets reset`"
            )
        elif lag.lost_to_retention:
            decision.anomalies.append(
                f"{tag_value}: retention removed {lag.lost_to_retention} records before the "
                "group read them; the next run starts at the oldest retained record"
            )
    lagging = [lag for lag in lags if lag.lag > 0 or (upstream_busy and not lag.ahead_of_log)]
    if not lagging:
        decision.skip_reason = "; ".join([f"no lag on {topic}", *decision.anomalies])
        return decision
    busy, draining = in_flight()
    if draining:
        decision.skip_reason = f"an untagged {job_name} run is draining every partition"
        return decision

    for lag in lagging:
        tag_value = partition_tag_value(topic, lag.partition)
        if tag_value in busy:
            continue
        state = cursor.partitions.setdefault(lag.partition, PartitionState())
        note_finished_run(state, last_finished(tag_value), policy, now)
        if now < state.retry_after:
            decision.waiting.append(
                f"{tag_value} after {state.failures} failure(s), "
                f"retry in {state.retry_after - now:.0f}s"
            )
            continue
        start = lag.start_offset
        end = min(lag.high_watermark, start + policy.max_records)
        state.requests += 1
        decision.requests.append(
            RangeRequest(lag.partition, start, end, f"{tag_value}:{start}-{end}#{state.requests}")
        )
    if not decision.requests:
        decision.skip_reason = (
            "; ".join(decision.waiting) or "every lagging partition has a run in flight"
        )
    return decision
