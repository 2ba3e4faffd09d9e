"""`make demo`: the whole pipeline on the Keepa simulator (or the bundled sample), driven by
Dagster's daemon.

With the simulator running (`make demo` starts it: KEEPA_SIM=1), the demo pulls from it as from
Keepa: it runs every discovery source of ARBITRAGE_DISCOVERY_FILE once (Product Finder, Deals,
Best Sellers) and the seller's own list (a few of the simulator's ASINs), then one planned pull
(KEEPA_PULL_MODE=planner) spends the token balance on the registry, and at the end it shows
which sources found the ASINs that became alerts, and the token ledger beside the simulator's
own counter. KEEPA_SOURCE=sample pulls the bundled sample instead, as before.

Starts Dagster the way it runs in production — the code location's gRPC server, the webserver and
the daemon, three processes supervised by devservices.supervisor (a process that dies is restarted,
and a line says so), and beside them the opportunities page (`arbitrage web`, ARBITRAGE_WEB_PORT,
arbitrage/web/) — with a project-local DAGSTER_HOME and the schedule and sensors on, launches
one Keepa pull, waits while the sensors carry it through enrichment and
arbitrage (printing the lag of each stage), then prints the alerts with their signals, the routes
the rules (ARBITRAGE_RULES_FILE) filtered out per reason, read from the arbitrage runs' metadata,
and the addresses of the UI and the page. Both keep running until Ctrl-C, or the script exits
at once with DEMO_EXIT=1. Runs follow their partition until idle for ARBITRAGE_RUN_IDLE_S, 10 s
here unless set, so the filter counts are final soon after the pipeline has caught up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from arbitrage.cli.main import alerts_table  # noqa: E402
from arbitrage.clients.kafka import KafkaClient  # noqa: E402
from arbitrage.clients.keepa_ledger import spend_by_hour  # noqa: E402
from arbitrage.clients.tracked_asins import tracked  # noqa: E402
from arbitrage.domain import topics  # noqa: E402
from arbitrage.domain.discovery_config import load_discovery_config  # noqa: E402
from arbitrage.domain.stage_specs import ARBITRAGE, ENRICHMENT, NOTIFICATIONS  # noqa: E402
from arbitrage.engine.processors import FILTERED_PREFIX  # noqa: E402
from arbitrage.settings import Settings  # noqa: E402
from arbitrage.web.queries import sources_by_asin  # noqa: E402
from assets.keys import topic_asset_key  # noqa: E402
from devservices.dagster_instance import workspace_env  # noqa: E402
from devservices.dagster_processes import (  # noqa: E402
    CODE_SERVER,
    END_RUNS_S,
    DagsterProcesses,
    DagsterStartError,
    url_answers,
)
from devservices.errors import DevServicesError  # noqa: E402
from devservices.keepa_sim.catalog import Catalog  # noqa: E402
from devservices.keepa_simulator import env_path  # noqa: E402
from devservices.process import port_open  # noqa: E402
from devservices.settings import Settings as DevSettings  # noqa: E402
from devservices.supervisor import Event  # noqa: E402

PORT = int(os.environ.get("DAGSTER_PORT", "3000"))
UI = f"http://127.0.0.1:{PORT}"
TIMEOUT_S = float(os.environ.get("DEMO_TIMEOUT", "300"))


def say(text: str) -> None:
    print(text, flush=True)


def report_event(event: Event) -> None:
    """The supervisor's news: a Dagster process died, and when it comes back."""
    say(f"!! {time.strftime('%H:%M:%S')} {event.describe()}")


def total_lag(kafka: KafkaClient, group: str, topic: str) -> int:
    return sum(lag.lag for lag in kafka.lag(group, topic))


