"""Keepa statistics for the sample's product objects: averages, rank drops, out-of-stock
percentages and buy box statistics, shaped by one archetype per product.

They are drawn from a random stream of their own, seeded by the sample's seed and the ASIN, and
added after a product's prices are drawn: the prices, ranks and edge cases of the sample stay
exactly what they were before the statistics existed, and one product's statistics do not
depend on how many products come before it.

The archetypes (rates in tools/sample_catalog.py, ``SignalArchetypeRates``):

* ``steady``: averages within a few % of today's prices, rank drops in line with the sales rank,
  rarely out of stock, Amazon's share of the buy box matching whether it sells the item;
* ``spike``: in the market with the dearest price today the 90-day average is 35-90 % lower,
  i.e. today's sell price is a spike;
* ``dead``: 0-1 rank drops in 30 days, out of stock 40-95 % of the 90 days;
* ``amazon_dominated``: (only items Amazon sells) Amazon held the buy box 70-98 % of the time.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache
from typing import Any

from arbitrage.domain.keepa_signals import (
    AMAZON_SELLER_IDS,
    CSV_AMAZON,
    CSV_BUY_BOX_SHIPPING,
    CSV_NEW,
)
from arbitrage.domain.markets import MARKETPLACES
from tools.sample_catalog import EUR_PER_GBP, SignalArchetypeRates

CSV_SALES = 3
# Price noise of the averages around today's price, by window (a longer window drifts further).
AVG_SIGMA = {"avg30": 0.02, "avg90": 0.035, "avg180": 0.05}
# Keepa counts at most one drop per rank update; more than ~24 a day are never reported.
MAX_DROPS_30 = 720
_SELLER_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Per market: the share of products tracked too briefly for a 180-day average (Keepa: -1).
SHORT_HISTORY_RATE = 0.03
SELLERS_PER_MARKET = 40


def archetype_rng(seed: int, asin: str) -> random.Random:
    return random.Random(f"{seed}/keepa-stats/{asin}")


def choose_archetype(rng: random.Random, sells_on_amazon: bool, rates: SignalArchetypeRates) -> str:
    draw = rng.random()
    if draw < rates.dead:
        return "dead"
    if draw < rates.dead + rates.spike:
        return "spike"
    if sells_on_amazon and rng.random() < rates.amazon_dominated:
        return "amazon_dominated"
    return "steady"


def _eur(price: int, market: str) -> float:
    return price * EUR_PER_GBP if MARKETPLACES[market].currency == "GBP" else float(price)


def dearest_market(per_market: dict[str, dict[str, Any]]) -> str | None:
    """The market whose buy box (else lowest new) is dearest in EUR today: the likely sell side."""
    best: tuple[float, str] | None = None
    for market, product in per_market.items():
        stats = product.get("stats")
        if not stats:
            continue
        current = stats["current"]
        price = current[CSV_BUY_BOX_SHIPPING] if current[CSV_BUY_BOX_SHIPPING] > 0 else current[1]
        if price > 0 and (best is None or _eur(price, market) > best[0]):
            best = (_eur(price, market), market)
    return best[1] if best else None


def _noisy(rng: random.Random, value: float, sigma: float) -> int:
    return max(1, round(value * (1 + max(-2 * sigma, min(2 * sigma, rng.gauss(0, sigma))))))


def _averages(
    rng: random.Random, current: list[int], spike: bool, short_history: bool
) -> dict[str, list[int]]:
    arrays = {window: [-1] * len(current) for window in AVG_SIGMA}
    for index in (CSV_AMAZON, CSV_NEW, CSV_BUY_BOX_SHIPPING):
        today = current[index]
        if index == CSV_BUY_BOX_SHIPPING and today <= 0:
            # No buy box today: it followed the lowest new offer while there was one.
            today = current[CSV_NEW]
            if today > 0:
                arrays["avg90"][index] = _noisy(rng, today, AVG_SIGMA["avg90"])
                if not short_history:
                    arrays["avg180"][index] = _noisy(rng, today, AVG_SIGMA["avg180"])
            continue
        if today <= 0:
            continue  # no offer (or rank) in the window: Keepa sends -1
        level = today
        if spike:
            level = today / rng.uniform(1.35, 1.9)  # today's price is far above the usual
        for window, sigma in AVG_SIGMA.items():
            if window == "avg180" and short_history:
                continue
            base = level
            if spike and window == "avg30":
                base = level * rng.uniform(1.0, 1.15)  # the spike is recent: 30 days lag less
            arrays[window][index] = _noisy(rng, base, sigma)
    return arrays


def _rank_drops(rng: random.Random, rank: int, dead: bool) -> tuple[int, int]:
    if rank <= 0:
        return -1, -1  # no sales rank: Keepa knows no drops
    if dead:
        drops30 = rng.randint(0, 1)
        return drops30, drops30 + rng.randint(0, 3)
    # Roughly Keepa's picture: rank 100 ≈ 200 drops a month, rank 10 000 ≈ 20, 500 000 ≈ 3.
    drops30 = min(MAX_DROPS_30, round(2000 / math.sqrt(rank) * math.exp(rng.gauss(0, 0.25))))
    drops90 = min(3 * MAX_DROPS_30, round(drops30 * 3 * math.exp(rng.gauss(0, 0.12))))
    return drops30, max(drops30, drops90)


def _oos(rng: random.Random, current: list[int], sells_on_amazon: bool, dead: bool) -> list[int]:
    pct = [-1] * len(current)
    out_now = current[CSV_NEW] <= 0
    low, high = (40, 95) if dead else ((20, 70) if out_now else (0, 8))
    new = rng.randint(low, high) if dead or out_now or rng.random() < 0.4 else 0
    pct[CSV_NEW] = new
    pct[CSV_BUY_BOX_SHIPPING] = min(100, new + rng.randint(0, 5))
    if sells_on_amazon:
        amazon_out_now = current[CSV_AMAZON] <= 0
        pct[CSV_AMAZON] = max(new, rng.randint(60, 100) if amazon_out_now else rng.randint(0, 15))
    return pct


@lru_cache(maxsize=64)
def _seller_pool(seed: int, market: str) -> tuple[str, ...]:
    """The third-party sellers of a market: the same few dozen win buy boxes on many items."""
    rng = random.Random(f"{seed}/sellers/{market}")
    return tuple(
        "A" + "".join(rng.choices(_SELLER_CHARS, k=rng.choice((12, 13))))
        for _ in range(SELLERS_PER_MARKET)
    )


def _buy_box_stats(
    rng: random.Random,
    market: str,
    stats: dict[str, Any],
    archetype: str,
    sells_on_amazon: bool,
    last_update: int,
    avg90_buy_box: int,
    sellers: tuple[str, ...],
) -> dict[str, dict[str, Any]]:
    dead = archetype == "dead"
    if dead and rng.random() < 0.3:
        return {}  # nobody held the buy box in the window: Keepa has no statistics
    if archetype == "amazon_dominated":
        amazon = rng.uniform(70, 98)
    elif sells_on_amazon and stats["buyBoxIsAmazon"]:
        amazon = rng.uniform(40, 85)
    elif sells_on_amazon and rng.random() < 0.7:
        amazon = rng.uniform(0.5, 35)
    else:
        amazon = 0.0
    nobody = rng.uniform(20, 60) if dead else rng.uniform(0, 5)
    rest = max(0.0, 100 - amazon - nobody)
    winners = rng.sample(sellers, rng.randint(1, 3))
    weights = [rng.random() + 0.05 for _ in winners]
    price = avg90_buy_box if avg90_buy_box > 0 else -1
    offers = max(1, stats["current"][11])

    def entry(share: float, is_fba: bool) -> dict[str, Any]:
        return {
            "percentageWon": round(share, 1),
            "avgPrice": _noisy(rng, price, 0.02) if price > 0 else -1,
            "avgNewOfferCount": max(1, offers + rng.randint(-2, 2)),
            "isFBA": is_fba,
            "lastSeen": last_update - 60 * rng.randint(0, 24 * 30),
        }

    by_seller: dict[str, dict[str, Any]] = {}
    if amazon > 0:
        by_seller[AMAZON_SELLER_IDS[market]] = entry(amazon, True)
    for seller, weight in zip(winners, weights, strict=True):
        by_seller[seller] = entry(rest * weight / sum(weights), rng.random() < 0.7)
    return by_seller


def add_statistics(
    per_market: dict[str, dict[str, Any]],
    asin: str,
    seed: int,
    rates: SignalArchetypeRates,
) -> tuple[str, str | None]:
    """Add Keepa's statistics to each market's product object (in place).

    Returns the product's archetype and, for a spike, the market whose price spikes.
    """
    rng = archetype_rng(seed, asin)
    with_data = {m: p for m, p in per_market.items() if p.get("stats")}
    sells_on_amazon = any(p["stats"]["current"][CSV_AMAZON] > 0 for p in with_data.values())
    archetype = choose_archetype(rng, sells_on_amazon, rates)
    spike_market = dearest_market(with_data) if archetype == "spike" else None
    if archetype == "spike" and spike_market is None:
        archetype = "steady"  # nothing sells anywhere today: no price can spike
    for market, product in with_data.items():
        stats = product["stats"]
        current = stats["current"]
        averages = _averages(
            rng, current, market == spike_market, rng.random() < SHORT_HISTORY_RATE
        )
        drops30, drops90 = _rank_drops(rng, current[CSV_SALES], archetype == "dead")
        stats.update(averages)
        stats["salesRankDrops30"] = drops30
        stats["salesRankDrops90"] = drops90
        stats["outOfStockPercentage90"] = _oos(rng, current, sells_on_amazon, archetype == "dead")
        stats["buyBoxStats"] = _buy_box_stats(
            rng,
            market,
            stats,
            archetype,
            sells_on_amazon,
            product["lastUpdate"],
            averages["avg90"][CSV_BUY_BOX_SHIPPING],
            _seller_pool(seed, market),
        )
        # Keepa fills these only with the `offers` parameter; the live counts are in current.
        stats["offerCountFBA"] = -2
        stats["offerCountFBM"] = -2
    return archetype, spike_market
