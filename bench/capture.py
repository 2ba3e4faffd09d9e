"""Opportunity capture: what a Keepa token budget buys when the planner spends it, against
today's round-robin refresh of the same catalog, in the same simulated market and hours.

Two accounts of the same plan on the Keepa simulator (devservices/keepa_sim/), one clock moved
a simulated minute at a time. Each minute:

- **planner**: Keepa's ``/token``; the due deal sources (``bench/capture_discovery.toml``) and
  the refreshes ``plan_minute`` (arbitrage/domain/token_plan.py) buys with the balance;
- **round-robin**: as many whole refreshes of the catalog, in order, as the balance buys.

A refresh is the pipeline's own pull (``iter_pull``: ``/product`` in every market, merged),
enrichment and fee model with the rules (``detect``): what it finds open stays open until the
next refresh of that ASIN says otherwise, as the alert lifecycle keeps it. The planner's
registry and each ASIN's last refresh are kept here, in memory: the benchmark measures the
spending policy; the Dagster wiring of the same rules over Elasticsearch is proven by the
integration tests.

Every ``truth_every`` minutes the simulator's ground truth (devservices/keepa_sim/truth.py: the
same rules on every product's true offers) is compared with each side's open set:

- **capture**: the truth's profit-weighted opportunity-minutes during which the side had that
  opportunity (ASIN, buy market, sell market) open;
- **time to alert**: from an opportunity's first sample in the truth to the refresh that opened
  it (simulated minutes, p50 / p95; an opportunity already open at the first sample has no
  known start and is left out);
- **false-open**: the side's open opportunity-minutes the truth does not have;
- **tokens**: the account's own counters, consumed against granted.

``python -m bench.capture`` (``make bench`` runs a short row; ``make bench-capture`` the long
one: 100 000 ASINs, 300 tokens/min, 6 simulated hours).
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from arbitrage.clients.keepa_pull import iter_pull
from arbitrage.clients.keepa_sources import KeepaHttpClient
from arbitrage.clients.token_planning import due_by_minute
from arbitrage.domain.discovery_config import load_discovery_config
from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import FeeConfig, load_fee_config
from arbitrage.domain.fee_model import detect
from arbitrage.domain.keepa_discovery import Found
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.money import convert_to_eur_cents
from arbitrage.domain.rules_config import RulesConfig, load_rules_config
from arbitrage.domain.token_plan import (
    MINUTE_MS,
    Candidate,
    CandidateTable,
    PlanConfig,
    Profile,
    plan_minute,
    profile,
)
from bench.common import Row, log, parser, report
from devservices.keepa_sim import truth
from devservices.keepa_sim.catalog import MARKETS, Catalog
from devservices.keepa_sim.harness import START_MS, ManualTime, serve_simulator
from devservices.keepa_sim.server import SimulatorServer

BENCHMARK = "opportunity capture"
DISCOVERY_FILE = Path(__file__).resolve().parent / "capture_discovery.toml"
SEED = 20261206
FACTOR = 60.0  # the simulator's pace; the loop moves its clock, so it only scales refillIn
KEY = "bench-capture-key"
# The long row (make bench-capture): the scenario.
LONG = {"size": 100_000, "rate": 300, "hours": 6.0, "truth_every": 10}
# make bench's row: the same ratio of budget to catalog, a tenth of each.
SHORT = {"size": 10_000, "rate": 30, "hours": 6.0, "truth_every": 10}
QUICK = {"size": 2_000, "rate": 30, "hours": 1.0, "truth_every": 10}
TARGET_CAPTURE_RATIO = 3.0
TARGET_FALSE_OPEN = 0.05
TARGET_SPENT = 0.01

Key = tuple[str, str, str]  # ASIN, buy market, sell market


@dataclass
class Side:
    """One way of spending the account: its client, what it holds open, and the scores."""

    name: str
    server: SimulatorServer
    client: KeepaHttpClient
    open: dict[str, dict[Key, int]] = field(default_factory=dict)  # ASIN → its open routes
    opened_at: dict[Key, int] = field(default_factory=dict)  # minute the key was last opened
    refreshes: Counter[str] = field(default_factory=Counter)
    captured: float = 0.0
    open_minutes: float = 0.0
    false_open_minutes: float = 0.0
    time_to_alert: list[int] = field(default_factory=list)
    alerted_runs: set[tuple[Key, int]] = field(default_factory=set)

    def open_keys(self) -> dict[Key, int]:
        return {key: profit for routes in self.open.values() for key, profit in routes.items()}


@dataclass
class Registry:
    """The planner's tracked ASINs as the planner's columns, grown as deals find more."""

    table: CandidateTable = field(default_factory=lambda: CandidateTable.of([]))
    row: dict[str, int] = field(default_factory=dict)
    expires_ms: list[int] = field(default_factory=list)

    def found(self, found: Found, at_ms: int, max_age_hours: int, eur_per_unit: Fraction) -> int:
        """Record a deal page: new ASINs added, known ones' latest drop and expiry moved."""
        fresh = [a for a in found.asins if a not in self.row]
        if fresh:
            for asin in fresh:
                self.row[asin] = len(self.expires_ms)  # one expiry per row, in row order
                self.expires_ms.append(at_ms + max_age_hours * 3_600_000)
            never = CandidateTable.of(Candidate(asin, None) for asin in fresh)
            self.table = self.table.extend(never)
        for asin in found.asins:
            i = self.row[asin]
            self.expires_ms[i] = max(self.expires_ms[i], at_ms + max_age_hours * 3_600_000)
            drop = found.drops.get(asin)
            if drop is not None and drop.since_ms >= self.table.deal_ms[i]:
                self.table.deal_ms[i] = drop.since_ms
                self.table.deal_drop_eur_cents[i] = convert_to_eur_cents(
                    drop.drop_minor, eur_per_unit
                )
        return len(fresh)

    def tracked_at(self, now_ms: int) -> CandidateTable:
        """The rows not aged out; aged-out rows are dropped for good."""
        expired = np.asarray(self.expires_ms, dtype=np.int64) < now_ms
        if not expired.any():
            return self.table
        keep = np.flatnonzero(~expired | (self.table.open_profit_eur_cents > 0))
        self.table = self.table.take(keep)
        self.expires_ms = [self.expires_ms[i] for i in keep]
        self.row = {a: i for i, a in enumerate(self.table.asins)}
        return self.table


