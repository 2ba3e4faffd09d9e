"""Discovery against the Keepa simulator (a real HTTP server) into the registry in the real
Elasticsearch: Product Finder, Deals and Best Sellers page and cost as Keepa documents, what
they find is tracked with its provenance in Keepa's time, ages out when no source finds it
again, and the seller's own list is a source of its own."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
import requests

from arbitrage.cli.main import main as cli_main
from arbitrage.clients.discovery import run_source
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.keepa_ledger import spend_by_hour
from arbitrage.clients.keepa_sources import KeepaHttpClient
from arbitrage.clients.tracked_asins import aged_out, record_own_list, tracked
from arbitrage.domain.discovery_config import OWN_LIST, DiscoverySource, load_discovery_config
from arbitrage.domain.topics import KEEPA_LEDGER_INDEX, TRACKED_ASINS_INDEX
from arbitrage.settings import Settings
from assets.discovery import REGISTRY_KEY
from devservices.keepa_sim.catalog import Catalog
from devservices.keepa_sim.finder import product_finder
from devservices.keepa_sim.server import SimulatorServer
from pipelines.definitions import build_definitions
from tests.keepa_simulator import KEY, START_MS, ManualTime, serve

HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.generate(777, 20_000)


@pytest.fixture
def sim(catalog: Catalog) -> Iterator[tuple[SimulatorServer, ManualTime, KeepaHttpClient]]:
    server, clock = serve(catalog, rate=500)

    def sleep(seconds: float) -> None:
        clock.now += seconds

    yield server, clock, KeepaHttpClient(KEY, base_url=server.url, sleep=sleep)
    server.shutdown()
    server.server_close()


@pytest.fixture
def registry(es: ElasticsearchClient) -> Iterator[ElasticsearchClient]:
    es.client().options(ignore_status=404).indices.delete(index=TRACKED_ASINS_INDEX)
    yield es


def account(server: SimulatorServer) -> dict:
    return requests.get(server.url + "/sim/account", timeout=10).json()


FINDER = DiscoverySource(
    name="de-test-finder",
    kind="finder",
    market="DE",
    schedule="*/30 * * * *",
    max_age_hours=2,
    why="a test selection",
    pages=3,
    per_page=100,
    selection={"current_SALES_lte": 100_000, "current_NEW_gte": 2_000},
)


def test_a_finder_source_tracks_what_it_finds_with_provenance_in_keepas_time(
    sim: tuple[SimulatorServer, ManualTime, KeepaHttpClient], registry: ElasticsearchClient
) -> None:
    server, clock, client = sim
    run = run_source(client, registry, FINDER)
    assert run.pages == 3 and len(run.asins) == 300 and run.total_results > 300
    # 10 + 1 per 100 ASINs a page, three pages: the simulator's own counter agrees.
    assert run.tokens_consumed == 3 * 11 == account(server)["consumed"]
    found = {t.asin: t for t in tracked(registry, run.at_ms)}
    assert set(found) == set(run.asins)
    entry = found[run.asins[0]].sources[FINDER.name]
    assert entry["first_found_ms"] == entry["last_found_ms"] == run.at_ms
    assert entry["market"] == "DE" and entry["why"] == "a test selection"
    assert found[run.asins[0]].expires_ms == run.at_ms + 2 * HOUR_MS

    # An hour later the same selection finds some again (their last_found moves, first stays);
    # three hours after the first run, those not found since have aged out.
    clock.advance_simulated_minutes(60, 60.0)
    again = run_source(client, registry, FINDER)
    assert again.at_ms >= run.at_ms + HOUR_MS
    refound = set(run.asins) & set(again.asins)
    assert refound, "the market moved, but not everything changed within an hour"
    later = run.at_ms + 3 * HOUR_MS - 1
    still = {t.asin: t for t in tracked(registry, later)}
    assert set(still) == set(again.asins)
    kept = still[next(iter(refound))].sources[FINDER.name]
    assert kept["first_found_ms"] == run.at_ms and kept["last_found_ms"] == again.at_ms
    assert aged_out(registry, later) == len(set(run.asins) - set(again.asins))


def test_a_short_page_ends_the_paging(
    sim: tuple[SimulatorServer, ManualTime, KeepaHttpClient],
    registry: ElasticsearchClient,
    catalog: Catalog,
) -> None:
    server, _, client = sim
    # A selection with fewer matches than one page, found on the market itself.
    minute = (client.token_status().timestamp_ms - START_MS) / 60_000
    for low in range(20_000, 31_000, 500):
        selection = {"current_SALES_lte": 1_000, "current_NEW_gte": low}
        if product_finder(catalog, "DE", minute, {**selection, "perPage": 100}).total_results < 90:
            break
    narrow = replace(FINDER, name="de-narrow", pages=5, selection=selection)
    run = run_source(client, registry, narrow)
    assert run.pages == 1 and len(run.asins) == run.total_results < 100
    assert run.tokens_consumed == 11 == account(server)["consumed"]


def test_deals_and_best_sellers_sources(
    sim: tuple[SimulatorServer, ManualTime, KeepaHttpClient], registry: ElasticsearchClient
) -> None:
    server, _, client = sim
    sources = {s.kind: s for s in load_discovery_config().sources}
    deals = run_source(client, registry, replace(sources["deals"], pages=2))
    best = run_source(client, registry, sources["best_sellers"])
    assert deals.asins and best.asins
    assert deals.tokens_consumed == 5 * deals.pages
    assert best.tokens_consumed == 50
    assert account(server)["consumed"] == deals.tokens_consumed + best.tokens_consumed
    now = max(deals.at_ms, best.at_ms)
    names = {name for t in tracked(registry, now) for name in t.sources}
    assert names == {sources["deals"].name, sources["best_sellers"].name}


def test_two_sources_finding_the_same_asins_at_once_both_keep_their_entry(
    sim: tuple[SimulatorServer, ManualTime, KeepaHttpClient], registry: ElasticsearchClient
) -> None:
    server, _, _ = sim
    twins = [replace(FINDER, name=f"twin-{n}", pages=2) for n in range(4)]
    runs: list = []

    def discover(source: DiscoverySource) -> None:
        runs.append(run_source(KeepaHttpClient(KEY, base_url=server.url), registry, source))

    threads = [threading.Thread(target=discover, args=(s,)) for s in twins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(runs) == 4
    now = max(r.at_ms for r in runs)
    entries = {t.asin: set(t.sources) for t in tracked(registry, now)}
    together = set.intersection(*(set(r.asins) for r in runs))
    assert together
    assert all(entries[a] == {t.name for t in twins} for a in together)


def test_the_sellers_own_list_is_tracked_until_it_leaves_the_list(
    sim: tuple[SimulatorServer, ManualTime, KeepaHttpClient],
    registry: ElasticsearchClient,
    catalog: Catalog,
) -> None:
    _, _, client = sim
    finder = run_source(client, registry, replace(FINDER, pages=1))
    shared = finder.asins[0]
    own = [a for a in catalog.asins(range(1000)) if a not in finder.asins][:5]
    now = client.token_status().timestamp_ms
    assert now is not None
    record_own_list(registry, own, now)
    record_own_list(registry, [*own[1:], shared], now + 1)
    far_future = now + 10_000 * HOUR_MS
    tracked_now = {t.asin: set(t.sources) for t in tracked(registry, now + 2)}
    assert own[0] not in tracked_now  # left the list, found by nothing else: gone
    assert all(OWN_LIST in tracked_now[a] for a in own[1:])
    assert tracked_now[shared] == {OWN_LIST, FINDER.name}
    # The list never ages out; the finder's entry does.
    later = {t.asin for t in tracked(registry, far_future)}
    assert later == {*own[1:], shared}


def test_the_discovery_jobs_run_from_the_definitions_and_show_the_registry(
    sim: tuple[SimulatorServer, ManualTime, KeepaHttpClient],
    registry: ElasticsearchClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Dagster wiring: a source's job as the environment configures it, its metadata, the
    registry's observation; with the sample source, a sentence instead of a crash."""
    server, _, _ = sim
    monkeypatch.setenv("KEEPA_SOURCE", "api")
    monkeypatch.setenv("KEEPA_API_URL", server.url)
    monkeypatch.setenv("KEEPA_API_KEY", KEY)
    defs = build_definitions(Settings.from_env())
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("discover_de_electronics_sellers").execute_in_process(
        instance=instance
    )
    assert result.success
    (materialized,) = result.get_asset_materialization_events()
    metadata = materialized.materialization.metadata
    found = metadata["asins_found"].value
    assert found > 0 and metadata["tokens_consumed"].value == account(server)["consumed"]
    observed = instance.fetch_observations(REGISTRY_KEY, limit=1).records
    assert observed[0].asset_observation.metadata["tracked"].value == found

    monkeypatch.setenv("KEEPA_SOURCE", "sample")
    monkeypatch.delenv("KEEPA_API_KEY")
    sample_defs = build_definitions(Settings.from_env())
    refused = sample_defs.resolve_job_def("discover_it_new_price_drops").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not refused.success
    failure = refused.get_step_failure_events()[0].event_specific_data.error
    assert "KEEPA_SOURCE=api" in failure.message


