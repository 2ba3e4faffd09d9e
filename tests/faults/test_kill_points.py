"""A stage run killed at each named point of a batch (arbitrage/engine/faults.py), then run again:
every source record ends processed once or dead-lettered once, on every topic as read_committed,
with no duplicate document and the committed offsets at the end of the log.

The killed run is `dagster job execute` in its own process, exiting with ``os._exit`` at the
point (no cleanup, no flush: what SIGKILL does); the rerun is an ordinary run.
"""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.enrichment import enrich
from arbitrage.domain.messages.validation import validate_raw_update
from arbitrage.domain.stage_specs import ARBITRAGE
from arbitrage.domain.transforms import opportunity_events
from arbitrage.engine.faults import FAULT_POINTS
from tests.factories import offer, steady_signals, strip_time
from tests.faults.audit import audit_enrichment, audit_stage, keys_in, run_stage_process
from tests.integration.kafka_io import produce, read_all
from tests.integration.test_stages import (
    CONFIG,
    RULES,
    committed_equals_high_watermark,
    good_updates,
    run_job,
)

pytestmark = pytest.mark.integration

BATCH = 100
GOOD = 450  # ~150 per partition: two batches each, so batch 2 is a partition's second
POISON = [
    ("B0POISON01", b'{"schema_version": 1, "asin": '),
    ("B0POISON02", b"\xff\xfe not utf-8"),
    ("B0POISON03", b'{"schema_version": 1, "asin": "B0POISON03", "timestamp": "0001-01-01"}'),
]
# The quick subset inside `make test`; the rest run with `make faults`.
# make test keeps one kill (the rest, and the other stage, in make faults: CI runs both).
QUICK = {("enrichment", "before_commit")}


def cases() -> list:
    return [
        pytest.param(
            stage,
            point,
            id=f"{stage}-{point}",
            marks=[] if (stage, point) in QUICK else [pytest.mark.faults],
        )
        for stage in ("enrichment", "arbitrage")
        for point in FAULT_POINTS
    ]


def raw_items() -> tuple[list[dict], list[tuple[str, bytes]]]:
    updates = good_updates(GOOD)
    items = [(u["asin"], json.dumps(u).encode()) for u in updates]
    # Poison spread through the log, not only at its end.
    for n, (key, value) in enumerate(POISON):
        items.insert((n + 1) * GOOD // (len(POISON) + 1), (key, value))
    return updates, items


def kill_then_rerun(stage: str, point: str) -> None:
    code, output = run_stage_process(stage, batch_size=BATCH, fault_point=f"{stage}:{point}:2")
    assert f"fault point {stage}:{point}:2 reached" in output, output[-3000:]
    assert code != 0, output[-3000:]
    rerun = run_job(stage, {"ops": {f"{stage}_stage": {"config": {"batch_size": BATCH}}}})
    assert rerun.success


@pytest.mark.usefixtures("clean_pipeline")
@pytest.mark.parametrize(("stage", "point"), cases())
def test_killed_at_a_fault_point_then_rerun_is_exactly_once(
    stage: str, point: str, kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    updates, items = raw_items()
    produce(kafka, topics.RAW_UPDATES, items)
    case = f"{stage} killed at {point} (batch 2), rerun"
    if stage == "enrichment":
        kill_then_rerun(stage, point)
        audit = audit_enrichment(
            case,
            kafka,
            es,
            [u["asin"] for u in updates],
            keys_in({key for key, _ in POISON}),
        )
    else:
        assert run_job("enrichment").success
        poison = [("B0POISON09", b'{"asin": 7}'), ("B0POISON10", b"[]")]
        produce(kafka, topics.PRODUCTS_ENRICHED, poison)
        kill_then_rerun(stage, point)
        expected = opportunity_events(
            [enrich(validate_raw_update(u), CONFIG) for u in updates], CONFIG, RULES, "ignored"
        ).events
        audit = audit_stage(
            case,
            ARBITRAGE,
            kafka,
            es,
            expected_outputs={e["event_id"]: e["asin"] for e in expected},
            poison=keys_in({key for key, _ in poison}),
            output_id="event_id",
        )
    audit.assert_exactly_once()


def second_pull(first: list[dict]) -> list[dict]:
    """The same products an hour later: of the opportunities (every third product), half got
    cheaper to buy in DE (profit up 15 EUR: updated), half cheap in FR (closed)."""
    later = []
    for n, update in enumerate(first):
        update = copy.deepcopy(update)
        update["timestamp"] = "2026-11-26T11:00:00.000Z"
        if n % 3 == 0 and n % 2 == 0:
            update["markets"]["DE"] = offer("DE", new=3000, amazon=-1, buy_box=3200)
        elif n % 3 == 0:
            update["markets"]["FR"] = offer(
                "FR", buy_box=4800, new=4700, signals=steady_signals(4800)
            )
        later.append(update)
    return later


@pytest.mark.faults
@pytest.mark.usefixtures("clean_pipeline")
def test_a_lifecycle_batch_killed_after_its_states_were_stored_publishes_each_event_once(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    """The states of a killed batch are in the index, its events never committed: the rerun
    builds on the states from before that batch (``base``) and publishes each event once."""
    first = good_updates(GOOD)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], json.dumps(u).encode()) for u in first])
    assert run_job("enrichment").success and run_job("arbitrage").success
    opened = len(read_all(kafka, topics.ARBITRAGE_ALERTS))
    later = second_pull(first)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], json.dumps(u).encode()) for u in later])
    assert run_job("enrichment").success
    kill_then_rerun("arbitrage", "after_bulk_ack")

    products = [enrich(validate_raw_update(u), CONFIG) for u in first + later]
    expected = opportunity_events(products, CONFIG, RULES, "ignored").events
    kinds = Counter(e["event"] for e in expected)
    # Two routes per opportunity product (DE→FR, GB→FR): the cheaper DE buy moves one of them.
    assert kinds == {"opened": opened, "updated": 75, "closed": 150}, kinds
    on_topic = [m.json() for m in read_all(kafka, topics.ARBITRAGE_ALERTS)]
    ids = [e["event_id"] for e in on_topic]
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert {e["event_id"]: strip_time(e) for e in on_topic} == {
        e["event_id"]: strip_time(e) for e in expected
    }
    # The index: each opportunity's last event, as its current state.
    last = {e["opportunity_id"]: strip_time(e) for e in expected}
    hits = es.client().search(index=topics.ALERTS_INDEX, size=1000)["hits"]["hits"]
    assert {hit["_id"]: strip_time(hit["_source"]) for hit in hits} == last
    committed_equals_high_watermark(kafka, ARBITRAGE.live_group, topics.PRODUCTS_ENRICHED)
