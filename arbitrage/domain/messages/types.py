"""Shapes, versions and limits of the pipeline's messages, and the alert's stable id."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal, NotRequired, TypedDict

RAW_UPDATE_SCHEMA_VERSION = 1
ENRICHED_PRODUCT_SCHEMA_VERSION = 1
ALERT_SCHEMA_VERSION = 1
DLQ_SCHEMA_VERSION = 1

# A raw update for five markets is ~2 KiB; anything far beyond is not a product message.
MAX_RECORD_BYTES = 256 * 1024
MAX_TITLE_CHARS = 2000
# Prices above this (10 million in minor units, e.g. EUR 100 000) are data errors, not offers.
MAX_PRICE_MINOR = 10_000_000
MAX_SALES_RANK = 100_000_000
MAX_WEIGHT_G = 1_000_000
MAX_DIMENSION_MM = 10_000

# A pull time is the product document's external version in Elasticsearch, so it is bounded:
# nothing before Keepa's epoch (a pre-1970 time would be a negative version, which fails the
# whole bulk request), nothing far ahead of the stage's clock (it would freeze the document:
# every later update would count as older).
EARLIEST_PULL_DATE = "2011-01-01"
EARLIEST_PULL_MS = 1_293_840_000_000  # 2011-01-01T00:00:00Z
MAX_PULL_AHEAD_MS = 10 * 60 * 1000

# A dead letter must fit its DLQ topic (8 MiB a message) whatever arrived: originals up to 4 MiB
# (5.3 MiB as base64) are kept whole, larger ones cut to their first 64 KiB; the length, the
# SHA-256 and the source topic/partition/offset still identify the whole, fetchable while the
# source topic retains it. Keys are cut at 1 KiB (an ASIN has 10 bytes).
DLQ_VALUE_WHOLE_MAX_BYTES = 4 * 1024 * 1024
DLQ_VALUE_KEPT_BYTES = 64 * 1024
DLQ_KEY_KEPT_BYTES = 1024

PRICE_NONE = -1  # Keepa: no offer
PRICE_NOT_SET = -2  # Keepa: value not set / not tracked

# \Z, not $: "$" also matches before a trailing newline, and "B000TEST01\n" is no ASIN.
ASIN_PATTERN = re.compile(r"^[A-Z0-9]{10}\Z")
SOURCES = ("keepa", "sample")


class SchemaError(ValueError):
    """A message does not match its schema; the text says what to fix."""


class MarketSignals(TypedDict):
    """Keepa's statistics of one market (docs/design.md, Messages); None everywhere = no data.

    Prices are minor units of the market's currency; percentages whole percent (0-100).
    """

    amazon_avg30: int | None  # stats.avg30[AMAZON]
    amazon_avg90: int | None
    amazon_avg180: int | None
    new_avg30: int | None  # stats.avg30[NEW]
    new_avg90: int | None
    new_avg180: int | None
    buy_box_avg30: int | None  # stats.avg30[BUY_BOX_SHIPPING]
    buy_box_avg90: int | None
    buy_box_avg180: int | None
    sales_rank_drops30: int | None
    sales_rank_drops90: int | None
    amazon_oos_pct90: int | None  # stats.outOfStockPercentage90[AMAZON]
    new_oos_pct90: int | None
    buy_box_oos_pct90: int | None
    buy_box_amazon_pct: int | None  # Amazon's share of the buy box over the stats window
    buy_box_is_amazon: bool | None  # the current winner
    buy_box_is_fba: bool | None
    offer_count_fba: int | None  # live new offers fulfilled by Amazon
    offer_count_fbm: int | None  # ... by the merchant
    # Amazon's own "bought in the past month" (Keepa's monthlySold): not an estimate, and most
    # products have none.
    monthly_sold: int | None
    # The listing (Keepa's product object, not its stats): hazardous materials declared, a
    # variation parent (productType 5), items per package, a high return rate, the brand.
    hazmat: bool | None
    variation_parent: bool | None
    package_quantity: int | None
    return_rate_high: bool | None  # Keepa's returnRate 2; 1 = low: False; null: unknown/average
    brand: str | None


class MarketOffer(TypedDict):
    domain_id: int
    currency: str
    buy_box: int  # BUY_BOX_SHIPPING, minor units, -1 none / -2 not set
    amazon: int  # AMAZON
    new: int  # NEW (lowest new, 3rd party)
    sales_rank: int  # SALES rank, -1 unknown
    offer_count_new: int  # COUNT_NEW, -1 unknown
    referral_fee_pct: float | None
    fba_fee: int | None  # fbaFees.pickAndPackFee, minor units
    root_category: int | None
    last_update: str | None  # ISO-8601 UTC
    # Absent in messages written before the signals existed; validation fills in None.
    signals: NotRequired[MarketSignals | None]
    # Keepa's price history, [[epoch ms, buy, sell], ...] (arbitrage/domain/messages/history.py);
    # only
    # when the pull asked for it. Enrichment turns it into price observations and leaves it off
    # the enriched product.
    history: NotRequired[list[list[Any]]]


class PackageInfo(TypedDict):
    weight_g: int | None
    length_mm: int | None
    width_mm: int | None
    height_mm: int | None


class RawUpdate(TypedDict):
    schema_version: int
    asin: str
    title: str
    domain_id: int
    current_prices: dict[str, int]
    markets: dict[str, MarketOffer]
    package: PackageInfo
    category: dict[str, Any]
    timestamp: str
    source: Literal["keepa", "sample"]


class EnrichedMarket(MarketOffer):
    buy_price: int | None
    sell_price: int | None
    buy_price_eur_cents: int | None
    sell_price_eur_cents: int | None
    vat_pct_x100: int  # hundredths of a percent: 1900 = 19 %
    fx_eur_per_unit: str  # exact decimal, e.g. "1.1450"
    referral_pct_x100: int
    referral_pct_source: Literal["product", "category_default", "fallback"]
    fba_fee_resolved: int
    fba_fee_source: Literal["keepa", "weight_tier"]


class EnrichedProduct(TypedDict):
    schema_version: int
    asin: str
    title: str
    domain_id: int
    category: dict[str, Any]
    package: PackageInfo
    markets: dict[str, EnrichedMarket]
    cheapest_market: str | None
    dearest_market: str | None
    spread_eur_cents: int | None
    fx_rates_date: str
    source: str
    source_timestamp: str
    source_timestamp_ms: int
    enriched_at: NotRequired[str]


class AlertSignals(TypedDict):
    """The sell market's signals an alert was judged on (None: Keepa had no data)."""

    monthly_sales: int | None  # estimated from rank drops (sales_estimator)
    sales_estimator: str  # "drops30" | "drops90"
    sell_price_current: int  # minor units; sell_price is the lower of it and sell_avg90
    sell_avg90: int | None  # the 90-day average of sell_avg90_kind, minor units
    sell_avg90_kind: str  # "buy_box" | "new" | "amazon"
    # Both stores' listing facts (route_filters.alert_signals); None: Keepa said nothing.
    listing: NotRequired[dict[str, Any]]
    # Days to sell the planned quantity, storage per unit and the profit after it.
    storage: NotRequired[dict[str, Any]]
    amazon_buy_box_pct: int | None
    fba_offers: int | None
    oos_pct90: int | None
    missing: list[str]  # rules that passed the route without their signal (on_missing=pass)


