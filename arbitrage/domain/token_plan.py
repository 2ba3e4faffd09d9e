"""The token planner, the pure part: given Keepa's token status and what the registry tracks,
which refreshes and discovery runs the next minute's tokens buy, and why.

A refresh asks Keepa for one ASIN in every pulled market (``tokens_per_asin`` tokens). What a
minute may spend is the balance above the reserve (never spent), of which discovery may take
its share for the sources that are due; the rest buys refreshes, best first:

1. ``confirm``: an open opportunity not refreshed for ``confirm_minutes`` — a seller may act on
   it, so it is confirmed or closed first, by profit × minutes since its last refresh;
2. ``new``: an ASIN discovered and never refreshed, the biggest deal drop first;
3. ``price_drop``: a deal says its price dropped after its last refresh, the biggest first;
4. ``stale``: not refreshed for ``max_refresh_minutes`` (a ceiling on any ASIN's age);
5. ``near_miss``: close to the thresholds (``profile``: its markets' spread is at least
   ``near_miss_margin`` of its buy price, and nothing is open), not refreshed for
   ``near_miss_minutes``;
6. ``rotate``: the rest, by age × how volatile (its price off its 30-day average) and how
   fast-selling (sales rank drops) the product is.

No ASIN is refreshed sooner than ``min_refresh_minutes`` after its last refresh. Time is Keepa's
(the answers' ``timestamp``), never the wall clock, so the same plan comes out at any pace of
time (the Keepa simulator runs it 60 times faster). ``plan_hour`` rolls the minute plan forward
to say what the next hour would spend, by purpose and market (``arbitrage plan``).

The candidates are columns (``CandidateTable``: one array per field), so a registry of a million
ASINs is ranked in a few numpy passes rather than a million Python objects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

MINUTE_MS = 60_000
PURPOSES = ("confirm", "new", "price_drop", "stale", "near_miss", "rotate")
_WAIT = -1  # no purpose: refreshed too recently
_NEVER = -1  # a time that is not there: never refreshed, no deal


@dataclass(frozen=True)
class PlanConfig:
    markets: tuple[str, ...]
    tokens_per_asin_market: int = 3  # /product with stats and buybox
    reserve_tokens: int = 0
    discovery_share: float = 0.2
    # Measured (bench/capture.py, docs/performance.md): confirming every 5 minutes keeps
    # false-open minutes under 5 %; every 10 buys more capture at 7.5 % false-open.
    min_refresh_minutes: int = 5
    confirm_minutes: int = 5
    near_miss_minutes: int = 30
    max_refresh_minutes: int = 24 * 60
    # A product whose dearest market's price is this much above its cheapest buy price, with no
    # opportunity open, is a near miss: a small move in either market may open a route.
    near_miss_margin: float = 0.15

    def __post_init__(self) -> None:
        if not self.markets:
            raise ValueError("a plan needs at least one market")
        if not 0 <= self.discovery_share <= 1:
            raise ValueError(f"discovery_share must be 0 to 1, not {self.discovery_share}")
        if not 0 < self.min_refresh_minutes <= self.max_refresh_minutes:
            raise ValueError("0 < min_refresh_minutes ≤ max_refresh_minutes")
        if self.reserve_tokens < 0 or self.tokens_per_asin_market < 1:
            raise ValueError("the reserve cannot be negative and a refresh costs tokens")

    @property
    def tokens_per_refresh(self) -> int:
        return self.tokens_per_asin_market * len(self.markets)


@dataclass(frozen=True)
class Candidate:
    """One tracked ASIN as the planner sees it (a row of ``CandidateTable``)."""

    asin: str
    last_refresh_ms: int | None  # Keepa's time of its last refresh; None: never
    open_profit_eur_cents: int = 0  # > 0: it has an open opportunity
    near_miss: bool = False  # a route close to the thresholds
    volatility: float = 0.0  # how far its price stands off its 30-day average (0.1: 10 %)
    monthly_sold: int = 0  # sales a month (Keepa's sales rank drops in 30 days)
    deal_ms: int | None = None  # since when a deal says its price dropped; None: no deal
    deal_drop_eur_cents: int = 0  # by how much


@dataclass
class CandidateTable:
    """Every tracked ASIN as columns; times are Keepa's epoch ms, -1 where there is none."""

    asins: list[str]
    last_refresh_ms: npt.NDArray[np.int64]
    open_profit_eur_cents: npt.NDArray[np.int64]
    near_miss: npt.NDArray[np.bool_]
    volatility: npt.NDArray[np.float64]
    monthly_sold: npt.NDArray[np.int64]
    deal_ms: npt.NDArray[np.int64]
    deal_drop_eur_cents: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.asins)

    def _columns(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "asins"]

    def take(self, rows: npt.NDArray[np.int64]) -> CandidateTable:
        """These rows, in this order (a new table)."""
        picked = {name: getattr(self, name)[rows] for name in self._columns()}
        return CandidateTable([self.asins[i] for i in rows], **picked)

    def extend(self, more: CandidateTable) -> CandidateTable:
        """These rows, then ``more``'s (a new table)."""
        joined = {
            name: np.concatenate([getattr(self, name), getattr(more, name)])
            for name in self._columns()
        }
        return CandidateTable([*self.asins, *more.asins], **joined)

    @classmethod
    def of(cls, candidates: Iterable[Candidate]) -> CandidateTable:
        rows = list(candidates)

        def times(values: Iterable[int | None]) -> npt.NDArray[np.int64]:
            return np.array([_NEVER if v is None else v for v in values], dtype=np.int64)

        return cls(
            [c.asin for c in rows],
            times(c.last_refresh_ms for c in rows),
            np.array([c.open_profit_eur_cents for c in rows], dtype=np.int64),
            np.array([c.near_miss for c in rows], dtype=bool),
            np.array([c.volatility for c in rows], dtype=np.float64),
            np.array([c.monthly_sold for c in rows], dtype=np.int64),
            times(c.deal_ms for c in rows),
            np.array([c.deal_drop_eur_cents for c in rows], dtype=np.int64),
        )


