"""Keepa's own price history, end to end: a pull with KEEPA_HISTORY_DAYS=30 from a local
Keepa-format server, the enrichment stage's price observations, replays and the next pull's
overlapping history, and the opportunities page's reader."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.keepa_history import CSV_BUY_BOX_SHIPPING, CSV_NEW, keepa_minutes_to_ms
from arbitrage.domain.stage_specs import ENRICHMENT
from arbitrage.engine.ranges import PartitionRange
from arbitrage.engine.runner import StageRunner
from arbitrage.engine.stage_setup import StageSetup
from arbitrage.settings import Settings
from arbitrage.web.queries import price_history
from pipelines.definitions import build_definitions
from tests.integration.kafka_io import read_all
from tests.keepa_server import KeepaTestServer
from tools.sample_generator import generate_sample

pytestmark = pytest.mark.integration
CONFIG = load_fee_config()
DAY = 24 * 60  # Keepa minutes


def run(name: str) -> dg.ExecuteInProcessResult:
    job = build_definitions(Settings.from_env()).resolve_job_def(name)
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral())


def csv(new: list[int] | None = None, buy_box: list[int] | None = None) -> list[Any]:
    arrays: list[Any] = [None] * (CSV_BUY_BOX_SHIPPING + 1)
    arrays[CSV_NEW], arrays[CSV_BUY_BOX_SHIPPING] = new, buy_box
    return arrays


def observations(es: ElasticsearchClient) -> dict[str, dict[str, Any]]:
    es.client().indices.refresh(index=topics.PRICE_OBSERVATIONS_INDEX)
    found = es.client().search(index=topics.PRICE_OBSERVATIONS_INDEX, size=1000, version=True)
    return {hit["_id"]: hit for hit in found["hits"]["hits"]}


@pytest.mark.usefixtures("clean_pipeline")
def test_a_pull_with_history_indexes_each_point_once(
    kafka: KafkaClient, es: ElasticsearchClient, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    bodies = generate_sample(12, seed=5)
    by_market = {
        market: {p["asin"]: p for p in bodies[market]["products"]} for market in ("DE", "GB")
    }
    both = [asin for asin in by_market["DE"] if asin in by_market["GB"]]
    assert len(both) >= 4
    with_history, without = both[:3], both[3]
    now = int(datetime.now(UTC).timestamp()) // 60 - 21_564_000
    t40, t10, t5, t1 = now - 40 * DAY, now - 10 * DAY, now - 5 * DAY, now - 1 * DAY
    for asin in with_history:
        # DE: new at 20.00 from 40 days ago (still in effect), 21.00 from 10 days ago; a buy
        # box at 24.50 + 0.50 shipping from 5 days ago. GB: new at £30.00 from a day ago.
        by_market["DE"][asin]["csv"] = csv(new=[t40, 2000, t10, 2100], buy_box=[t5, 2450, 50])
        by_market["GB"][asin]["csv"] = csv(new=[t1, 3000])
    asin_file = tmp_path / "asins.txt"
    asin_file.write_text("\n".join(both[:4]) + "\n")

    with KeepaTestServer(bodies=bodies) as server:
        monkeypatch.setenv("KEEPA_SOURCE", "api")
        monkeypatch.setenv("KEEPA_API_KEY", "local-test-key")
        monkeypatch.setenv("KEEPA_API_URL", server.url)
        monkeypatch.setenv("KEEPA_ASINS_FILE", str(asin_file))
        monkeypatch.setenv("KEEPA_MARKETS", "DE,GB")
        monkeypatch.setenv("KEEPA_HISTORY_DAYS", "30")
        pull = run("keepa_pull")
        assert pull.success
        requests = server.requests
        # The request asks for 30 days of history, at the documented cost (history is free).
        assert all(
            (r.params["history"], r.params["days"], r.params["buybox"]) == ("1", "30", "1")
            for r in requests
        )
        metadata = pull.asset_materializations_for_node("kafka__raw_keepa_updates")[0].metadata
        assert metadata["history_days"].value == 30
        assert metadata["history_points"].value == 3 * 3  # DE 2 + GB 1 per ASIN
        assert metadata["history_markets"].value == 6
        assert metadata["history_series_dropped"].value == {}
        assert metadata["tokens_per_asin_per_market"].value == 3
        assert metadata["tokens_consumed"].value == metadata["tokens_estimated"].value == 4 * 2 * 3

        # The raw updates carry each market's points: (ms, buy, sell) in minor units.
        updates = {m.key: m.json() for m in read_all(kafka, topics.RAW_UPDATES)}
        assert set(updates) == set(both[:4])
        t10_ms, t5_ms, t1_ms = (keepa_minutes_to_ms(t) for t in (t10, t5, t1))
        for asin in with_history:
            assert updates[asin]["markets"]["DE"]["history"] == [
                [t10_ms, 2100, 2100],  # no buy box yet: sell = new
                [t5_ms, 2100, 2500],  # the buy box with its shipping
            ]
            assert updates[asin]["markets"]["GB"]["history"] == [[t1_ms, 3000, 3000]]
        assert all("history" not in m for m in updates[without]["markets"].values())

        # Enrichment: the products as always, and one observation per (ASIN, time).
        assert run("enrichment").success
        assert read_all(kafka, topics.RAW_UPDATES_DLQ) == []
        enriched = {m.key: m.json() for m in read_all(kafka, topics.PRODUCTS_ENRICHED)}
        assert all(
            "history" not in market for p in enriched.values() for market in p["markets"].values()
        )
        es.client().indices.refresh(index=topics.PRODUCTS_INDEX)
        stored_product = es.client().get(index=topics.PRODUCTS_INDEX, id=with_history[0])
        assert all("history" not in m for m in stored_product["_source"]["markets"].values())

        stored = observations(es)
        pull_ms = enriched[with_history[0]]["source_timestamp_ms"]
        expected_ids = {f"{a}:{pull_ms}" for a in both[:4]} | {
            f"{a}:{t}" for a in with_history for t in (t10_ms, t5_ms, t1_ms)
        }
        assert set(stored) == expected_ids
        point = stored[f"{with_history[0]}:{t1_ms}"]["_source"]
        assert point["observed_at"] == t1_ms
        # £30.00 at the pull's 1.1450 EUR per GBP: history in EUR at today's rate.
        assert point["markets"] == {
            "GB": {
                "currency": "GBP",
                "buy_price": 3000,
                "sell_price": 3000,
                "buy_price_eur_cents": 3435,
                "sell_price_eur_cents": 3435,
            }
        }

        # A replay of the whole topic writes nothing twice and changes nothing.
        full = [
            PartitionRange(partition, low, high)
            for partition, (low, high) in kafka.watermarks(topics.RAW_UPDATES).items()
        ]
        stats = StageRunner(StageSetup(ENRICHMENT, es, CONFIG), kafka).run(
            ENRICHMENT.replay_group, full
        )
        assert stats.records_in == 4
        assert stats.counters["price_observations_unchanged"] == len(expected_ids)
        assert stats.counters.get("price_observations_indexed", 0) == 0
        again = observations(es)
        assert {k: v["_version"] for k, v in again.items()} == {
            k: v["_version"] for k, v in stored.items()
        }

        # The next pull sends the same history again: only its own observations are new.
        assert run("keepa_pull").success
        second = run("enrichment")
        assert second.success
        after = observations(es)
        assert len(after) == len(expected_ids) + 4
        by_key = {
            m.asset_key.to_user_string(): m.metadata
            for m in second.asset_materializations_for_node("enrichment_stage")
        }
        assert by_key["elasticsearch/price_observations"]["indexed"].value == 4

    # The opportunities page reads Keepa's points like the pulls' own, oldest first.
    history = price_history(es, with_history[0])
    assert [at for at, _, _ in history["DE"]][:2] == [t10_ms, t5_ms]
    assert history["DE"][1] == (t5_ms, 2100, 2500)
    assert history["GB"][0][0] == t1_ms
    assert len(history["DE"]) == 2 + 2  # two history points, two pulls
