"""Keepa's ``csv`` price histories of one market → buy and sell price points over time.

A pull that asked Keepa for history (``history=1&days=N``, ``KEEPA_HISTORY_DAYS``) gets each
product's ``csv`` arrays, indexed by Keepa's CsvType (keepacom/api_backend ``Product.java``):
AMAZON (0) and NEW (1) as ``[keepaTime, price, keepaTime, price, …]``, BUY_BOX_SHIPPING (18) as
``[keepaTime, price, shipping, …]`` triplets. Keepa times are minutes since 2011-01-01 (Unix ms =
(minutes + 21 564 000) × 60 000); -1 is "no offer", -2 "not set". A shipping series' price is
its landing price, price + shipping (a negative shipping counts as 0), as Keepa's own
``ProductAnalyzer.getValueAtTime`` reads it.

At every time one of the three series changes within the window, the point is (epoch ms, buy,
sell) in the market's minor units, from the last known value of each series at or before that
time, by enrichment's own rules (``arbitrage.domain.enrichment.buy_price`` / ``sell_price``): buy =
the lower of Amazon and the lowest new offer, sell = the buy box, else the lowest new offer. Equal
consecutive points are merged; at most ``MAX_HISTORY_POINTS`` are kept, the newest.

Pure, and hostile input never raises: a series that is not a list of integers, has a length
that does not divide by its stride, times out of range or out of order, or absurd prices, is
dropped whole with its reason counted (``HistoryResult.dropped``); the other series still count.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from arbitrage.domain.enrichment import buy_price, sell_price
from arbitrage.domain.keepa_signals import keepa_int
from arbitrage.domain.messages.history import MAX_HISTORY_POINTS
from arbitrage.domain.messages.types import MAX_PRICE_MINOR, PRICE_NOT_SET, MarketOffer

# Keepa time: minutes since 2011-01-01 00:00 UTC, i.e. Unix minutes minus this offset.
KEEPA_EPOCH_OFFSET_MINUTES = 21_564_000
MS_PER_MINUTE = 60_000
MS_PER_DAY = 86_400_000
# Keepa minutes: 0 is the epoch itself (no data), beyond ~2125 is a data error, not a time.
MAX_KEEPA_MINUTES = 60_000_000

CSV_AMAZON = 0
CSV_NEW = 1
CSV_BUY_BOX_SHIPPING = 18
# (CsvType index, field of MarketOffer it feeds, stride of its array)
HISTORY_SERIES: tuple[tuple[int, str, int], ...] = (
    (CSV_AMAZON, "amazon", 2),
    (CSV_NEW, "new", 2),
    (CSV_BUY_BOX_SHIPPING, "buy_box", 3),
)
# A series longer than this (entries, not points) is not read at all: 30 days of a busy listing
# are a few thousand entries; 200 000 is already far past anything Keepa sends for 90 days.
MAX_SERIES_ENTRIES = 200_000

# Reasons a series is dropped (counted per series in HistoryResult.dropped).
NOT_A_LIST = "not_a_list"
TOO_LONG = "too_long"
BAD_LENGTH = "bad_length"
NOT_INTEGER = "not_integer"
TIME_OUT_OF_RANGE = "time_out_of_range"
TIME_NOT_ORDERED = "time_not_ordered"
PRICE_OUT_OF_RANGE = "price_out_of_range"

HistoryPoint = list  # [epoch ms, buy minor units | None, sell minor units | None]


@dataclass
class HistoryResult:
    """One market's points (None: no usable series at all), what was dropped, what was cut."""

    points: list[HistoryPoint] | None
    dropped: Counter[str] = field(default_factory=Counter)
    truncated: int = 0


@dataclass
class HistoryStats:
    """A pull's running counts of history: shown in its metadata."""

    markets: int = 0  # (ASIN, market) pairs that got a history block
    points: int = 0
    truncated: int = 0  # points beyond MAX_HISTORY_POINTS, oldest, left out
    dropped: Counter[str] = field(default_factory=Counter)  # series, by reason

    def add(self, result: HistoryResult) -> None:
        if result.points:
            self.markets += 1
            self.points += len(result.points)
        self.truncated += result.truncated
        self.dropped.update(result.dropped)