@dataclass(frozen=True)
class Profile:
    """What an enriched product says about how worth refreshing it is."""

    monthly_sold: int  # the most sales rank drops in 30 days of any market
    volatility: float  # the largest distance of a market's price from its 30-day average
    margin: float  # (dearest sell − cheapest buy) / cheapest buy, in EUR; 0 if unknown


def _ratio_off(price: Any, average: Any) -> float:
    if isinstance(price, int) and isinstance(average, int) and price > 0 and average > 0:
        return abs(price / average - 1)
    return 0.0


def profile(product: Mapping[str, Any]) -> Profile:
    """The planner's reading of an enriched product (a ``products`` document or the enrichment
    stage's output; fields it lacks count as no data)."""
    sold, off = 0, 0.0
    markets = product.get("markets") or {}
    for market in markets.values():
        signals = market.get("signals") or {}
        drops = signals.get("sales_rank_drops30")
        if isinstance(drops, int):
            sold = max(sold, drops)
        off = max(
            off,
            _ratio_off(market.get("buy_box"), signals.get("buy_box_avg30")),
            _ratio_off(market.get("new"), signals.get("new_avg30")),
        )
    spread = product.get("spread_eur_cents")
    cheapest = markets.get(product.get("cheapest_market") or "", {})
    buy = cheapest.get("buy_price_eur_cents")
    margin = spread / buy if isinstance(spread, int) and isinstance(buy, int) and buy > 0 else 0.0
    return Profile(sold, off, margin)


@dataclass(frozen=True)
class DueDiscovery:
    source: str
    market: str
    most_tokens: int


@dataclass(frozen=True)
class Refresh:
    asin: str
    purpose: str


@dataclass(frozen=True)
class MinutePlan:
    now_ms: int
    spendable: int  # the balance above the reserve
    refreshes: tuple[Refresh, ...] = ()
    discovery: tuple[DueDiscovery, ...] = ()
    tokens_refresh: int = 0
    tokens_discovery: int = 0
    rows: tuple[int, ...] = ()  # the refreshes' rows in the candidate table

    @property
    def tokens(self) -> int:
        return self.tokens_refresh + self.tokens_discovery

    def tokens_by_purpose(self, config: PlanConfig) -> Counter[str]:
        spent: Counter[str] = Counter()
        for refresh in self.refreshes:
            spent[refresh.purpose] += config.tokens_per_refresh
        if self.tokens_discovery:
            spent["discovery"] = self.tokens_discovery
        return spent


def _purposes(table: CandidateTable, now_ms: int, config: PlanConfig) -> npt.NDArray[np.int64]:
    """Each candidate's purpose (an index of ``PURPOSES``), or ``_WAIT``; first rule wins."""
    never = table.last_refresh_ms == _NEVER
    age_min = (now_ms - table.last_refresh_ms) / MINUTE_MS
    purpose = np.full(len(table), PURPOSES.index("rotate"), dtype=np.int64)
    rules = [
        (table.near_miss & (age_min >= config.near_miss_minutes), "near_miss"),
        (age_min >= config.max_refresh_minutes, "stale"),
        (table.deal_ms > table.last_refresh_ms, "price_drop"),
        ((table.open_profit_eur_cents > 0) & (age_min >= config.confirm_minutes), "confirm"),
    ]
    for mask, name in rules:  # lowest priority first, so the higher ones overwrite
        purpose[mask] = PURPOSES.index(name)
    purpose[age_min < config.min_refresh_minutes] = _WAIT
    purpose[never] = PURPOSES.index("new")
    return purpose


