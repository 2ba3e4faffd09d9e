"""The stage sensors' decision on one tick, without services
(arbitrage/domain/sensor_decisions.py)."""

from __future__ import annotations

from dataclasses import dataclass

from arbitrage.domain.sensor_decisions import (
    OBSERVATION_HEARTBEAT_S,
    OBSERVATION_MIN_INTERVAL_S,
    FinishedRun,
    PartitionState,
    SensorCursor,
    SensorPolicy,
    backoff_seconds,
    decide_tick,
)

TOPIC = "raw.keepa_updates"
POLICY = SensorPolicy(max_records=100, backoff_base_s=15.0, backoff_cap_s=600.0)


@dataclass
class Lag:
    partition: int
    start_offset: int
    high_watermark: int
    committed: int | None = None
    lost_to_retention: int = 0

    @property
    def lag(self) -> int:
        return max(0, self.high_watermark - self.start_offset)

    @property
    def ahead_of_log(self) -> bool:
        return self.committed is not None and self.committed > self.high_watermark


def tick(
    lags: list[Lag],
    cursor: SensorCursor,
    now: float,
    busy: set[str] | None = None,
    draining: bool = False,
    finished: dict[str, FinishedRun] | None = None,
    asked: list[str] | None = None,
    upstream_busy: bool = False,
):
    def in_flight() -> tuple[set[str], bool]:
        if asked is not None:
            asked.append("in_flight")
        return busy or set(), draining

    return decide_tick(
        "enrichment",
        TOPIC,
        lags,
        cursor,
        now,
        POLICY,
        in_flight=in_flight,
        last_finished=lambda tag: (finished or {}).get(tag),
        upstream_busy=upstream_busy,
    )


def test_no_lag_skips_without_asking_the_instance_and_reports_lag_once() -> None:
    cursor, asked = SensorCursor(), []
    first = tick([Lag(0, 5, 5), Lag(1, 0, 0)], cursor, 1000.0, asked=asked)
    assert first.skip_reason == f"no lag on {TOPIC}" and not first.requests
    assert first.observe_lag and asked == []
    # Unchanged lag is reported again only after the heartbeat.
    assert not tick([Lag(0, 5, 5), Lag(1, 0, 0)], cursor, 1010.0).observe_lag
    later = 1000.0 + OBSERVATION_HEARTBEAT_S
    assert tick([Lag(0, 5, 5), Lag(1, 0, 0)], cursor, later).observe_lag


def test_changed_lag_is_reported_at_most_once_per_interval() -> None:
    cursor = SensorCursor()
    assert tick([Lag(0, 5, 5)], cursor, 1000.0).observe_lag
    # A steady stream changes the lag on every tick: not an observation per tick.
    assert not tick([Lag(0, 5, 7)], cursor, 1003.0).observe_lag
    assert not tick([Lag(0, 7, 9)], cursor, 1006.0).observe_lag
    assert tick([Lag(0, 9, 12)], cursor, 1000.0 + OBSERVATION_MIN_INTERVAL_S).observe_lag


def test_one_bounded_range_per_lagging_partition_with_unique_run_keys() -> None:
    cursor = SensorCursor()
    decision = tick([Lag(0, 10, 500), Lag(1, 3, 7), Lag(2, 9, 9)], cursor, 1.0)
    spans = {(r.partition, r.start, r.end) for r in decision.requests}
    assert spans == {(0, 10, 110), (1, 3, 7)}
    keys = {r.run_key for r in decision.requests}
    assert keys == {f"{TOPIC}-0:10-110#1", f"{TOPIC}-1:3-7#1"}
    again = tick([Lag(0, 10, 500)], cursor, 2.0)
    assert again.requests[0].run_key == f"{TOPIC}-0:10-110#2"


def test_upstream_lag_starts_a_run_on_every_idle_partition_before_records_arrive() -> None:
    cursor = SensorCursor()
    lags = [Lag(0, 5, 5), Lag(1, 3, 3), Lag(2, 0, 4)]
    assert [r.partition for r in tick(lags, cursor, 1.0).requests] == [2]  # own lag only
    decision = tick(lags, SensorCursor(), 1.0, busy={f"{TOPIC}-1"}, upstream_busy=True)
    spans = {(r.partition, r.start, r.end) for r in decision.requests}
    # Partition 0 is idle but records are on their way: an empty range its run will follow.
    assert spans == {(0, 5, 5), (2, 0, 4)}
    # With no upstream lag an idle partition gets no run.
    idle = tick([Lag(0, 5, 5)], SensorCursor(), 1.0)
    assert not idle.requests and idle.skip_reason == f"no lag on {TOPIC}"