@dataclass(frozen=True)
class Scenario:
    size: int
    rate: int
    hours: float
    truth_every: int
    seed: int = SEED
    confirm_minutes: int = PlanConfig.confirm_minutes

    @property
    def minutes(self) -> int:
        return int(self.hours * 60)


def _truth_at(seed: int, size: int, minute: int) -> dict[Key, int]:
    """The ground truth at one minute (run in a worker process: it is the costly part)."""
    catalog = Catalog.generate(seed, size)
    opened = truth.open_at(catalog, float(minute), START_MS, load_fee_config(), load_rules_config())
    return {(o.asin, o.buy_market, o.sell_market): o.profit_eur_cents for o in opened}


def _refresh(
    side: Side,
    asins: Sequence[str],
    at_ms: int,
    minute: int,
    fees: FeeConfig,
    rules: RulesConfig,
    quiet: logging.Logger,
) -> tuple[dict[str, int], dict[str, Profile]]:
    """Pull, enrich and detect ``asins``; their open routes replaced. Returns the best open
    profit per refreshed ASIN (0: nothing open) and what each product says to the planner."""
    pulled_at = datetime.fromtimestamp(at_ms / 1000, UTC)
    updates = list(iter_pull(side.client, asins, MARKETS, pulled_at, quiet))
    products = [enrich(update, fees) for update in updates]
    profiles = {product["asin"]: profile(product) for product in products}
    detection = detect(products, fees, rules, pulled_at.isoformat()) if products else None
    found: dict[str, dict[Key, int]] = {}
    for alert in detection.alerts if detection else []:
        key = (alert["asin"], alert["buy_market"], alert["sell_market"])
        found.setdefault(alert["asin"], {})[key] = alert["profit_eur_cents"]
    best: dict[str, int] = {}
    for asin in asins:
        before = side.open.pop(asin, {})
        now_open = found.get(asin, {})
        if now_open:
            side.open[asin] = now_open
        for key in now_open.keys() - before.keys():
            side.opened_at[key] = minute
        best[asin] = max(now_open.values(), default=0)
    return best, profiles


def _score(side: Side, truth_now: dict[Key, int], runs: dict[Key, int], step: int) -> None:
    held = side.open_keys()
    side.captured += sum(p for k, p in truth_now.items() if k in held) * step
    side.open_minutes += len(held) * step
    side.false_open_minutes += sum(1 for k in held if k not in truth_now) * step
    for key, start in runs.items():
        if start < 0 or key not in held or (key, start) in side.alerted_runs:
            continue
        side.alerted_runs.add((key, start))
        side.time_to_alert.append(max(0, side.opened_at.get(key, start) - start))