def keepa_minutes_to_ms(minutes: int) -> int:
    return (minutes + KEEPA_EPOCH_OFFSET_MINUTES) * MS_PER_MINUTE


def _series(array: Any, stride: int) -> list[tuple[int, int]] | str:
    """(Keepa minutes, price or -1/-2) pairs of one csv array, or the reason it is dropped."""
    if not isinstance(array, list):
        return NOT_A_LIST
    if len(array) > MAX_SERIES_ENTRIES:
        return TOO_LONG
    if len(array) % stride:
        return BAD_LENGTH
    pairs: list[tuple[int, int]] = []
    previous = 0
    for start in range(0, len(array), stride):
        minutes = keepa_int(array[start])
        price = keepa_int(array[start + 1])
        shipping = keepa_int(array[start + 2]) if stride == 3 else 0
        if minutes is None or price is None or shipping is None:
            return NOT_INTEGER
        if not 0 < minutes <= MAX_KEEPA_MINUTES:
            return TIME_OUT_OF_RANGE
        if minutes < previous:
            return TIME_NOT_ORDERED
        previous = minutes
        if price < 0:
            # -1 no offer, -2 not set; any other negative is not a price Keepa writes.
            if price < PRICE_NOT_SET:
                return PRICE_OUT_OF_RANGE
        else:
            price += max(shipping, 0)
            if price > MAX_PRICE_MINOR or shipping > MAX_PRICE_MINOR:
                return PRICE_OUT_OF_RANGE
        pairs.append((minutes, price))
    return pairs


def parse_history(
    csv: Any,
    window_start_ms: int,
    window_end_ms: int,
    max_points: int = MAX_HISTORY_POINTS,
) -> HistoryResult:
    """The points of one market's ``csv`` with times in ``[window_start_ms, window_end_ms)``.

    ``window_end_ms`` is the pull time: the pull's own observation is that moment, so a history
    point never takes its id. A value set before the window still counts at the window's first
    change (Keepa's ``days`` keeps each series' last older entry for exactly that reason).
    """
    result = HistoryResult(None)
    if not isinstance(csv, list):
        return result  # history not requested, or Keepa has none: no block, nothing dropped
    series: list[tuple[str, list[tuple[int, int]]]] = []
    for index, name, stride in HISTORY_SERIES:
        array = csv[index] if index < len(csv) else None
        if array is None:
            continue  # Keepa leaves out a series it has no data for
        parsed = _series(array, stride)
        if isinstance(parsed, str):
            result.dropped[parsed] += 1
        elif parsed:
            series.append((name, parsed))
    if not series:
        return result
    # One merge over the three series, oldest first; at equal times every series is applied
    # before the point is taken (stable sort keeps each series' own order).
    changes = sorted(
        ((minutes, name, price) for name, pairs in series for minutes, price in pairs),
        key=lambda change: change[0],
    )
    # The three prices enrichment's rules read, as a MarketOffer; -2 (not set) until a series
    # has its first value.
    state = cast(MarketOffer, dict.fromkeys(("amazon", "new", "buy_box"), PRICE_NOT_SET))
    points: list[HistoryPoint] = []
    last: tuple[int | None, int | None] | None = None
    for position, (minutes, name, price) in enumerate(changes):
        state[name] = price  # type: ignore[literal-required]
        if position + 1 < len(changes) and changes[position + 1][0] == minutes:
            continue
        at = keepa_minutes_to_ms(minutes)
        if not window_start_ms <= at < window_end_ms:
            continue
        prices = (buy_price(state), sell_price(state))
        if prices != last:
            points.append([at, *prices])
            last = prices
    if len(points) > max_points:
        result.truncated = len(points) - max_points
        points = points[-max_points:]
    result.points = points
    return result


def history_window(pulled_at_ms: int, days: int) -> tuple[int, int]:
    """``[pull − days, pull)`` in epoch ms."""
    return pulled_at_ms - days * MS_PER_DAY, pulled_at_ms
