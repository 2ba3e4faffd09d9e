"""The deadline around librdkafka's transactional calls, which can block past their own timeout."""

from __future__ import annotations

import threading
import time

import pytest

from arbitrage.engine.kafka_transactions import returns_within


def test_a_call_that_returns_in_time_is_waited_for() -> None:
    done: list[str] = []
    assert returns_within(lambda: done.append("ran"), 5.0, "quick")
    assert done == ["ran"]


def test_a_call_that_never_returns_is_given_up_on_at_the_deadline() -> None:
    release = threading.Event()
    started = time.monotonic()
    try:
        assert not returns_within(release.wait, 0.3, "stuck")
        waited = time.monotonic() - started
        assert 0.3 <= waited < 3.0
    finally:
        release.set()  # lets the abandoned thread end


def test_the_calls_own_error_reaches_the_caller() -> None:
    def fails() -> None:
        raise ValueError("refused by the broker")

    with pytest.raises(ValueError, match="refused by the broker"):
        returns_within(fails, 5.0, "failing")