def test_busy_partitions_wait_and_a_draining_run_blocks_all() -> None:
    cursor = SensorCursor()
    lags = [Lag(0, 0, 5), Lag(1, 0, 5)]
    decision = tick(lags, cursor, 1.0, busy={f"{TOPIC}-0"})
    assert [r.partition for r in decision.requests] == [1]
    blocked = tick(lags, cursor, 2.0, busy={f"{TOPIC}-0", f"{TOPIC}-1"})
    assert blocked.skip_reason == "every lagging partition has a run in flight"
    draining = tick(lags, cursor, 3.0, draining=True)
    assert not draining.requests and "draining" in (draining.skip_reason or "")


def test_failures_back_off_exponentially_and_a_success_clears_it() -> None:
    cursor = SensorCursor()
    lags = [Lag(2, 0, 3)]
    tag = f"{TOPIC}-2"
    first = tick(lags, cursor, 100.0)
    assert len(first.requests) == 1
    failed = {tag: FinishedRun("run-1", succeeded=False, ended_at=110.0)}
    waiting = tick(lags, cursor, 111.0, finished=failed)
    assert not waiting.requests and "1 failure(s)" in (waiting.skip_reason or "")
    assert cursor.partitions[2].retry_after == 125.0  # ended + 15 s
    # The same failed run is not counted twice; after the wait the range is asked for again.
    retry = tick(lags, cursor, 125.0, finished=failed)
    assert [(r.start, r.end) for r in retry.requests] == [(0, 3)]
    failed_again = {tag: FinishedRun("run-2", succeeded=False, ended_at=130.0)}
    tick(lags, cursor, 131.0, finished=failed_again)
    assert cursor.partitions[2].failures == 2 and cursor.partitions[2].retry_after == 160.0
    done = {tag: FinishedRun("run-3", succeeded=True, ended_at=170.0)}
    served = tick(lags, cursor, 171.0, finished=done)
    assert len(served.requests) == 1 and cursor.partitions[2].failures == 0


def test_a_failed_run_without_an_end_time_waits_from_now() -> None:
    cursor = SensorCursor()
    lags = [Lag(0, 0, 1)]
    tick(lags, cursor, 0.0)
    tick(lags, cursor, 50.0, finished={f"{TOPIC}-0": FinishedRun("r", False, None)})
    assert cursor.partitions[0].retry_after == 65.0


def test_cursor_round_trip_and_capped_exponential_backoff() -> None:
    cursor = SensorCursor(
        partitions={2: PartitionState(requests=3, failures=1, last_failed_run="r")},
        observed_lag={0: 4, 2: 0},
        observed_at=12.5,
    )
    assert SensorCursor.parse(cursor.dump()) == cursor
    assert SensorCursor.parse(None) == SensorCursor()
    delays = [backoff_seconds(n, 15, 600) for n in range(1, 8)]
    assert delays == [15, 30, 60, 120, 240, 480, 600]


def test_offsets_that_do_not_fit_the_log_are_reported_and_ahead_ones_get_no_run() -> None:
    cursor = SensorCursor()
    ahead = Lag(0, start_offset=1000, high_watermark=5, committed=1000)  # lag 0: looks idle
    lost = Lag(1, start_offset=40, high_watermark=60, committed=10, lost_to_retention=30)
    decision = tick([ahead, lost], cursor, 1.0)
    assert [(r.partition, r.start, r.end) for r in decision.requests] == [(1, 40, 60)]
    assert decision.anomalies[0].startswith(f"{TOPIC}-0: committed offset 1000 is past the high")
    assert "retention removed 30 records" in decision.anomalies[1]
    idle = tick([ahead], cursor, 2.0)
    assert not idle.requests and "arbitrage offsets reset" in (idle.skip_reason or "")