def run(scenario: Scenario, judge: bool = True) -> list[Row]:
    started = time.perf_counter()
    catalog = Catalog.generate(scenario.seed, scenario.size)
    fees, rules = load_fee_config(), load_rules_config()
    discovery = load_discovery_config(DISCOVERY_FILE)
    config = PlanConfig(
        markets=MARKETS,
        confirm_minutes=scenario.confirm_minutes,
        min_refresh_minutes=min(scenario.confirm_minutes, PlanConfig.min_refresh_minutes),
    )
    clock = ManualTime()
    quiet = logging.getLogger("bench.capture.pull")
    quiet.setLevel(logging.WARNING)
    sides = []
    for name in ("planner", "round-robin"):
        server = serve_simulator(catalog, KEY, clock, scenario.rate, FACTOR)
        client = KeepaHttpClient(KEY, base_url=server.url, logger=quiet)
        sides.append(Side(name, server, client))
    planner, round_robin = sides
    registry = Registry()
    last_run: dict[str, int] = {}
    cursor = 0
    samples = list(range(0, scenario.minutes, scenario.truth_every))
    runs: dict[Key, int] = {}  # truth opportunities open now → the sample they began (-1: before)
    truth_total = 0.0
    discovered = 0
    with ProcessPoolExecutor(max_workers=2) as pool:
        pending: dict[int, Future[dict[Key, int]]] = {
            m: pool.submit(_truth_at, scenario.seed, scenario.size, m) for m in samples
        }
        for minute in range(scenario.minutes):
            if minute:
                clock.advance_simulated_minutes(1, FACTOR)
            # The planner: discovery in its share, then the best refreshes.
            status = planner.client.token_status()
            now_ms = status.timestamp_ms or START_MS + minute * MINUTE_MS
            # The due sources, the longest unrun first: a budget too small for all of them
            # takes them in turn.
            due = sorted(
                due_by_minute(discovery, now_ms, 1)[0], key=lambda d: last_run.get(d.source, -1)
            )
            table = registry.tracked_at(now_ms)
            plan = plan_minute(now_ms, status.tokens_left or 0, table, due, config)
            for chosen in plan.discovery:
                source = discovery.source(chosen.source)
                answer = planner.client.deals(source.deal_request(0))
                currency = MARKETPLACES[source.market].currency
                discovered += registry.found(
                    answer.found,
                    answer.tokens.timestamp_ms or now_ms,
                    source.max_age_hours,
                    fees.fx(currency),
                )
                last_run[source.name] = minute
            if plan.refreshes:
                asins = [r.asin for r in plan.refreshes]
                best, profiles = _refresh(planner, asins, now_ms, minute, fees, rules, quiet)
                planner.refreshes.update(r.purpose for r in plan.refreshes)
                rows = [registry.row[a] for a in asins]
                table = registry.table
                table.last_refresh_ms[rows] = now_ms
                table.open_profit_eur_cents[rows] = [best[a] for a in asins]
                read = [profiles.get(a, Profile(0, 0.0, 0.0)) for a in asins]
                table.monthly_sold[rows] = [p.monthly_sold for p in read]
                table.volatility[rows] = [p.volatility for p in read]
                table.near_miss[rows] = [
                    not best[a] and p.margin >= config.near_miss_margin
                    for a, p in zip(asins, read, strict=True)
                ]
            # Round-robin: the catalog in order, as many whole refreshes as the balance buys.
            status = round_robin.client.token_status()
            count = max(0, status.tokens_left or 0) // config.tokens_per_refresh
            if count:
                rows = [(cursor + i) % catalog.size for i in range(count)]
                cursor = (cursor + count) % catalog.size
                _refresh(
                    round_robin, catalog.asins(np.array(rows)), now_ms, minute, fees, rules, quiet
                )
                round_robin.refreshes["rotate"] += count
            if minute in pending:
                truth_now = pending.pop(minute).result()
                step = scenario.truth_every
                truth_total += sum(truth_now.values()) * step
                runs = {k: runs.get(k, -1 if minute == 0 else minute) for k in truth_now}
                for side in sides:
                    _score(side, truth_now, runs, step)
                log(
                    f"capture: minute {minute}/{scenario.minutes}: truth {len(truth_now)} open; "
                    f"planner holds {len(planner.open_keys())} (registry {len(registry.table)}), "
                    f"round-robin {len(round_robin.open_keys())}"
                )
    rows = _rows(scenario, sides, truth_total, discovered, time.perf_counter() - started, judge)
    return [*rows, planner_scaling(100_000 if scenario.size < SHORT["size"] else 1_000_000)]


def _account(side: Side) -> Any:
    return side.server.simulator.account