@pytest.mark.usefixtures("clean_pipeline")
def test_the_token_ledger_equals_the_accounts_own_counter(
    registry: ElasticsearchClient,
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A pull and a discovery run against the simulator: every request in the ledger, by
    purpose, and `arbitrage tokens` says what the account's counter says. (The runs sleep
    in real time on a 429, and this simulator's clock does not move: it starts with enough.)"""
    server, _ = serve(catalog, rate=500, start_tokens=5_000)
    es = registry
    es.client().options(ignore_status=404).indices.delete(index=KEEPA_LEDGER_INDEX)
    asins_file = tmp_path / "asins.txt"
    asins_file.write_text("\n".join(catalog.asins(range(150))) + "\n")
    monkeypatch.setenv("KEEPA_SOURCE", "api")
    monkeypatch.setenv("KEEPA_API_URL", server.url)
    monkeypatch.setenv("KEEPA_API_KEY", KEY)
    monkeypatch.setenv("KEEPA_ASINS_FILE", str(asins_file))
    monkeypatch.setenv("KEEPA_MARKETS", "DE,FR")
    defs = build_definitions(Settings.from_env())
    instance = dg.DagsterInstance.ephemeral()
    for job in ("keepa_pull", "discover_de_electronics_sellers"):
        assert defs.resolve_job_def(job).execute_in_process(instance=instance).success
    counter = account(server)["consumed"]
    # 150 ASINs in two markets, 3 tokens each (buybox), in batches of 100: 4 requests.
    spends = {s.purpose: s for s in spend_by_hour(es, 0, 2**62)}
    assert spends["refresh"].tokens == 150 * 2 * 3 and spends["refresh"].requests == 4
    assert spends["discovery:de-electronics-sellers"].tokens > 10
    assert sum(s.tokens for s in spends.values()) == counter
    assert cli_main(["tokens"]) == 0
    assert f"{counter} tokens in 5 Keepa requests" in capsys.readouterr().out
    server.shutdown()
    server.server_close()


def test_the_plan_spends_the_hours_tokens_on_the_registry(
    sim: tuple[SimulatorServer, ManualTime, KeepaHttpClient],
    registry: ElasticsearchClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`arbitrage plan` on the simulator's clock and balance: what discovery put in the
    registry, never refreshed yet, is what the hour's refreshes buy; the discovery sources due
    in the hour take their cost; nothing beyond what is granted."""
    server, _, client = sim
    # No refresh in the ledger (another test's pull would count as these ASINs' last refresh).
    registry.client().options(ignore_status=404).indices.delete(index=KEEPA_LEDGER_INDEX)
    run_source(client, registry, FINDER)  # 300 ASINs tracked
    monkeypatch.setenv("KEEPA_SOURCE", "api")
    monkeypatch.setenv("KEEPA_API_URL", server.url)
    monkeypatch.setenv("KEEPA_API_KEY", KEY)
    monkeypatch.setenv("KEEPA_MARKETS", "DE,FR")
    assert cli_main(["plan", "--reserve", "50"]) == 0
    out = capsys.readouterr().out
    assert "300 ASINs tracked; reserve 50" in out
    spent, granted = (int(n) for n in re.findall(r"(\d+) of (\d+) tokens granted", out)[0])
    # 500 now (less the Finder's 33) + 59 refills of 500; the reserve never spent.
    assert granted == 500 - 33 + 59 * 500 and spent <= granted - 50
    # Tokens are not what binds 300 ASINs: the minimum interval (5 minutes) is. Each is
    # refreshed once as new, then at most every 5 minutes: 12 times in the hour.
    assert re.search(r"^new\s+300\s+1800$", out, re.M)
    rotated = re.search(r"^rotate\s+(\d+)\s+(\d+)$", out, re.M)
    assert rotated and int(rotated.group(1)) == 300 * 11
