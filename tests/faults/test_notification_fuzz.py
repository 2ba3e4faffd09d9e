"""10 000 hostile alert records among good ones through a real notifications run (the Dagster
job, a webhook channel to a real HTTP receiver): every good event reaches the receiver exactly
once (counted by Idempotency-Key), every hostile record is dead-lettered once with a reason,
and the committed offsets reach the end of every partition (issue 24, item 3).

What each record should become is decided by construction (``hostile_alert``), not by the code
under test.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.stage_specs import NOTIFICATIONS
from arbitrage.settings import Settings
from pipelines.definitions import build_definitions
from tests.faults.audit import Audit
from tests.integration.kafka_io import produce, read_all
from tests.integration.test_notifications import (
    FAST_RETRY,
    SECRET,
    SECRET_ENV,
    alert,
    hook,
    hostile_alert,
)
from tests.notify_receivers import webhook_receiver

pytestmark = [pytest.mark.integration, pytest.mark.faults]

GOOD = 3_000
HOSTILE = 10_000
KiB = 1024


def hostile(n: int, rng: random.Random) -> tuple[str, bytes, str]:
    """``hostile_alert``, and now and then a record over the 256 KiB limit."""
    if n % 1000 == 999:
        big = alert(n, asin=f"B0HX{n:06d}", alert_id=f"hostile-{n}", title="z" * 300 * KiB)
        return big["asin"], json.dumps(big).encode(), "over 256 KiB"
    return hostile_alert(n, rng)


@pytest.mark.usefixtures("clean_pipeline")
def test_hostile_alerts_never_stall_the_notifications_stage(
    kafka: KafkaClient,
    es: ElasticsearchClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(20261206)
    good = [alert(n, asin=f"B0GD{n:06d}", alert_id=f"good-{n}") for n in range(GOOD)]
    items: list[tuple[str, bytes]] = [(a["asin"], json.dumps(a).encode()) for a in good]
    bad: dict[bytes, str] = {}
    for n in range(HOSTILE):
        key, value, why = hostile(n, rng)
        bad[value] = why
        items.insert(rng.randint(0, len(items)), (key, value))
    for start in range(0, len(items), 2000):
        produce(kafka, topics.ARBITRAGE_ALERTS, items[start : start + 2000])

    with webhook_receiver(SECRET) as receiver:
        path = tmp_path / "notifications.toml"
        path.write_text(FAST_RETRY + hook("hook", receiver.url))
        monkeypatch.setenv(SECRET_ENV, SECRET.decode())  # read when the run starts
        # The settings file is the environment's alone: run config may not move it.
        monkeypatch.setenv("ARBITRAGE_NOTIFICATIONS_FILE", str(path))
        defs = build_definitions(replace(Settings.from_env(), keepa_source="sample"))
        # Most of every batch is hostile on purpose: let the reject-rate breaker through.
        config = {"batch_size": 1000, "max_reject_ratio": 0.95}
        result = defs.resolve_job_def("notifications").execute_in_process(
            run_config={"ops": {"notifications_stage": {"config": config}}},
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        keys = receiver.keys()
        signed = all(r["signed"] for r in receiver.requests)
    assert result.success

    source = read_all(kafka, topics.ARBITRAGE_ALERTS)
    letters = [m.json() for m in read_all(kafka, topics.ARBITRAGE_ALERTS_DLQ)]
    lettered_at = Counter((e["partition"], e["offset"]) for e in letters)
    audit = Audit(
        f"notifications: {HOSTILE} hostile alerts among {GOOD} good ones",
        NOTIFICATIONS,
        len(source),
    )
    wanted = {a["alert_id"] for a in good}
    audit.processed = len(set(keys) & wanted)
    audit.dead_lettered = len(lettered_at)
    audit.lost = sorted(wanted - set(keys))
    audit.lost += [f"unexpected delivery {k}" for k in set(keys) - wanted]
    for message in source:
        at = (message.partition, message.offset)
        if message.value in bad and at not in lettered_at:
            audit.lost.append(f"{bad[message.value]} @{at} not dead-lettered")
        if message.value not in bad and at in lettered_at:
            audit.lost.append(f"good record @{at} dead-lettered")
    audit.duplicates = {
        "webhook deliveries": sum(n - 1 for n in keys.values()),
        topics.ARBITRAGE_ALERTS_DLQ: sum(n - 1 for n in lettered_at.values()),
    }
    audit.documents = es.count(topics.DELIVERIES_INDEX)
    audit.expected_documents = GOOD
    audit.committed = {
        lag.partition: (lag.committed, lag.high_watermark)
        for lag in kafka.lag(NOTIFICATIONS.live_group, topics.ARBITRAGE_ALERTS)
    }
    audit.assert_exactly_once()
    assert signed
    # Every dead letter has a reason, and it is the event rule's or the reader's.
    assert all(e["error"] and e["stage"] == "notifications" for e in letters)
    assert not [e["error"] for e in letters if e["error"].startswith("channel ")]
    originals = {base64.b64decode(e["value"]) for e in letters if not e["value_truncated"]}
    assert len(originals) > HOSTILE // 2  # the envelopes carry the records themselves
