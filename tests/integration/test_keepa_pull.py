"""The keepa_pull job against the real broker: on the bundled sample and on a local Keepa."""

from __future__ import annotations

import copy
import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.index_templates import PRODUCTS_MAPPING
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.keepa_pull import pull_products
from arbitrage.clients.keepa_sources import DEFAULT_SAMPLE_PATH, KeepaSampleSource
from arbitrage.domain import topics
from arbitrage.domain.keepa_sample import load_sample_document
from arbitrage.domain.messages.signals import SIGNAL_FIELDS
from arbitrage.settings import DATA_DIR, Settings
from pipelines.definitions import build_definitions
from tests.integration.kafka_io import read_all
from tests.keepa_server import KeepaTestServer
from tools.sample_generator import generate_sample

pytestmark = pytest.mark.integration

SECRET = "kq9-SECRET-KEEPA-KEY-77f3"


def run_pull(
    instance: dg.DagsterInstance | None = None,
    raise_on_error: bool = True,
    keepa_config: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """The keepa_pull job of the definitions as the current environment configures them."""
    job = build_definitions(Settings.from_env()).resolve_job_def("keepa_pull")
    run_config = {"resources": {"keepa": {"config": keepa_config}}} if keepa_config else None
    return job.execute_in_process(
        run_config=run_config,
        instance=instance or dg.DagsterInstance.ephemeral(),
        raise_on_error=raise_on_error,
    )


def everything_stored(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Run config, tags, every stored event with its error (and the errors' causes) as text."""
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    stored = json.dumps(run.run_config, default=str) + json.dumps(run.tags)
    for entry in instance.all_logs(result.run_id):
        stored += str(entry.dagster_event) + str(entry.user_message)
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        error = getattr(data, "error", None)
        if error is not None:
            stored += error.to_string()
    return stored


def without_time(update: dict) -> dict:
    return {k: v for k, v in update.items() if k != "timestamp"}


@pytest.mark.usefixtures("clean_pipeline")
def test_sample_pull_produces_one_message_per_asin(
    kafka: KafkaClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KEEPA_API_KEY", raising=False)
    monkeypatch.setenv("KEEPA_SOURCE", "sample")
    first = run_pull()
    assert first.success
    messages = read_all(kafka, topics.RAW_UPDATES)
    document = load_sample_document(DEFAULT_SAMPLE_PATH)
    assert len(messages) == len(document["asins"]) == 500
    assert all(m.key == m.json()["asin"] for m in messages)
    assert len({m.key for m in messages}) == 500

    # The messages equal what the parsing code makes of the same sample (time aside).
    expected = pull_products(
        KeepaSampleSource(),
        document["asins"],
        ("DE", "FR", "IT", "ES", "GB"),
        datetime.now(UTC),
        logging.getLogger("test"),
    )
    on_topic = {m.key: without_time(m.json()) for m in messages}
    assert on_topic == {u["asin"]: without_time(u) for u in expected.updates}
    assert all(m.json()["source"] == "sample" for m in messages)

    # Sentinels stay sentinels: an out-of-stock market has no price anywhere.
    asin, market = document["edge_cases"]["out_of_stock"][0].split("/")
    offer = on_topic[asin]["markets"][market]
    assert offer["amazon"] < 0 and offer["new"] < 0
    assert on_topic[asin]["current_prices"].get(market, -1) == -1 or offer["buy_box"] > 0

    # Same ASIN → same partition in a second pull.
    partition_of = {m.key: m.partition for m in messages}
    assert run_pull().success
    again = read_all(kafka, topics.RAW_UPDATES)
    assert len(again) == 1000
    assert all(partition_of[m.key] == m.partition for m in again)
    metadata = first.asset_materializations_for_node("kafka__raw_keepa_updates")[0].metadata
    assert metadata["messages_produced"].value == 500
    assert metadata["source"].value == "sample"
    # Token cost: the sample costs nothing; what Keepa would charge is estimated per market.
    assert metadata["tokens_consumed"].value == 0
    assert metadata["tokens_per_asin_per_market"].value == 3
    assert metadata["tokens_estimated"].value == 500 * 5 * 3
    assert metadata["tokens_estimated_per_asin"].value == 15.0
    assert "| DE | 500 |" in metadata["tokens_per_market"].value

    # The signals are on the topic: a spike's market carries a 90-day average far below today.
    spike_asin, spike_market = document["signal_archetypes"]["spike"][0].split("/")
    spiking = on_topic[spike_asin]["markets"][spike_market]
    usual = spiking["signals"]["buy_box_avg90"] or spiking["signals"]["new_avg90"]
    assert spiking["buy_box"] > 1.25 * usual or spiking["new"] > 1.25 * usual


@pytest.mark.usefixtures("clean_pipeline")
def test_pull_from_a_keepa_server_never_leaks_the_key(
    kafka: KafkaClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path,
) -> None:
    bodies = generate_sample(120, seed=7)
    asins = list(dict.fromkeys(p["asin"] for body in bodies.values() for p in body["products"]))
    assert len(asins) == 120
    asin_file = tmp_path / "asins.txt"
    asin_file.write_text("# tracked\n" + "\n".join(asins) + "\nNOT-AN-ASIN\n")
    caplog.set_level(logging.DEBUG)
    with KeepaTestServer(bodies=bodies) as server:
        monkeypatch.setenv("KEEPA_SOURCE", "api")
        monkeypatch.setenv("KEEPA_API_KEY", SECRET)
        monkeypatch.setenv("KEEPA_API_URL", server.url)
        monkeypatch.setenv("KEEPA_ASINS_FILE", str(asin_file))
        monkeypatch.setenv("KEEPA_MARKETS", "DE,GB")
        instance = dg.DagsterInstance.ephemeral()
        result = run_pull(instance)
        assert result.success
        requests = server.requests

    # 120 ASINs → 2 batches (100 + 20) per market, the right domains, the key sent.
    assert sorted((r.params["domain"], len(r.asins)) for r in requests) == [
        ("2", 20),
        ("2", 100),
        ("3", 20),
        ("3", 100),
    ]
    assert all(r.params["key"] == SECRET for r in requests)
    # Statistics over 90 days and the buy box data, as the signals need.
    assert all((r.params["stats"], r.params["buybox"]) == ("90", "1") for r in requests)
    metadata = result.asset_materializations_for_node("kafka__raw_keepa_updates")[0].metadata
    assert metadata["tokens_consumed"].value == metadata["tokens_estimated"].value == 120 * 2 * 3
    assert metadata["tokens_per_asin"].value == 6.0
    messages = read_all(kafka, topics.RAW_UPDATES)
    assert {m.key for m in messages} <= set(asins)
    assert len(messages) >= 110  # a few sample ASINs exist in neither DE nor GB
    assert all(m.json()["source"] == "keepa" for m in messages)
    assert all(set(m.json()["markets"]) <= {"DE", "GB"} for m in messages)

    # The key appears in no log line, no stored event, no run config, no metadata.
    run = instance.get_run_by_id(result.run_id)
    stored = json.dumps(run.run_config, default=str) + json.dumps(run.tags)
    stored += "".join(
        str(entry.dagster_event) + str(entry.user_message)
        for entry in instance.all_logs(result.run_id)
    )
    out, err = capfd.readouterr()
    assert SECRET not in caplog.text
    assert SECRET not in stored
    assert SECRET not in out + err
    # The bad line was reported in the run log by number and preview, and skipped.
    assert "line 122: 'NOT-'… (11 characters) is not an ASIN" in stored


def test_the_api_source_without_a_key_fails_the_pull_with_a_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEPA_SOURCE", "api")
    monkeypatch.delenv("KEEPA_API_KEY", raising=False)
    result = run_pull(raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "KEEPA_SOURCE=api needs a Keepa API key in KEEPA_API_KEY" in message
    assert "KEEPA_SOURCE=sample" in message


@pytest.fixture
def data_subdir() -> Iterator[Path]:
    """A scratch directory under data/, the one place run config may choose files from."""
    path = DATA_DIR / f".test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path)


@pytest.mark.usefixtures("clean_pipeline")
def test_a_hostile_asin_file_never_puts_the_key_in_the_run(
    kafka: KafkaClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    data_subdir: Path,
) -> None:
    """An env file chosen as the ASIN list (allowed: it is under data/): lines by number only."""
    bodies = generate_sample(5, seed=11)
    asins = list(dict.fromkeys(p["asin"] for body in bodies.values() for p in body["products"]))
    hostile = data_subdir / "looks-like.env"
    hostile.write_text(
        f"KEEPA_API_KEY={SECRET}\n{asins[0]}\nexport KEEPA_API_KEY='{SECRET}'\n{SECRET}\n"
    )
    caplog.set_level(logging.DEBUG)
    with KeepaTestServer(bodies=bodies) as server:
        monkeypatch.setenv("KEEPA_SOURCE", "api")
        monkeypatch.setenv("KEEPA_API_KEY", SECRET)
        monkeypatch.setenv("KEEPA_API_URL", server.url)
        instance = dg.DagsterInstance.ephemeral()
        # As the launchpad would send it: the key by its variable's name, a file under data/.
        config = {"api_key": {"env": "KEEPA_API_KEY"}, "asins_file": str(hostile)}
        result = run_pull(instance, keepa_config=config)
        assert result.success
        assert {tuple(r.asins) for r in server.requests} == {(asins[0],)}

    stored = everything_stored(instance, result)
    out, err = capfd.readouterr()
    for text in (stored, caplog.text, out + err):
        assert SECRET not in text
    for line in (1, 3, 4):
        assert f"line {line}: " in stored
    assert "line 1: 'KEEP'… (39 characters) is not an ASIN" in stored
    assert len(read_all(kafka, topics.RAW_UPDATES)) == 1


@pytest.mark.parametrize(
    ("keepa_config", "sentence"),
    [
        (
            {"base_url": "https://collector.example"},
            "base_url cannot be changed in run config: the Keepa key is sent only to KEEPA_API_URL",
        ),
        (
            {"base_url": "http://127.0.0.1:9"},
            "base_url cannot be changed in run config",
        ),
        (
            {"asins_file": "/proc/self/environ"},
            "asins_file in run config may only name a file under",
        ),
        (
            {"asins_file": "data/../.env.example"},
            "asins_file in run config may only name a file under",
        ),
    ],
)
def test_run_config_that_would_redirect_or_read_is_refused_with_a_sentence(
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    keepa_config: dict[str, Any],
    sentence: str,
) -> None:
    with KeepaTestServer(bodies=generate_sample(3, seed=5)) as server:
        monkeypatch.setenv("KEEPA_SOURCE", "api")
        monkeypatch.setenv("KEEPA_API_KEY", SECRET)
        monkeypatch.setenv("KEEPA_API_URL", server.url)
        instance = dg.DagsterInstance.ephemeral()
        result = run_pull(instance, raise_on_error=False, keepa_config=keepa_config)
        assert not result.success
        assert server.requests == []  # refused before anything was asked of anyone
    stored = everything_stored(instance, result)
    assert sentence in stored
    out, err = capfd.readouterr()
    assert SECRET not in stored + out + err


def _without_signals(mapping: dict[str, Any]) -> dict[str, Any]:
    """The products mapping as it was before the signals existed."""
    old = copy.deepcopy(mapping)
    for market in old["properties"]["markets"]["properties"].values():
        del market["properties"]["signals"]
    return old


@pytest.mark.usefixtures("clean_pipeline")
def test_signals_reach_products_enriched_and_an_existing_products_index(
    kafka: KafkaClient, es: ElasticsearchClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A products index created before the signals gets them mapped when the indices are
    ensured (as `arbitrage provision` and every stage run do), kept in ``_source``."""
    client = es.client()
    client.indices.delete(index=topics.PRODUCTS_INDEX)
    client.indices.delete_index_template(name=f"arbitrage-{topics.PRODUCTS_INDEX}")
    client.indices.create(index=topics.PRODUCTS_INDEX, mappings=_without_signals(PRODUCTS_MAPPING))
    es.ensure_indices()
    markets = client.indices.get_mapping(index=topics.PRODUCTS_INDEX)[topics.PRODUCTS_INDEX][
        "mappings"
    ]["properties"]["markets"]["properties"]
    assert markets["DE"]["properties"]["signals"] == {"type": "object", "enabled": False}

    monkeypatch.delenv("KEEPA_API_KEY", raising=False)
    monkeypatch.setenv("KEEPA_SOURCE", "sample")
    assert run_pull().success
    job = build_definitions(Settings.from_env()).resolve_job_def("enrichment")
    assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral()).success
    assert read_all(kafka, topics.RAW_UPDATES_DLQ) == []

    document = load_sample_document(DEFAULT_SAMPLE_PATH)
    enriched = {m.key: m.json() for m in read_all(kafka, topics.PRODUCTS_ENRICHED)}
    assert len(enriched) == 500
    dominated = document["signal_archetypes"]["amazon_dominated"][0]
    for code, market in enriched[dominated]["markets"].items():
        assert market["signals"]["buy_box_amazon_pct"] >= 70, code
    dead = document["signal_archetypes"]["dead"][0]
    source = client.get(index=topics.PRODUCTS_INDEX, id=dead)["_source"]
    assert source["markets"] == enriched[dead]["markets"]
    for market in source["markets"].values():
        assert market["signals"]["sales_rank_drops30"] in (None, 0, 1)
        assert market["signals"]["new_oos_pct90"] >= 40
    # Every signal of every market is in the stored document.
    assert set(source["markets"]["DE"]["signals"]) == {name for name, _kind in SIGNAL_FIELDS}
