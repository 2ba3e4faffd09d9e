"""ARBITRAGE_FAULT_POINT parsing: a bad value fails with a sentence, never silently."""

from __future__ import annotations

import pytest

from arbitrage.engine.faults import FaultInjector, FaultPointError


def test_a_fault_point_names_stage_point_batch_and_action() -> None:
    assert FaultInjector.parse("") is None
    point = FaultInjector.parse("arbitrage:before_commit")
    assert point is not None and (point.stage, point.point, point.batch, point.action) == (
        "arbitrage",
        "before_commit",
        1,
        "exit",
    )
    frozen = FaultInjector.parse("enrichment:after_commit:3:stop")
    assert frozen is not None and (frozen.batch, frozen.action) == (3, "stop")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("enrichment", "is not stage:point"),
        ("enrichment:somewhere", "points are after_bulk_ack"),
        ("enrichment:after_flush:0", "batch must be 1 or more"),
        ("enrichment:after_flush:two", "batch must be 1 or more"),
        ("enrichment:after_flush:1:pause", "action must be one of exit, stop"),
    ],
)
def test_a_bad_fault_point_is_refused_with_a_sentence(text: str, says: str) -> None:
    with pytest.raises(FaultPointError, match=says):
        FaultInjector.parse(text)


def test_only_the_armed_stage_point_and_batch_fire() -> None:
    point = FaultInjector.parse("enrichment:after_flush:2")
    assert point is not None
    point.reached("arbitrage", "after_flush")  # another stage: ignored
    point.reached("enrichment", "after_commit")  # another point: ignored
    point.reached("enrichment", "after_flush")  # the first arrival: not yet
    assert point._arrivals == 1
