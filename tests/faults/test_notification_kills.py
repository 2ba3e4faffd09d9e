"""The notifications stage killed mid-delivery, then run again: no event reaches a receiver
twice by Idempotency-Key, and only the one delivery in flight at the kill is resent raw.

The killed run is `dagster job execute` in its own process, exiting with ``os._exit`` at the
point (no cleanup, no flush: what SIGKILL does); the rerun is a second such process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.stage_specs import NOTIFICATIONS
from tests.faults.audit import AUDIT_LINES, run_stage_process
from tests.integration.kafka_io import read_all
from tests.integration.test_notifications import (
    FAST_RETRY,
    SECRET,
    SECRET_ENV,
    alert,
    deliveries,
    hook,
    publish,
)
from tests.notify_receivers import webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 30
BATCH = 4


@pytest.mark.usefixtures("clean_pipeline")
@pytest.mark.parametrize("point", ["after_send_before_record", "before_commit"])
def test_killed_mid_delivery_then_rerun_delivers_nothing_twice(
    point: str,
    kafka: KafkaClient,
    es: ElasticsearchClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    publish(kafka, [alert(n) for n in range(EVENTS)])
    with webhook_receiver(SECRET) as receiver:
        config = tmp_path / "notifications.toml"
        config.write_text(FAST_RETRY + hook("hook", receiver.url))
        # The stage processes inherit this environment (tests/faults/audit.py).
        monkeypatch.setenv("ARBITRAGE_NOTIFICATIONS_FILE", str(config))
        monkeypatch.setenv(SECRET_ENV, SECRET.decode())
        # The 3rd arrival: mid-batch for the item point, the 3rd batch's commit otherwise.
        fault = f"{NOTIFICATIONS.name}:{point}:3"
        code, output = run_stage_process(NOTIFICATIONS.name, batch_size=BATCH, fault_point=fault)
        assert f"fault point {fault} reached" in output, output[-3000:]
        assert code != 0, output[-3000:]
        before_rerun = sum(receiver.keys().values())
        code, output = run_stage_process(NOTIFICATIONS.name, batch_size=BATCH)
        assert code == 0, output[-3000:]
        keys = receiver.keys()
    resent = sorted(key for key, n in keys.items() if n > 1)
    AUDIT_LINES.append(
        f"AUDIT notifications killed at {point} (3rd arrival), rerun: {EVENTS} events → "
        f"{len(keys)} distinct Idempotency-Keys, {sum(keys.values())} raw requests "
        f"({before_rerun} before the kill), resent raw: {resent or 'none'}"
    )
    assert sorted(keys) == sorted(f"alert-{n:04d}" for n in range(EVENTS))
    docs = deliveries(es)
    assert len(docs) == EVENTS
    assert {d["status"] for d in docs.values()} == {"delivered"}
    if point == "after_send_before_record":
        # Exactly the delivery in flight: sent, not recorded when the process died.
        assert len(resent) == 1, keys
        assert keys[resent[0]] == 2
    else:
        # Every delivery was recorded before the commit the kill interrupted: none resent.
        assert resent == [], keys
    assert read_all(kafka, topics.ARBITRAGE_ALERTS_DLQ) == []
    for lag in kafka.lag(NOTIFICATIONS.live_group, topics.ARBITRAGE_ALERTS):
        assert lag.lag == 0, lag
    assert json.loads(receiver.requests[0]["body"])["event"] == "opened"