class Alert(TypedDict):
    schema_version: int
    alert_id: str
    asin: str
    title: str
    buy_market: str
    sell_market: str
    buy_price: dict[str, Any]  # {"amount": minor units, "currency": "EUR"}
    sell_price: dict[str, Any]
    fx_buy_eur_per_unit: str
    fx_sell_eur_per_unit: str
    buy_net: int
    sell_net: int
    referral_fee: int
    fba_fee: int
    inbound_shipping: int
    profit_eur_cents: int
    roi: float
    sales_rank: int
    fx_rates_date: str
    fee_model_version: str
    source_timestamp: str
    detected_at: str
    # Fee model v2 only (docs/fees.md); a v1 alert has none of them.
    closing_fee: NotRequired[int]
    efn_fee: NotRequired[int]
    dst_fee: NotRequired[int]
    fee_vat: NotRequired[int]
    fulfilment: NotRequired[Literal["efn", "pan_eu"]]
    # Set by the arbitrage stage's rules (docs/fees.md, "Rules"); absent from alerts of the fee
    # model alone (``detect_alerts`` without rules).
    rules_version: NotRequired[str]
    signals: NotRequired[AlertSignals]


class DlqEnvelope(TypedDict):
    schema_version: int
    source_topic: str
    partition: int
    offset: int
    key: str | None
    key_truncated: bool
    value: str  # original bytes, base64 (the first DLQ_VALUE_KEPT_BYTES when truncated)
    value_bytes: int  # length of the whole original
    value_sha256: str  # of the whole original
    value_truncated: bool
    stage: str
    error: str
    failed_at: str


# The versions an alert id leaves out, so that fees v1 without rules keeps the ids it always had.
DEFAULT_FEE_VERSION = "v1"
DEFAULT_RULES_VERSION = "none"


def alert_id(
    asin: str,
    buy_market: str,
    sell_market: str,
    buy_price: int,
    sell_price: int,
    fee_version: str = DEFAULT_FEE_VERSION,
    rules_version: str = DEFAULT_RULES_VERSION,
) -> str:
    """Stable id of one opportunity: the same prices on the same route, judged by the same fee
    model and rules, are the same alert. A version is part of the id only when it is not the
    default (fees v1, rules "none"): those ids are the ones raised before versions existed
    (docs/decisions.md 32)."""
    text = f"{asin}|{buy_market}|{sell_market}|{buy_price}|{sell_price}"
    if fee_version != DEFAULT_FEE_VERSION:
        text += f"|fees={fee_version}"
    if rules_version != DEFAULT_RULES_VERSION:
        text += f"|rules={rules_version}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]
