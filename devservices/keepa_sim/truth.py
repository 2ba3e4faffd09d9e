"""Ground truth, for measurement only (not part of Keepa's API): which cross-market
opportunities are open at a moment, by the pipeline's own rules applied to every product's
true offers — what the pipeline would alert if it saw every price at every minute.

Only a product whose offers differ enough between two markets can be an opportunity after
fees, so the others are skipped before the (per-product, Python) merge and enrichment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.fee_model import detect
from arbitrage.domain.keepa_parsing import merge_market_products
from arbitrage.domain.rules_config import RulesConfig
from devservices.keepa_sim.catalog import MARKETS, Catalog
from devservices.keepa_sim.market import state_at
from devservices.keepa_sim.products import market_objects
from devservices.keepa_sim.tokens import MINUTE_MS
from tools.sample_catalog import EUR_PER_GBP

# Below this ratio of the dearest to the cheapest new offer (in EUR) no route pays its fees.
MIN_SPREAD = 1.15


@dataclass(frozen=True)
class OpenOpportunity:
    asin: str
    buy_market: str
    sell_market: str
    profit_eur_cents: int


def candidates(catalog: Catalog, minute: float) -> np.ndarray:
    """Products whose offers spread enough across markets to possibly pay (all of them)."""
    state = state_at(catalog, np.arange(catalog.size), minute)
    eur = np.where(state.new > 0, state.new, np.nan).astype(float)
    eur[:, MARKETS.index("GB")] *= EUR_PER_GBP
    with np.errstate(invalid="ignore"):
        spread = np.nanmax(eur, axis=1) / np.nanmin(eur, axis=1)
    return np.flatnonzero(spread >= MIN_SPREAD)


def open_at(
    catalog: Catalog,
    minute: float,
    start_ms: int,
    fees: FeeConfig,
    rules: RulesConfig,
) -> list[OpenOpportunity]:
    """The opportunities open at ``minute`` (simulated minutes since ``start_ms``)."""
    indexes = candidates(catalog, minute)
    if not len(indexes):
        return []
    state = state_at(catalog, indexes, minute)
    at_ms = start_ms + int(minute * MINUTE_MS)
    pulled_at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    products = []
    for index, per_market in market_objects(catalog, state, start_ms).items():
        with_data = {m: o for m, o in per_market.items() if o.get("stats")}
        if len(with_data) < 2:
            continue
        raw = merge_market_products(catalog.asin(index), with_data, pulled_at, "keepa", MARKETS)
        products.append(enrich(raw, fees))
    detection = detect(products, fees, rules, pulled_at.isoformat())
    return [
        OpenOpportunity(a["asin"], a["buy_market"], a["sell_market"], a["profit_eur_cents"])
        for a in detection.alerts
    ]