def _pct(values: list[int], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _rows(
    scenario: Scenario,
    sides: list[Side],
    truth_total: float,
    discovered: int,
    seconds: float,
    judge: bool,
) -> list[Row]:
    planner = sides[0]
    share = {s.name: (s.captured / truth_total if truth_total else 0.0) for s in sides}
    ratio = share["planner"] / share["round-robin"] if share["round-robin"] else None
    setting = (
        f"seed {scenario.seed}, {scenario.size:,} ASINs, {scenario.rate} tokens/min, "
        f"{scenario.hours:g} simulated hours, truth every {scenario.truth_every} min, "
        f"confirm every {scenario.confirm_minutes} min"
    )
    rows = [
        Row(
            BENCHMARK,
            f"capture: planner {share['planner']:.1%} vs round-robin "
            f"{share['round-robin']:.1%} of the truth's profit-weighted opportunity-minutes",
            scenario.size,
            seconds,
            ratio=ratio,
            ratio_of="capture",
            target=f"≥ {TARGET_CAPTURE_RATIO:g}× round-robin",
            met=(ratio is not None and ratio >= TARGET_CAPTURE_RATIO) if judge else None,
            note=setting,
            rate=False,
        )
    ]
    for side in sides:
        account = _account(side)
        false_open = side.false_open_minutes / side.open_minutes if side.open_minutes else 0.0
        spent = account.consumed / account.granted if account.granted else 0.0
        tta = side.time_to_alert
        rows.append(
            Row(
                BENCHMARK,
                f"{side.name}: time to alert p50 {_fmt(_pct(tta, 50))} / p95 "
                f"{_fmt(_pct(tta, 95))} min; false-open {false_open:.1%} of "
                f"{side.open_minutes:,.0f} open minutes; tokens {account.consumed:,} of "
                f"{account.granted:,} granted ({spent:.1%})",
                None,
                None,
                target=f"false-open ≤ {TARGET_FALSE_OPEN:.0%}, spent = granted ± 1 %"
                if side is planner
                else "",
                met=(false_open <= TARGET_FALSE_OPEN and abs(1 - spent) <= TARGET_SPENT)
                if judge and side is planner
                else None,
                note=f"{len(tta)} opportunities alerted; refreshes "
                + ", ".join(f"{p} {n:,}" for p, n in side.refreshes.most_common())
                + (f"; {discovered:,} ASINs discovered by deals" if side is planner else "")
                + f"; {account.expired:,} tokens expired",
                rate=False,
            )
        )
    return rows


def planner_scaling(size: int = 1_000_000, seed: int = SEED) -> Row:
    """``plan_minute``'s decision time and memory over a registry of ``size`` ASINs (a tenth
    never refreshed, 1 % with an open opportunity, a fifth with a deal), five markets, at the
    budgets of three Keepa plans; the best of three decisions each."""
    rng = np.random.default_rng(seed)
    now = START_MS + 10 * 24 * 60 * MINUTE_MS
    tracemalloc.start()
    table = CandidateTable(
        [f"B0{i:08d}" for i in range(size)],
        np.where(rng.random(size) < 0.1, -1, now - rng.integers(0, 10**8, size)),
        np.where(rng.random(size) < 0.01, rng.integers(1, 10**5, size), 0),
        rng.random(size) < 0.05,
        rng.random(size) * 5,
        rng.integers(0, 5_000, size),
        np.where(rng.random(size) < 0.2, now - rng.integers(0, 10**7, size), -1),
        rng.integers(0, 5_000, size),
    )
    config = PlanConfig(markets=MARKETS)
    seconds = {}
    for rate in (300, 1_000, 20_000):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            plan_minute(now, rate, table, [], config)
            best = min(best, time.perf_counter() - started)
        seconds[rate] = best
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return Row(
        BENCHMARK,
        f"planner decision over a registry of {size:,} ASINs: "
        + ", ".join(f"{s * 1000:.0f} ms at {r:,} tokens" for r, s in seconds.items()),
        size,
        max(seconds.values()),
        peak_rss_mib=None,
        note=f"peak traced memory {peak:.0f} MiB (the candidate columns and the ranking)",
        rate=False,
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser("python -m bench.capture", __doc__.splitlines()[0])
    cli.add_argument("--long", action="store_true", help="100 000 ASINs, 300 tokens/min, 6 h")
    cli.add_argument("--size", type=int)
    cli.add_argument("--rate", type=int, help="tokens per minute")
    cli.add_argument("--hours", type=float, help="simulated hours")
    cli.add_argument("--truth-every", type=int, help="simulated minutes between truth samples")
    cli.add_argument("--seed", type=int, default=SEED)
    cli.add_argument(
        "--confirm-minutes",
        type=int,
        default=PlanConfig.confirm_minutes,
        help="the planner's confirm interval (and its minimum refresh interval, if shorter)",
    )
    args = cli.parse_args(argv)
    base = QUICK if args.quick else LONG if args.long else SHORT
    scenario = Scenario(
        size=args.size or base["size"],
        rate=args.rate or base["rate"],
        hours=args.hours or base["hours"],
        truth_every=args.truth_every or base["truth_every"],
        seed=args.seed,
        confirm_minutes=args.confirm_minutes,
    )
    started = time.perf_counter()
    rows = run(scenario, judge=not args.quick)
    name = "capture-long" if args.long else "capture"
    command = "python -m bench.capture " + " ".join(argv or [])
    report(name, rows, started, command, not args.no_write)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