def wait_for_pipeline(kafka: KafkaClient, pull_done: Callable[[], bool]) -> None:
    """Until the pull has finished and every stage has caught up with it (the notifications
    stage too: with config/notifications.toml it reads the alerts and delivers to nobody)."""
    started = time.monotonic()
    settled = 0
    while True:
        raw_lag = total_lag(kafka, ENRICHMENT.live_group, topics.RAW_UPDATES)
        enriched_lag = total_lag(kafka, ARBITRAGE.live_group, topics.PRODUCTS_ENRICHED)
        alerts_lag = total_lag(kafka, NOTIFICATIONS.live_group, topics.ARBITRAGE_ALERTS)
        done = pull_done()
        say(
            f"   {time.monotonic() - started:5.0f}s  pull {'done' if done else 'running'}  "
            f"lag enrichment {raw_lag:>5}  lag arbitrage {enriched_lag:>5}  "
            f"lag notifications {alerts_lag:>5}"
        )
        caught_up = raw_lag == 0 and enriched_lag == 0 and alerts_lag == 0
        settled = settled + 1 if done and caught_up else 0
        if settled >= 2:  # twice in a row: nothing left in flight between the stages
            return
        if time.monotonic() - started > TIMEOUT_S:
            raise SystemExit(
                f"the sensors did not catch up within {TIMEOUT_S:.0f}s; open {UI}/automation "
                "to see their ticks, and `arbitrage lag` for the offsets"
            )
        time.sleep(2)


def filtered_routes(instance: Any, since: float) -> tuple[dict[str, int], int]:
    """Routes the rules removed per reason, summed over the arbitrage runs started since
    ``since`` (epoch s), and how many of those runs are still going. Each run's latest
    materialization of the alerts topic carries its totals so far (assets/stage_assets.py)."""
    import dagster as dg

    runs = [
        run
        for run in instance.get_runs(dg.RunsFilter(job_name=ARBITRAGE.name))
        if (instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp() >= since)
    ]
    running = sum(1 for run in runs if not run.is_finished)
    wanted = {run.run_id for run in runs}
    records = instance.fetch_materializations(
        topic_asset_key(topics.ARBITRAGE_ALERTS), limit=1000
    ).records  # newest first
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.run_id in wanted and record.run_id not in latest:
            latest[record.run_id] = record.asset_materialization.metadata
    totals: dict[str, int] = {}
    for metadata in latest.values():
        for name, value in metadata.items():
            if name.startswith(FILTERED_PREFIX):
                reason = name.removeprefix(FILTERED_PREFIX)
                totals[reason] = totals.get(reason, 0) + int(value.value)
    return totals, running


def wait_for_filter_counts(instance: Any, since: float, wait_s: float) -> dict[str, int]:
    """The counts once the arbitrage runs since ``since`` have ended (or ``wait_s`` passed)."""
    deadline = time.monotonic() + wait_s
    while True:
        totals, running = filtered_routes(instance, since)
        if not running or time.monotonic() > deadline:
            if running:
                say(f"   ({running} arbitrage run(s) still following: counts so far)")
            return totals
        time.sleep(2)


def simulator_env() -> dict[str, str]:
    """The Keepa simulator's client settings (.devservices/keepa-sim.env) when it runs, with
    the planner driving the pull and a seller's own list of a few of its ASINs; else the
    bundled sample. Nothing here overrides what the environment sets."""
    dev = DevSettings.from_env()
    written = env_path(dev)
    if "KEEPA_SOURCE" in os.environ or not written.is_file():
        return {"KEEPA_SOURCE": "sample"}
    found: dict[str, str] = {}
    for line in written.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            found[name] = value.strip("'")
    own_list = dev.state_dir / "demo-asins.txt"
    catalog = Catalog.generate(dev.keepa_sim_seed, dev.keepa_sim_products)
    own_list.write_text("\n".join(catalog.asins(range(0, 5_000, 100))) + "\n")
    return {**found, "KEEPA_PULL_MODE": "planner", "KEEPA_ASINS_FILE": str(own_list)}