def _scores(
    table: CandidateTable, purpose: npt.NDArray[np.int64], now_ms: int
) -> npt.NDArray[np.float64]:
    """Within a purpose: profit × age (confirm), the deal's drop, then its recency (new, price
    drop), else age × liveliness."""
    age_min = np.where(
        table.last_refresh_ms == _NEVER, 0.0, (now_ms - table.last_refresh_ms) / MINUTE_MS
    )
    liveliness = (1 + 10 * table.volatility) * (
        1 + np.log1p(np.maximum(0, table.monthly_sold)) / 10
    )
    score = age_min * liveliness
    confirm = purpose == PURPOSES.index("confirm")
    # Profit × minutes since the last look: what an opportunity that closed unseen would cost
    # grows with both, so every open one is looked at again, the richer ones more often.
    score[confirm] = table.open_profit_eur_cents[confirm] * age_min[confirm]
    drop = (purpose == PURPOSES.index("new")) | (purpose == PURPOSES.index("price_drop"))
    # Cents first; the deal's time (as a fraction below one cent) orders equal drops.
    score[drop] = table.deal_drop_eur_cents[drop] + np.maximum(table.deal_ms[drop], 0) / 1e13
    return score


def plan_minute(
    now_ms: int,
    tokens_left: int,
    candidates: Sequence[Candidate] | CandidateTable,
    due: Sequence[DueDiscovery],
    config: PlanConfig,
) -> MinutePlan:
    """What this minute's tokens buy: the due discovery runs that fit its share, then the
    best refreshes the rest pays for in full. Never below the reserve."""
    table = candidates if isinstance(candidates, CandidateTable) else CandidateTable.of(candidates)
    spendable = max(0, tokens_left - config.reserve_tokens)
    discovery: list[DueDiscovery] = []
    allowance = int(spendable * config.discovery_share)
    for source in due:
        if source.most_tokens <= allowance:
            discovery.append(source)
            allowance -= source.most_tokens
    tokens_discovery = sum(d.most_tokens for d in discovery)
    affordable = (spendable - tokens_discovery) // config.tokens_per_refresh
    purpose = _purposes(table, now_ms, config)
    eligible = np.flatnonzero(purpose != _WAIT)
    chosen_rows: npt.NDArray[np.int64] = eligible[:0]
    if affordable > 0 and len(eligible):
        score = _scores(table, purpose, now_ms)[eligible]
        # Purpose first (confirm highest), then the score, highest first; ties by ASIN.
        rank = len(PURPOSES) - purpose[eligible]
        if affordable < len(eligible):
            # Only the best `affordable` rows need sorting: a partial pass narrows them first.
            # Purposes far apart; a score (ms, cents, minutes) stays below 1e13, where a
            # float64 still tells every millisecond apart.
            key = rank * 1e13 + np.minimum(score, 1e13 - 1)
            cut = np.argpartition(-key, affordable - 1)[:affordable]
            threshold = key[cut].min()
            keep = np.flatnonzero(key >= threshold)
        else:
            keep = np.arange(len(eligible))
        names = np.array([table.asins[i] for i in eligible[keep]], dtype=object)
        order = np.lexsort((names, -score[keep], -rank[keep]))[:affordable]
        chosen_rows = eligible[keep][order]
    chosen = tuple(Refresh(table.asins[i], PURPOSES[purpose[i]]) for i in chosen_rows)
    return MinutePlan(
        now_ms,
        spendable,
        chosen,
        tuple(discovery),
        len(chosen) * config.tokens_per_refresh,
        tokens_discovery,
        tuple(int(i) for i in chosen_rows),
    )


@dataclass
class HourOutlook:
    """``plan_hour``'s answer: tokens by purpose and by market, and the refreshes by purpose."""

    tokens_by_purpose: Counter[str] = field(default_factory=Counter)
    tokens_by_market: Counter[str] = field(default_factory=Counter)
    refreshes_by_purpose: Counter[str] = field(default_factory=Counter)
    granted: int = 0
    minutes: int = 0

    @property
    def spent(self) -> int:
        return sum(self.tokens_by_purpose.values())


def plan_hour(
    now_ms: int,
    tokens_left: int,
    refill_rate: int,
    candidates: Sequence[Candidate] | CandidateTable,
    due_by_minute: Sequence[Sequence[DueDiscovery]],
    config: PlanConfig,
) -> HourOutlook:
    """Roll the minute plan forward (``len(due_by_minute)`` minutes, usually 60), each minute
    refilled by ``refill_rate`` and its chosen ASINs refreshed, as the planner would run it if
    nothing else changed."""
    outlook = HourOutlook(granted=tokens_left)
    table = candidates if isinstance(candidates, CandidateTable) else CandidateTable.of(candidates)
    # The refresh times move forward as the hour goes; the caller's stay as they were.
    table = replace(table, last_refresh_ms=table.last_refresh_ms.copy())
    balance = tokens_left
    share = config.tokens_per_asin_market
    for minute, due in enumerate(due_by_minute):
        at = now_ms + minute * MINUTE_MS
        if minute:
            balance += refill_rate
            outlook.granted += refill_rate
        plan = plan_minute(at, balance, table, due, config)
        balance -= plan.tokens
        outlook.minutes += 1
        outlook.tokens_by_purpose.update(plan.tokens_by_purpose(config))
        for refresh in plan.refreshes:
            outlook.refreshes_by_purpose[refresh.purpose] += 1
        for market in config.markets:
            outlook.tokens_by_market[market] += share * len(plan.refreshes)
        for source in plan.discovery:
            outlook.tokens_by_market[source.market] += source.most_tokens
        table.last_refresh_ms[list(plan.rows)] = at
    return outlook
