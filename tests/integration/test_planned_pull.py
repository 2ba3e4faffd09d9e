"""The planned pull (KEEPA_PULL_MODE=planner) against the Keepa simulator, a real Kafka and a
real Elasticsearch: each run spends the balance above the reserve on what the planner ranks
first (here: the biggest price drops a deal source found), never below the reserve, never the
same refresh twice while the stages have not caught up, and never two runs at once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
from dagster._core.utils import make_new_run_id

from arbitrage.clients.discovery import run_source
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.keepa_sources import KeepaHttpClient
from arbitrage.domain import topics
from arbitrage.domain.discovery_config import load_discovery_config
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.money import convert_to_eur_cents
from arbitrage.settings import Settings, SettingsError
from assets.keepa_pull import PULL_TAG
from devservices.keepa_sim.catalog import Catalog
from devservices.keepa_sim.server import SimulatorServer
from pipelines.definitions import build_definitions
from tests.integration.kafka_io import read_all
from tests.keepa_simulator import KEY, ManualTime, serve

RATE = 300
RESERVE = 40
PER_REFRESH = 2 * 3  # DE and FR, 3 tokens each with buybox


@pytest.fixture
def sim() -> Iterator[tuple[SimulatorServer, ManualTime]]:
    server, clock = serve(Catalog.generate(4242, 20_000), rate=RATE)
    yield server, clock
    server.shutdown()
    server.server_close()


def account(server: SimulatorServer) -> dict:
    return requests.get(server.url + "/sim/account", timeout=10).json()


def planner_env(monkeypatch: pytest.MonkeyPatch, url: str, tmp_path: Path) -> None:
    quiet = tmp_path / "discovery.toml"  # no source due: nothing held back for discovery
    quiet.write_text('version = "none"\n')
    for name, value in {
        "KEEPA_SOURCE": "api",
        "KEEPA_API_URL": url,
        "KEEPA_API_KEY": KEY,
        "KEEPA_MARKETS": "DE,FR",
        "KEEPA_PULL_MODE": "planner",
        "KEEPA_RESERVE_TOKENS": str(RESERVE),
        "ARBITRAGE_DISCOVERY_FILE": str(quiet),
    }.items():
        monkeypatch.setenv(name, value)


def pulled(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.mark.slow  # three pulls through Dagster: make test-slow
@pytest.mark.usefixtures("clean_pipeline")
def test_each_run_spends_the_balance_above_the_reserve_on_the_biggest_drops(
    sim: tuple[SimulatorServer, ManualTime],
    es: ElasticsearchClient,
    kafka: KafkaClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server, clock = sim
    for index in (topics.TRACKED_ASINS_INDEX, topics.KEEPA_LEDGER_INDEX):
        es.client().options(ignore_status=404).indices.delete(index=index)
    deals = next(s for s in load_discovery_config().sources if s.kind == "deals")
    deals = replace(deals, market="DE")
    found = run_source(KeepaHttpClient(KEY, base_url=server.url), es, deals)
    assert len(found.asins) == 150 and len(found.drops) == 150  # one page, 5 tokens
    planner_env(monkeypatch, server.url, tmp_path)
    job = build_definitions(Settings.from_env()).resolve_job_def("keepa_pull")
    instance = dg.DagsterInstance.ephemeral()

    first = pulled(job.execute_in_process(instance=instance))
    affordable = (RATE - 5 - RESERVE) // PER_REFRESH
    assert first["tokens_planned"] == affordable * PER_REFRESH
    assert first["refreshes_by_purpose"] == {"new": affordable}
    assert first["tokens_consumed"] == affordable * PER_REFRESH == first["tokens_new"]
    after = account(server)
    assert after["consumed"] == 5 + affordable * PER_REFRESH
    assert RATE - after["consumed"] >= RESERVE  # never below the reserve
    messages = read_all(kafka, topics.RAW_UPDATES)
    refreshed = {m.key for m in messages}
    assert len(messages) == first["messages_produced"]
    assert len(refreshed) + first["asins_not_found"] == affordable
    # The biggest drops in EUR, as the deals reported them, were bought first.
    eur_per_unit = load_fee_config().fx(MARKETPLACES["DE"].currency)
    by_drop = sorted(
        found.drops,
        key=lambda a: (-convert_to_eur_cents(found.drops[a].drop_minor, eur_per_unit), a),
    )
    assert refreshed <= set(by_drop[:affordable])
    # Dated by Keepa's clock, not the wall clock.
    stamped = {m.json()["timestamp"][:16] for m in messages}
    assert len(stamped) == 1 and stamped.pop().startswith("2023-11-14T22:")

    # At once again: what is left above the reserve buys no whole refresh; nothing is spent.
    second = pulled(job.execute_in_process(instance=instance))
    assert second["tokens_planned"] == 0 and account(server)["consumed"] == after["consumed"]

    # A minute later: 300 more tokens, and the planner remembers (the ledger) what it refreshed
    # although no stage has run: the next drops, none of the first run's.
    clock.advance_simulated_minutes(1, 60.0)
    third = pulled(job.execute_in_process(instance=instance))
    assert third["refreshes_by_purpose"] == {
        "new": (RATE - 5 - RESERVE + RATE) // PER_REFRESH - affordable
    }
    later = {m.key for m in read_all(kafka, topics.RAW_UPDATES)} - refreshed
    assert later and not later & refreshed


def test_a_pull_never_starts_while_another_is_queued_or_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    planner_env(monkeypatch, "http://127.0.0.1:1", tmp_path)  # no request is made
    defs = build_definitions(Settings.from_env())
    schedule = defs.get_schedule_def("keepa_pull_schedule")
    assert schedule.cron_schedule == "* * * * *"  # the planner's default: every minute
    with dg.instance_for_test() as instance:

        def tick() -> Any:
            # A context opened and closed: evaluating one left unclosed would leave its own
            # instance as Dagster's current one after the test (and break later loads).
            with dg.build_schedule_context(instance=instance) as context:
                return schedule.evaluate_tick(context)

        (request,) = tick().run_requests or []
        job = defs.resolve_job_def("keepa_pull")
        assert job.tags[PULL_TAG] == "pull"
        for status in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTED):
            run = dg.DagsterRun(job.name, run_id=make_new_run_id(), status=status, tags=job.tags)
            instance.add_run(run)
            skipped = tick()
            assert not skipped.run_requests
            assert run.run_id in (skipped.skip_message or "")
            instance.delete_run(run.run_id)
        # The last one finished: the next tick pulls again.
        assert tick().run_requests
    # And Dagster itself admits one pull at a time, whatever launched it.
    limits = Path("dagster.yaml").read_text()
    assert "key: arbitrage/keepa_pull\n        limit: 1" in limits
    assert request is not None


def test_the_planner_needs_keepas_api() -> None:
    with pytest.raises(SettingsError, match="KEEPA_SOURCE=api"):
        Settings.from_env({"KEEPA_SOURCE": "sample", "KEEPA_PULL_MODE": "planner"})
    with pytest.raises(SettingsError, match="not a pull mode"):
        Settings.from_env({"KEEPA_PULL_MODE": "sometimes"})


def test_the_own_list_keeps_its_own_schedule_when_the_planner_pulls_every_minute() -> None:
    settings = Settings.from_env({"KEEPA_SOURCE": "api", "KEEPA_PULL_MODE": "planner"})
    assert settings.keepa_pull_cron == "* * * * *"
    definitions = build_definitions(settings)
    crons = {s.job_name: s.cron_schedule for s in definitions.schedules or ()}
    assert crons["keepa_pull"] == "* * * * *"
    assert crons["discover_asins_file"] == "*/15 * * * *"
    moved = Settings.from_env({"KEEPA_OWN_LIST_CRON": "0 * * * *"})
    own_list = {s.job_name: s.cron_schedule for s in build_definitions(moved).schedules or ()}
    assert own_list["discover_asins_file"] == "0 * * * *"