def launch(instance: Any, env: dict[str, str], job: str) -> Callable[[], bool]:
    """Launch ``job`` through the code server; the answer says whether its run succeeded (a
    failed run stops the demo)."""
    import dagster as dg

    before = {run.run_id for run in instance.get_runs(dg.RunsFilter(job_name=job))}
    subprocess.run(
        [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", job],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )

    def done() -> bool:
        runs = [r for r in instance.get_runs(dg.RunsFilter(job_name=job)) if r.run_id not in before]
        if any(run.status == dg.DagsterRunStatus.FAILURE for run in runs):
            raise SystemExit(f"the {job} run failed; see {UI}/runs")
        return any(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)

    return done


def discover(instance: Any, env: dict[str, str], settings: Settings) -> None:
    """Every discovery source once, and the own list: the registry the planner spends on."""
    sources = [s.name for s in load_discovery_config(settings.discovery_file).sources]
    say(f"== discovery: {', '.join(sources)} and the own list (dagster job launch)")
    waiting = [launch(instance, env, f"discover_{name.replace('-', '_')}") for name in sources]
    waiting.append(launch(instance, env, "discover_asins_file"))
    deadline = time.monotonic() + TIMEOUT_S
    while not all(done() for done in waiting):
        if time.monotonic() > deadline:
            raise SystemExit(f"discovery did not finish within {TIMEOUT_S:.0f}s; see {UI}/runs")
        time.sleep(1)
    found = tracked(settings.elasticsearch(), 0)
    kinds: dict[str, int] = {}
    for item in found:
        for finding in item.sources.values():
            kinds[finding["kind"]] = kinds.get(finding["kind"], 0) + 1
    say(
        f"   {len(found)} ASINs tracked: "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    )


def show_provenance_and_tokens(es: Any, settings: Settings) -> None:
    """Which kinds of source found the ASINs that became alerts; the token ledger beside the
    simulator's own counter (equal while no request is in flight)."""
    alerted = {
        hit["_source"]["asin"]
        for hit in es.client().search(
            index=topics.ALERTS_INDEX, size=10_000, source=["asin"], query={"match_all": {}}
        )["hits"]["hits"]
    }
    by_kind: dict[str, set[str]] = {}
    for asin, found_by in sources_by_asin(es, sorted(alerted)).items():
        for _, kind in found_by:
            by_kind.setdefault(kind, set()).add(asin)
    say(f"== the {len(alerted)} alerted ASINs, by the kind of source that found them")
    for kind, asins in sorted(by_kind.items(), key=lambda item: -len(item[1])):
        say(f"   {kind:<14} {len(asins):>5}")
    import requests

    account = requests.get(f"{settings.keepa_api_url}/sim/account", timeout=10).json()
    # This simulator's requests only: an earlier demo's stay in the ledger, its account not.
    started_ms = account["timestamp"] - int(account["simulatedMinute"] * 60_000)
    spends = spend_by_hour(es, started_ms, 2**62)
    ledger_total = sum(s.tokens for s in spends)
    say("== Keepa tokens since the simulator started (arbitrage tokens: the ledger, by purpose)")
    by_purpose: dict[str, int] = {}
    for spend in spends:
        by_purpose[spend.purpose] = by_purpose.get(spend.purpose, 0) + spend.tokens
    for purpose, tokens in sorted(by_purpose.items(), key=lambda item: -item[1]):
        say(f"   {purpose:<36} {tokens:>7}")
    say(
        f"   ledger {ledger_total} tokens; the simulator's account: {account['consumed']} "
        f"consumed of {account['granted']} granted"
    )
    if ledger_total > account["consumed"]:
        # Each simulator run starts 6 simulated hours back: an earlier one on these services
        # spent in the same simulated hours, and its requests are in the ledger too.
        say("   (the ledger also holds an earlier simulator run's requests of those hours)")


# A stop signal this soon after the first is the same stop delivered twice, not an impatient
# second Ctrl-C: `kill -- -PGID` reaches this script, and GNU make, in the same group, passes its
# own SIGTERM on to the recipe at once. Only a later one skips ending the runs in flight.
SAME_STOP_S = 1.0


def stop_signal_handler() -> Callable[[int, object], None]:
    """SIGINT/SIGTERM raise KeyboardInterrupt, except a repeat within SAME_STOP_S."""
    first: list[float] = []

    def handler(signum: int, frame: object) -> None:
        now = time.monotonic()
        if first and now - first[0] < SAME_STOP_S:
            return
        first[:] = [now]
        raise KeyboardInterrupt

    return handler


def main() -> int:
    # SIGTERM (e.g. from a supervisor or `kill`) stops the demo the way Ctrl-C does, so the
    # `finally` below always stops the Dagster processes and nothing is left running. Ctrl-C
    # too when started by a shell without job control, which starts background commands with
    # SIGINT ignored (Python would keep ignoring it).
    handler = stop_signal_handler()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    home = Path(os.environ.get("DAGSTER_HOME") or REPO / ".dagster_home")
    # The demo pulls from the Keepa simulator when it runs, the bundled sample otherwise, unless
    # KEEPA_SOURCE says which.
    env = {
        **simulator_env(),
        "ARBITRAGE_RUN_IDLE_S": "10",
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ARBITRAGE_AUTOMATION": "on",
    }
    os.environ.update(env)
    settings = Settings.from_env()
    planner = settings.keepa_pull_mode == "planner"
    if planner:
        say(f"KEEPA_PULL_MODE=planner: discovery and the token planner on {settings.keepa_api_url}")
    elif settings.keepa_source == "api":
        say("KEEPA_SOURCE=api: pulling the list from Keepa")
    else:
        say(f"KEEPA_SOURCE=sample: pulling the bundled sample ({settings.keepa_sample_file})")
    say("== services")
    subprocess.run([sys.executable, "-m", "devservices", "status"], cwd=REPO, check=True)
    # Topics and indices as the pipeline needs them (make demo's services-up made them; a
    # direct run after a reset would otherwise fail on the first missing topic).
    subprocess.run(
        [str(REPO / "scripts" / "with-client-env"), str(BIN / "arbitrage"), "provision"],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run([str(BIN / "arbitrage"), "topics"], cwd=REPO, check=True)

    if url_answers(UI):
        raise SystemExit(
            f"something already serves {UI}; stop it (or set DAGSTER_PORT) and run make demo again"
        )
    page = f"http://127.0.0.1:{settings.web_port}"
    if port_open("127.0.0.1", settings.web_port):
        raise SystemExit(
            f"something already listens at {page}; stop it (or set ARBITRAGE_WEB_PORT) and run "
            "make demo again"
        )
    grpc_port = int(workspace_env(env)["DAGSTER_GRPC_PORT"])
    try:
        dagster = DagsterProcesses(
            home,
            env,
            port=PORT,
            grpc_port=grpc_port,
            on_event=report_event,
            web_port=settings.web_port,
        )
    except DevServicesError as exc:
        raise SystemExit(f"the Dagster instance cannot be set up: {exc.message}") from None
    # This process reads the same instance (runs of the pull) as the processes started here.
    env = dagster.env
    os.environ.update(env)
    storage = (
        "SQLite in DAGSTER_HOME"
        if env["DAGSTER_STORAGE"] == "sqlite"
        else f"PostgreSQL database {env['DAGSTER_POSTGRES_DB']} on "
        f"{env['DAGSTER_POSTGRES_HOST']}:{env['DAGSTER_POSTGRES_PORT']}"
    )
    say(f"== Dagster instance {home}: runs, event logs and schedules in {storage}")
    say(
        f"== starting the code server (gRPC :{grpc_port}), the webserver ({UI}), the daemon and "
        f"the opportunities page ({page}); logs in {dagster.logs[CODE_SERVER].parent}"
    )
    try:
        try:
            dagster.start()
        except DagsterStartError as exc:
            raise SystemExit(str(exc)) from None
        import dagster as dg

        instance = dg.DagsterInstance.get()
        if planner:
            discover(instance, env, settings)
        launched_at = time.time()
        say("== launching one Keepa pull (dagster job launch -j keepa_pull)")
        pull_done = launch(instance, env, "keepa_pull")

        say("== waiting while the sensors carry it through enrichment and arbitrage")
        wait_for_pipeline(settings.kafka(), pull_done)

        es = settings.elasticsearch()
        text, total = alerts_table(es, 15)
        say(f"== alerts, best profit first ({total} in all)\n{text}")
        say(
            f"== routes the rules ({settings.rules_file.name}) filtered out, by reason "
            "(arbitrage runs' metadata)"
        )
        counts = wait_for_filter_counts(instance, launched_at, settings.run_idle_s + 30)
        for reason, count in sorted(counts.items(), key=lambda item: -item[1]):
            say(f"   {reason:<20} {count:>6}")
        if not counts:
            say("   none")
        say(
            f"== Elasticsearch: products {es.count(topics.PRODUCTS_INDEX)} documents, "
            f"arbitrage-alerts {es.count(topics.ALERTS_INDEX)} documents"
        )
        if planner:
            show_provenance_and_tokens(es, settings)
        say(f"== the Dagster UI is at {UI} (asset graph: {UI}/asset-groups)")
        say(f"== the opportunities page is at {page} (new alerts appear without a reload)")
        if os.environ.get("DEMO_EXIT") == "1":
            return 0
        say("   it keeps running, with the schedule and sensors on; Ctrl-C stops it")
        dagster.wait()
    except KeyboardInterrupt:
        say("\nstopping the code server, webserver, daemon and opportunities page")
    finally:
        dagster.stop(end_runs_s=END_RUNS_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
