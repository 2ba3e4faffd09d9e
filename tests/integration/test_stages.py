"""The enrichment and arbitrage jobs against the real broker and Elasticsearch."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.index_templates import ALERTS_MAPPING
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.fee_model import detect
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.timestamps import epoch_ms, format_utc
from arbitrage.domain.messages.validation import validate_raw_update
from arbitrage.domain.rules_config import load_rules_config
from arbitrage.domain.stage_specs import ARBITRAGE, ENRICHMENT
from arbitrage.domain.transforms import opportunity_events
from arbitrage.engine.ranges import PartitionRange
from arbitrage.engine.runner import RangeUnavailableError, StageRunner
from arbitrage.engine.stage_setup import StageSetup
from arbitrage.settings import Settings
from scripts.demo import filtered_routes
from tests.definitions import SAMPLE_DEFS
from tests.factories import offer, raw_update, steady_signals, strip_time
from tests.integration.kafka_io import produce, read_all

pytestmark = pytest.mark.integration
CONFIG = load_fee_config()
# The rules the stage runs with (ARBITRAGE_RULES_FILE, by default config/rules_v1.toml).
RULES = load_rules_config(Settings.from_env().rules_file)


def run_job(
    name: str, run_config: dict | None = None, instance: dg.DagsterInstance | None = None
) -> dg.ExecuteInProcessResult:
    job = SAMPLE_DEFS.resolve_job_def(name)
    return job.execute_in_process(
        run_config=run_config or {},
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def good_updates(count: int, timestamp: str = "2026-11-26T10:00:00.000Z") -> list[dict]:
    """Products where every third one is cheap in DE and dear in FR (an opportunity)."""
    updates = []
    for n in range(count):
        dear = 9000 if n % 3 == 0 else 4800
        updates.append(
            raw_update(
                asin=f"B0INTEG{n:03d}" if n < 1000 else f"B0IN{n:06d}",
                markets={
                    "DE": offer("DE", new=4500 + n, amazon=-1, buy_box=4700),
                    "FR": offer("FR", buy_box=dear, new=dear - 100, signals=steady_signals(dear)),
                    "GB": offer("GB", new=4100, buy_box=4200, fba_fee=None),
                },
                timestamp=timestamp,
            )
        )
    return updates


BAD_RECORDS: list[tuple[str, bytes, str]] = [
    ("B0BAD00001", b'{"schema_version": 1, "asin": ', "is not valid JSON"),
    (
        "B0BAD00002",
        json.dumps(raw_update(asin="B0BAD00002", domain_id="three")).encode(),
        "'domain_id' must be an integer",
    ),
    (
        "B0BAD00003",
        json.dumps(raw_update(asin="B0BAD00003", markets={"US": offer("DE", new=100)})).encode(),
        "unknown marketplace 'US'",
    ),
    (
        "B0BAD00004",
        json.dumps(raw_update(asin="B0BAD00004", markets={"DE": offer("DE", new=-500)})).encode(),
        "'markets.DE.new' must be a price ≥ -2",
    ),
    ("B0BAD00005", b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}', "the limit is 262144 bytes"),
    (
        "B0BAD00006",
        json.dumps(raw_update(asin="B0BAD00006", schema_version=7)).encode(),
        "schema_version 7",
    ),
    # Before 1970 it would be a negative external version: the whole bulk request would fail.
    (
        "B0BAD00007",
        json.dumps(raw_update(asin="B0BAD00007", timestamp="1969-12-31T23:59:59Z")).encode(),
        "a pull time on or after 2011-01-01",
    ),
    # Its whole base64 would not fit the DLQ topic: the envelope keeps a cut copy.
    ("B0BAD00008", b'{"pad": "' + b"y" * (7 * 1024 * 1024) + b'"}', "the limit is 262144 bytes"),
]


def committed_equals_high_watermark(kafka: KafkaClient, group: str, topic: str) -> None:
    lags = kafka.lag(group, topic)
    # A partition that never held a message has nothing to commit.
    assert all(lag.committed == lag.high_watermark for lag in lags if lag.high_watermark), lags
    assert sum(lag.lag for lag in lags) == 0


@pytest.mark.usefixtures("clean_pipeline")
def test_stages_end_to_end_with_dead_letters(kafka: KafkaClient, es: ElasticsearchClient) -> None:
    updates = good_updates(30)
    items = [(u["asin"], json.dumps(u).encode()) for u in updates[:15]]
    items += [(key, value) for key, value, _ in BAD_RECORDS]
    items += [(u["asin"], json.dumps(u).encode()) for u in updates[15:]]
    produce(kafka, topics.RAW_UPDATES, items)

    result = run_job("enrichment")
    assert result.success

    # Every good record is indexed (doc id = ASIN) and produced downstream; every bad one is in
    # the DLQ with its reason; offsets are committed up to the high watermark.
    assert es.count(topics.PRODUCTS_INDEX) == 30
    doc = es.client().get(index=topics.PRODUCTS_INDEX, id="B0INTEG000")
    assert doc["_source"]["markets"]["DE"]["buy_price"] == 4500
    assert doc["_version"] == epoch_ms(updates[0]["timestamp"])  # external version
    enriched = read_all(kafka, topics.PRODUCTS_ENRICHED)
    assert sorted(m.key for m in enriched) == sorted(u["asin"] for u in updates)
    dlq = {m.key: m.json() for m in read_all(kafka, topics.RAW_UPDATES_DLQ)}
    assert set(dlq) == {key for key, _, _ in BAD_RECORDS}
    for key, value, reason in BAD_RECORDS:
        entry = dlq[key]
        assert reason in entry["error"], entry["error"]
        assert entry["source_topic"] == topics.RAW_UPDATES and entry["stage"] == "enrichment"
        assert entry["value_bytes"] == len(value)
        assert entry["value_sha256"] == hashlib.sha256(value).hexdigest()
        kept = base64.b64decode(entry["value"])
        assert kept == value if not entry["value_truncated"] else value.startswith(kept)
    assert [key for key in dlq if dlq[key]["value_truncated"]] == ["B0BAD00008"]
    committed_equals_high_watermark(kafka, ENRICHMENT.live_group, topics.RAW_UPDATES)
    materialization = result.asset_materializations_for_node("enrichment_stage")
    by_key = {m.asset_key.to_user_string(): m.metadata for m in materialization}
    assert by_key["kafka/raw_keepa_updates_dlq"]["messages_written"].value == len(BAD_RECORDS)
    assert by_key["elasticsearch/products"]["indexed"].value == 30

    # A poison record on the next topic goes to its own DLQ.
    produce(kafka, topics.PRODUCTS_ENRICHED, [("B0BAD00007", b'{"schema_version": 1}')])
    result = run_job("arbitrage")
    assert result.success

    expected = opportunity_events(
        [enrich(validate_raw_update(u), CONFIG) for u in updates], CONFIG, RULES, "ignored"
    ).events
    assert len(expected) == 20  # 10 opportunities, each bought in DE or in GB: all opened
    assert {e["event"] for e in expected} == {"opened"}
    on_topic = [m.json() for m in read_all(kafka, topics.ARBITRAGE_ALERTS)]
    assert sorted(map(json.dumps, map(strip_time, on_topic))) == sorted(
        map(json.dumps, map(strip_time, expected))
    )
    assert all(m.key == m.json()["asin"] for m in read_all(kafka, topics.ARBITRAGE_ALERTS))
    # The index holds each opportunity's current state, one document per opportunity.
    assert es.count(topics.ALERTS_INDEX) == 20
    stored = es.client().search(index=topics.ALERTS_INDEX, size=100)["hits"]["hits"]
    assert {hit["_id"]: strip_time(hit["_source"]) for hit in stored} == {
        e["opportunity_id"]: strip_time(e) for e in expected
    }
    # Each state names the batch that wrote it (its first offset: what a rerun after a crash
    # compares with its committed offset) and keeps the state before it (none: new).
    enriched_at = {
        m.key: (m.partition, m.offset) for m in read_all(kafka, topics.PRODUCTS_ENRICHED)
    }
    for hit in stored:
        by = hit["_source"]["updated_by"]
        assert by["group"] == ARBITRAGE.live_group
        assert by["topic"] == topics.PRODUCTS_ENRICHED
        partition, offset = enriched_at[hit["_source"]["asin"]]
        assert by["partition"] == partition and by["offset"] <= offset
        assert hit["_source"]["base"] is None
    (poison,) = [m.json() for m in read_all(kafka, topics.PRODUCTS_ENRICHED_DLQ)]
    assert "field 'asin' is missing" in poison["error"]
    committed_equals_high_watermark(kafka, ARBITRAGE.live_group, topics.PRODUCTS_ENRICHED)

    # The same ranges again under the live group: its offsets never move back, so the run
    # starts at the committed offsets and does nothing twice (replays are backfills, under
    # their own group: tests/dagster/test_backfill.py).
    versions = {
        hit["_id"]: hit["_version"]
        for hit in es.client().search(index=topics.PRODUCTS_INDEX, size=100, version=True)["hits"][
            "hits"
        ]
    }
    full = [
        {"partition": p, "start": low, "end": high}
        for p, (low, high) in kafka.watermarks(topics.RAW_UPDATES).items()
    ]
    assert run_job(
        "enrichment", {"ops": {"enrichment_stage": {"config": {"offset_ranges": full}}}}
    ).success
    assert run_job("arbitrage").success
    assert es.count(topics.PRODUCTS_INDEX) == 30
    again = {
        hit["_id"]: hit["_version"]
        for hit in es.client().search(index=topics.PRODUCTS_INDEX, size=100, version=True)["hits"][
            "hits"
        ]
    }
    assert again == versions
    assert len(read_all(kafka, topics.ARBITRAGE_ALERTS)) == 20
    assert es.count(topics.ALERTS_INDEX) == 20
    assert len(read_all(kafka, topics.PRODUCTS_ENRICHED)) == 30 + 1


@pytest.mark.usefixtures("clean_pipeline")
def test_an_older_update_never_overwrites_a_newer_one(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    newer = good_updates(1, timestamp="2026-11-26T11:00:00.000Z")[0]
    older = good_updates(1, timestamp="2026-11-26T10:00:00.000Z")[0]
    older["markets"]["FR"]["buy_box"] = 12000  # a different, stale price
    produce(kafka, topics.RAW_UPDATES, [(newer["asin"], encode(newer))])
    assert run_job("enrichment").success
    produce(kafka, topics.RAW_UPDATES, [(older["asin"], encode(older))])
    result = run_job("enrichment")
    assert result.success
    doc = es.client().get(index=topics.PRODUCTS_INDEX, id=newer["asin"])["_source"]
    assert doc["source_timestamp"] == "2026-11-26T11:00:00.000Z"
    assert doc["markets"]["FR"]["buy_box"] == 9000
    metadata = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("enrichment_stage")
    }
    assert metadata["elasticsearch/products"]["unchanged"].value == 1
    committed_equals_high_watermark(kafka, ENRICHMENT.live_group, topics.RAW_UPDATES)


@pytest.mark.usefixtures("clean_pipeline")
def test_sample_end_to_end_alerts_equal_the_domain_functions(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    for job in ("keepa_pull", "enrichment", "arbitrage"):
        assert run_job(job, instance=instance).success, job

    raw = [validate_raw_update(m.json()) for m in read_all(kafka, topics.RAW_UPDATES)]
    products = [enrich(r, CONFIG) for r in raw]
    detection = detect(products, CONFIG, RULES, "ignored")
    events = opportunity_events(products, CONFIG, RULES, "ignored").events
    assert len(events) == len(detection.alerts) > 50  # one pull: every alert opens, once
    expected = {e["opportunity_id"]: strip_time(e) for e in events}
    # The routes the rules removed, per reason, exactly, in the run's metadata (and as the
    # demo reads them from there).
    assert detection.filtered
    assert filtered_routes(instance, 0.0) == (detection.filtered, 0)
    on_topic = [m.json() for m in read_all(kafka, topics.ARBITRAGE_ALERTS)]
    assert len(on_topic) == len(expected)
    assert {a["opportunity_id"]: strip_time(a) for a in on_topic} == expected
    hits = es.client().search(index=topics.ALERTS_INDEX, size=1000)["hits"]["hits"]
    assert {hit["_id"]: strip_time(hit["_source"]) for hit in hits} == expected
    assert es.count(topics.PRODUCTS_INDEX) == 500
    assert read_all(kafka, topics.RAW_UPDATES_DLQ) == []
    committed_equals_high_watermark(kafka, ARBITRAGE.live_group, topics.PRODUCTS_ENRICHED)


@pytest.mark.usefixtures("clean_pipeline")
def test_a_range_past_the_end_of_the_log_processes_nothing(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    """A stale range (the topic was recreated since) must not fall back to earlier offsets."""
    updates = good_updates(6)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in updates])
    stale = [
        PartitionRange(p, high + 50, high + 60)
        for p, (_, high) in kafka.watermarks(topics.RAW_UPDATES).items()
    ]
    runner = StageRunner(StageSetup(ENRICHMENT, es, CONFIG), kafka, idle_timeout_s=3.0)
    with pytest.raises(RangeUnavailableError, match="returned nothing"):
        runner.run(ENRICHMENT.live_group, stale)
    assert read_all(kafka, topics.PRODUCTS_ENRICHED) == []
    lags = kafka.lag(ENRICHMENT.live_group, topics.RAW_UPDATES)
    assert all(lag.committed is None for lag in lags)


@pytest.mark.usefixtures("clean_pipeline")
def test_a_pull_stamped_in_the_future_cannot_freeze_a_product(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    """One update stamped an hour ahead, then a normal one: the first goes to the DLQ (as the
    document's version it would have made every later update count as older)."""
    now = datetime.now(UTC)
    future = raw_update(asin="B0FUTURE01", timestamp=format_utc(now + timedelta(hours=1)))
    normal = raw_update(asin="B0FUTURE01", timestamp=format_utc(now))
    produce(
        kafka, topics.RAW_UPDATES, [(u["asin"], json.dumps(u).encode()) for u in (future, normal)]
    )
    assert run_job("enrichment").success
    doc = es.client().get(index=topics.PRODUCTS_INDEX, id="B0FUTURE01")
    assert doc["_version"] == epoch_ms(normal["timestamp"])
    (dead,) = [m.json() for m in read_all(kafka, topics.RAW_UPDATES_DLQ)]
    assert "60 minutes ahead of this stage's clock" in dead["error"]
    # A later normal pull still updates the document.
    later = raw_update(asin="B0FUTURE01", timestamp=format_utc(now + timedelta(seconds=5)))
    produce(kafka, topics.RAW_UPDATES, [(later["asin"], json.dumps(later).encode())])
    assert run_job("enrichment").success
    doc = es.client().get(index=topics.PRODUCTS_INDEX, id="B0FUTURE01")
    assert doc["_version"] == epoch_ms(later["timestamp"])


@pytest.mark.usefixtures("clean_pipeline")
def test_an_existing_alerts_index_gets_the_rules_fields(es: ElasticsearchClient) -> None:
    """An alerts index created before the rules gets rules_version and signals mapped when the
    indices are ensured (every stage run does), so its strict mapping takes the new alerts."""
    client = es.client()
    client.indices.delete(index=topics.ALERTS_INDEX)
    client.indices.delete_index_template(name=f"arbitrage-{topics.ALERTS_INDEX}")
    old = copy.deepcopy(ALERTS_MAPPING)
    del old["properties"]["rules_version"], old["properties"]["signals"]
    client.indices.create(index=topics.ALERTS_INDEX, mappings=old)
    es.ensure_indices()
    mapped = client.indices.get_mapping(index=topics.ALERTS_INDEX)[topics.ALERTS_INDEX]
    properties = mapped["mappings"]["properties"]
    assert properties["rules_version"] == {"type": "keyword"}
    assert set(properties["signals"]["properties"]) == set(
        ALERTS_MAPPING["properties"]["signals"]["properties"]
    )


def observation_docs(es: ElasticsearchClient) -> dict[str, dict]:
    es.client().indices.refresh(index=topics.PRICE_OBSERVATIONS_INDEX)
    found = es.client().search(index=topics.PRICE_OBSERVATIONS_INDEX, size=1000, version=True)
    return {hit["_id"]: hit for hit in found["hits"]["hits"]}


@pytest.mark.usefixtures("clean_pipeline")
def test_price_observations_are_written_once_per_pull_and_never_twice(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    # Two pulls of the same 4 products (DE, FR, GB each priced): one observation per product
    # and pull, with the three markets.
    early = good_updates(4, timestamp="2026-11-26T10:00:00.000Z")
    late = good_updates(4, timestamp="2026-11-26T11:00:00.000Z")
    late[0]["markets"]["FR"]["buy_box"] = 9900
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in early + late])
    result = run_job("enrichment")
    assert result.success
    stored = observation_docs(es)
    assert len(stored) == 2 * 4
    assert all(set(hit["_source"]["markets"]) == {"DE", "FR", "GB"} for hit in stored.values())
    fr = [
        (hit["_source"]["observed_at"], hit["_source"]["markets"]["FR"]["sell_price"])
        for hit in stored.values()
        if hit["_source"]["asin"] == "B0INTEG000"
    ]
    assert sorted(fr) == [
        (epoch_ms("2026-11-26T10:00:00.000Z"), 9000),
        (epoch_ms("2026-11-26T11:00:00.000Z"), 9900),
    ]
    by_key = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("enrichment_stage")
    }
    assert by_key["elasticsearch/price_observations"]["indexed"].value == 8
    assert by_key["elasticsearch/products"]["indexed"].value == 8  # products counted apart

    # A replay of the whole topic (a backfill's group) writes no second copy, changes none.
    full = [
        PartitionRange(partition, low, high)
        for partition, (low, high) in kafka.watermarks(topics.RAW_UPDATES).items()
    ]
    stats = StageRunner(StageSetup(ENRICHMENT, es, CONFIG), kafka).run(
        ENRICHMENT.replay_group, full
    )
    assert stats.records_in == 8
    assert stats.counters["price_observations_unchanged"] == 8
    assert stats.counters.get("price_observations_indexed", 0) == 0
    again = observation_docs(es)
    assert {k: v["_version"] for k, v in again.items()} == {
        k: v["_version"] for k, v in stored.items()
    }
    committed_equals_high_watermark(kafka, ENRICHMENT.live_group, topics.RAW_UPDATES)
