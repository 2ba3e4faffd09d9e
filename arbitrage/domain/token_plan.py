"""The token planner, the pure part: given Keepa's token status and what the registry tracks,
which refreshes and discovery runs the next minute's tokens buy, and why.

A refresh asks Keepa for one ASIN in every pulled market (``tokens_per_asin`` tokens). What a
minute may spend is the balance above the reserve (never spent), of which discovery may take
its share for the sources that are due; the rest buys refreshes, best first:

1. ``confirm``: an open opportunity not refreshed for ``confirm_minutes`` — a seller may act on
   it, so it is confirmed or closed first, the more profit the sooner;
2. ``new``: an ASIN discovered and never refreshed;
3. ``stale``: not refreshed for ``max_refresh_minutes`` (a ceiling on any ASIN's age);
4. ``near_miss``: a route close to the thresholds, not refreshed for ``near_miss_minutes``;
5. ``rotate``: the rest, by age × how volatile and how fast-selling the product is.

No ASIN is refreshed sooner than ``min_refresh_minutes`` after its last refresh. Time is Keepa's
(the answers' ``timestamp``), never the wall clock, so the same plan comes out at any pace of
time (the Keepa simulator runs it 60 times faster). ``plan_hour`` rolls the minute plan forward
to say what the next hour would spend, by purpose and market (``arbitrage plan``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

MINUTE_MS = 60_000
PURPOSES = ("confirm", "new", "stale", "near_miss", "rotate")
_RANK = {purpose: len(PURPOSES) - i for i, purpose in enumerate(PURPOSES)}


@dataclass(frozen=True)
class PlanConfig:
    markets: tuple[str, ...]
    tokens_per_asin_market: int = 3  # /product with stats and buybox
    reserve_tokens: int = 0
    discovery_share: float = 0.2
    min_refresh_minutes: int = 10
    confirm_minutes: int = 10
    near_miss_minutes: int = 30
    max_refresh_minutes: int = 24 * 60

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
    """One tracked ASIN as the planner sees it."""

    asin: str
    last_refresh_ms: int | None  # Keepa's time of its last refresh; None: never
    open_profit_eur_cents: int = 0  # > 0: it has an open opportunity
    near_miss: bool = False  # a route close to the thresholds
    price_changes_per_day: float = 0.0
    monthly_sold: int = 0


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

    @property
    def tokens(self) -> int:
        return self.tokens_refresh + self.tokens_discovery


def _purpose(candidate: Candidate, age_min: float | None, config: PlanConfig) -> str | None:
    """Why the candidate is worth a refresh now, or None when it must wait."""
    if age_min is None:
        return "new"
    if age_min < config.min_refresh_minutes:
        return None
    if candidate.open_profit_eur_cents > 0 and age_min >= config.confirm_minutes:
        return "confirm"
    if age_min >= config.max_refresh_minutes:
        return "stale"
    if candidate.near_miss and age_min >= config.near_miss_minutes:
        return "near_miss"
    return "rotate"


def _score(candidate: Candidate, purpose: str, age_min: float | None) -> tuple[int, float]:
    """Purpose first, then within it: profit (confirm), age × liveliness (the others)."""
    if purpose == "confirm":
        return _RANK[purpose], float(candidate.open_profit_eur_cents)
    liveliness = (1 + candidate.price_changes_per_day) * (
        1 + math.log1p(max(0, candidate.monthly_sold)) / 10
    )
    return _RANK[purpose], (age_min or 0.0) * liveliness


def plan_minute(
    now_ms: int,
    tokens_left: int,
    candidates: Sequence[Candidate],
    due: Sequence[DueDiscovery],
    config: PlanConfig,
) -> MinutePlan:
    """What this minute's tokens buy: the due discovery runs that fit its share, then the
    best refreshes the rest pays for in full. Never below the reserve."""
    spendable = max(0, tokens_left - config.reserve_tokens)
    discovery: list[DueDiscovery] = []
    allowance = int(spendable * config.discovery_share)
    for source in due:
        if source.most_tokens <= allowance:
            discovery.append(source)
            allowance -= source.most_tokens
    tokens_discovery = sum(d.most_tokens for d in discovery)
    affordable = (spendable - tokens_discovery) // config.tokens_per_refresh
    ranked: list[tuple[tuple[int, float], str, str]] = []
    for candidate in candidates:
        age = (
            None
            if candidate.last_refresh_ms is None
            else (now_ms - candidate.last_refresh_ms) / MINUTE_MS
        )
        purpose = _purpose(candidate, age, config)
        if purpose is not None:
            ranked.append((_score(candidate, purpose, age), candidate.asin, purpose))
    ranked.sort(key=lambda item: (item[0][0], item[0][1], item[1]), reverse=True)
    chosen = tuple(Refresh(asin, purpose) for _, asin, purpose in ranked[:affordable])
    return MinutePlan(
        now_ms,
        spendable,
        chosen,
        tuple(discovery),
        len(chosen) * config.tokens_per_refresh,
        tokens_discovery,
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
    candidates: Sequence[Candidate],
    due_by_minute: Sequence[Sequence[DueDiscovery]],
    config: PlanConfig,
) -> HourOutlook:
    """Roll the minute plan forward (``len(due_by_minute)`` minutes, usually 60), each minute
    refilled by ``refill_rate`` and its chosen ASINs refreshed, as the planner would run it if
    nothing else changed."""
    outlook = HourOutlook(granted=tokens_left)
    state = {c.asin: c for c in candidates}
    balance = tokens_left
    share = config.tokens_per_asin_market
    for minute, due in enumerate(due_by_minute):
        at = now_ms + minute * MINUTE_MS
        if minute:
            balance += refill_rate
            outlook.granted += refill_rate
        plan = plan_minute(at, balance, list(state.values()), due, config)
        balance -= plan.tokens
        outlook.minutes += 1
        for refresh in plan.refreshes:
            outlook.tokens_by_purpose[refresh.purpose] += config.tokens_per_refresh
            outlook.refreshes_by_purpose[refresh.purpose] += 1
            for market in config.markets:
                outlook.tokens_by_market[market] += share
            state[refresh.asin] = replace(state[refresh.asin], last_refresh_ms=at)
        for source in plan.discovery:
            outlook.tokens_by_purpose["discovery"] += source.most_tokens
            outlook.tokens_by_market[source.market] += source.most_tokens
    return outlook
