"""Small builders for test messages (valid by default; override what a test is about)."""

from __future__ import annotations

import copy
from typing import Any

from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.types import EnrichedProduct, RawUpdate
from arbitrage.domain.messages.validation import validate_raw_update


def offer(market: str, **fields: Any) -> dict[str, Any]:
    base = {
        "domain_id": MARKETPLACES[market].keepa_domain_id,
        "currency": MARKETPLACES[market].currency,
        "buy_box": -1,
        "amazon": -1,
        "new": -1,
        "sales_rank": 1000,
        "offer_count_new": 4,
        "referral_fee_pct": 15,
        "fba_fee": 300,
        "root_category": None,
        "last_update": "2026-11-26T09:00:00.000Z",
    }
    base.update(fields)
    return base


def steady_signals(price: int) -> dict:
    """A steady seller's signals: every rule of rules_v1 passes at ``price``."""
    return {
        "buy_box_avg90": price,
        "new_avg90": price,
        "sales_rank_drops30": 30,
        "sales_rank_drops90": 90,
        "new_oos_pct90": 2,
        "buy_box_amazon_pct": 0,
        "offer_count_fba": 3,
    }


def raw_update(
    asin: str = "B000TEST01",
    markets: dict[str, dict[str, Any]] | None = None,
    weight_g: int | None = 400,
    timestamp: str = "2026-11-26T10:00:00.000Z",
    **fields: Any,
) -> dict[str, Any]:
    markets = markets or {"DE": offer("DE", new=4500), "FR": offer("FR", buy_box=8000)}
    message = {
        "schema_version": 1,
        "asin": asin,
        "title": f"Test product {asin}",
        "domain_id": 3,
        "current_prices": {},
        "markets": copy.deepcopy(markets),
        "package": {"weight_g": weight_g, "length_mm": 200, "width_mm": 100, "height_mm": 50},
        "category": {"root_id": None, "name": None},
        "timestamp": timestamp,
        "source": "sample",
    }
    message.update(fields)
    return message


def enriched(config: FeeConfig, **kwargs: Any) -> EnrichedProduct:
    raw: RawUpdate = validate_raw_update(raw_update(**kwargs))
    return enrich(raw, config)


# What an event or a stored opportunity state holds that depends on the clock or on where
# batches were cut: left out when tests compare them with the domain functions' output.
UNSTABLE_FIELDS = (
    "detected_at",
    "opened_at",
    "raised_by",
    "updated_by",
    "base",
    "confirmed_source_ms",
)


def strip_time(alert: dict[str, Any]) -> dict[str, Any]:
    """An event or a stored state without what depends on the clock or on batch cuts."""
    return {k: v for k, v in alert.items() if k not in UNSTABLE_FIELDS}


def de_to_fr(
    config: FeeConfig,
    sell_signals: dict[str, Any] | None,
    buy_signals: dict[str, Any] | None = None,
    **fields: Any,
) -> EnrichedProduct:
    """The rules' base case: buy in DE at 45.00, sell in FR at 80.00 (referral 15 %, FBA
    3.00); an alert with every rule off. ``fields`` go to the raw update (``package``...)."""
    return enriched(
        config,
        markets={
            "DE": offer("DE", amazon=4999, new=4500, signals=buy_signals),
            "FR": offer(
                "FR",
                buy_box=8000,
                new=7900,
                referral_fee_pct=15,
                fba_fee=300,
                signals=sell_signals,
            ),
        },
        **{"weight_g": 400, **fields},
    )
