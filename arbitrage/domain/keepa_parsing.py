"""Keepa product objects → raw updates (docs/design.md, Raw update). Pure: no HTTP or Dagster.

Keepa's product object (keepacom/api_backend ``structs/Product.java`` and ``Stats.java``) carries
``stats.current``, an array indexed like ``Product.CsvType``: prices are integers in the locale's
smallest unit (cents, pence), -1 means "no offer" and, for fields Keepa does not track, -2.
The same parsing runs for the live API and for the bundled sample, so both produce identical
raw updates for identical bodies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from arbitrage.domain.keepa_history import (
    KEEPA_EPOCH_OFFSET_MINUTES,
    MAX_KEEPA_MINUTES,
    HistoryStats,
    history_window,
    parse_history,
)
from arbitrage.domain.keepa_signals import keepa_int, parse_signals
from arbitrage.domain.markets import DEFAULT_MARKETS, MARKETPLACES
from arbitrage.domain.messages.timestamps import epoch_ms, format_utc
from arbitrage.domain.messages.types import (
    ASIN_PATTERN,
    MAX_DIMENSION_MM,
    MAX_PRICE_MINOR,
    MAX_SALES_RANK,
    MAX_TITLE_CHARS,
    MAX_WEIGHT_G,
    PRICE_NONE,
    PRICE_NOT_SET,
    RAW_UPDATE_SCHEMA_VERSION,
    MarketOffer,
    PackageInfo,
    RawUpdate,
)
from arbitrage.domain.redaction import preview

# Keepa time: minutes since 2011-01-01 00:00 UTC, i.e. Unix minutes minus
# KEEPA_EPOCH_OFFSET_MINUTES (arbitrage/domain/keepa_history.py, which reads the csv histories).

# Indices into stats.current (Product.CsvType).
CSV_AMAZON = 0
CSV_NEW = 1
CSV_SALES = 3
CSV_COUNT_NEW = 11
CSV_BUY_BOX_SHIPPING = 18
# BUY_BOX_SHIPPING is the highest index we read, so a shorter array lacks some of our fields.
MIN_CURRENT_LENGTH = CSV_BUY_BOX_SHIPPING + 1

# Keepa accepts at most 100 ASINs per /product request (Request.getProductRequest).
MAX_ASINS_PER_REQUEST = 100

# Product.ProductType 4 = INVALID: "no data available due to invalid or deprecated asin".
PRODUCT_TYPE_INVALID = 4

MAX_OFFER_COUNT = 100_000
MAX_CATEGORY_NAME_CHARS = 500

Source = Literal["keepa", "sample"]


# --------------------------------------------------------------------------- Keepa time


def keepa_minutes_to_utc(minutes: int) -> datetime:
    """Keepa minutes → aware UTC datetime (Unix ms = (minutes + 21564000) × 60000)."""
    return datetime.fromtimestamp((minutes + KEEPA_EPOCH_OFFSET_MINUTES) * 60, tz=UTC)


def utc_to_keepa_minutes(moment: datetime) -> int:
    """Aware datetime → Keepa minutes, rounded down to the whole minute like Keepa does."""
    if moment.tzinfo is None:
        raise ValueError("utc_to_keepa_minutes needs an aware datetime (with a UTC offset)")
    return math.floor(moment.timestamp() / 60) - KEEPA_EPOCH_OFFSET_MINUTES


# --------------------------------------------------------------------------- value helpers


def _current_value(current: Sequence[Any] | None, index: int) -> int | None:
    if current is None or index >= len(current):
        return None
    return keepa_int(current[index])


def _price(current: Sequence[Any] | None, index: int) -> int:
    """A price from stats.current; -1 / -2 are kept, anything unusable becomes -2 (not set)."""
    value = _current_value(current, index)
    if value is None:
        return PRICE_NOT_SET
    if value in (PRICE_NONE, PRICE_NOT_SET) or 0 <= value <= MAX_PRICE_MINOR:
        return value
    # Other negatives and absurd amounts are data errors, not offers; never pass them as prices.
    return PRICE_NOT_SET


def _rank(current: Sequence[Any] | None) -> int:
    value = _current_value(current, CSV_SALES)
    # Not every product has a sales rank; 0 is not a rank either.
    return value if value is not None and 0 < value <= MAX_SALES_RANK else -1


def _offer_count(current: Sequence[Any] | None) -> int:
    value = _current_value(current, CSV_COUNT_NEW)
    return value if value is not None and 0 <= value <= MAX_OFFER_COUNT else -1


def _referral_pct(product: Mapping[str, Any]) -> float | None:
    # referralFeePercentage (float) replaced the deprecated integer referralFeePercent.
    for name in ("referralFeePercentage", "referralFeePercent"):
        value = product.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if 0 < value <= 100 and math.isfinite(value):
            return float(value)
    return None


def _fba_fee(product: Mapping[str, Any]) -> int | None:
    fees = product.get("fbaFees")
    if not isinstance(fees, Mapping):
        return None
    fee = keepa_int(fees.get("pickAndPackFee"))
    # Keepa: a fee of 0 means the product has no valid dimensions, so it could not be computed;
    # the fee model's weight-tier estimate is better than a fee of zero.
    if fee is None or fee <= 0 or fee > MAX_PRICE_MINOR:
        return None
    return fee


def _positive(value: Any, limit: int) -> int | None:
    # Keepa marks unknown package values with 0 or -1; values past the limit are data errors.
    number = keepa_int(value)
    return number if number is not None and 0 < number <= limit else None


def _last_update(product: Mapping[str, Any]) -> str | None:
    minutes = keepa_int(product.get("lastUpdate"))
    # 0 = never updated; anything past ~2125 is a data error, not a time.
    if minutes is None or not 0 < minutes <= MAX_KEEPA_MINUTES:
        return None
    return format_utc(keepa_minutes_to_utc(minutes))


def _root_category(product: Mapping[str, Any]) -> int | None:
    # Keepa: rootCategory is 0 when no root category is known.
    return _positive(product.get("rootCategory"), 2**53)


# --------------------------------------------------------------------------- product object


def has_product_data(product: Mapping[str, Any]) -> bool:
    """False for Keepa's placeholder objects: an ASIN it knows nothing about in that market."""
    if keepa_int(product.get("productType")) == PRODUCT_TYPE_INVALID:
        return False
    title = product.get("title")
    stats = product.get("stats")
    has_title = isinstance(title, str) and bool(title.strip())
    has_stats = isinstance(stats, Mapping) and bool(stats.get("current"))
    return has_title or has_stats


def parse_product(product: Mapping[str, Any], market_code: str) -> MarketOffer | None:
    """One market's Keepa product object → its ``MarketOffer``; None if Keepa has no data."""
    market = MARKETPLACES[market_code]
    if not has_product_data(product):
        return None
    stats = product.get("stats")
    current = stats.get("current") if isinstance(stats, Mapping) else None
    if not isinstance(current, Sequence) or isinstance(current, str):
        current = None
    return {
        "domain_id": market.keepa_domain_id,
        "currency": market.currency,
        "buy_box": _price(current, CSV_BUY_BOX_SHIPPING),
        "amazon": _price(current, CSV_AMAZON),
        "new": _price(current, CSV_NEW),
        "sales_rank": _rank(current),
        "offer_count_new": _offer_count(current),
        "referral_fee_pct": _referral_pct(product),
        "fba_fee": _fba_fee(product),
        "root_category": _root_category(product),
        "last_update": _last_update(product),
        "signals": parse_signals(stats, market_code, product),
    }


def extract_title(product: Mapping[str, Any]) -> str | None:
    title = product.get("title")
    if not isinstance(title, str) or not title.strip():
        return None
    # The schema caps titles; a longer one is still the same product, so cut rather than drop.
    return title.strip()[:MAX_TITLE_CHARS]


def extract_package(product: Mapping[str, Any]) -> PackageInfo:
    return {
        "weight_g": _positive(product.get("packageWeight"), MAX_WEIGHT_G),
        "length_mm": _positive(product.get("packageLength"), MAX_DIMENSION_MM),
        "width_mm": _positive(product.get("packageWidth"), MAX_DIMENSION_MM),
        "height_mm": _positive(product.get("packageHeight"), MAX_DIMENSION_MM),
    }


def extract_category(product: Mapping[str, Any]) -> dict[str, Any]:
    """``{root_id, name}`` from rootCategory and the categoryTree entry naming it."""
    root_id = _root_category(product)
    tree = product.get("categoryTree")
    entries = [e for e in tree if isinstance(e, Mapping)] if isinstance(tree, list) else []
    name: str | None = None
    # The tree is ordered from the root down; prefer the entry whose id is the root category.
    for entry in entries:
        if root_id is not None and keepa_int(entry.get("catId")) == root_id:
            name = entry.get("name") if isinstance(entry.get("name"), str) else None
            break
    if name is None and entries and isinstance(entries[0].get("name"), str):
        name = entries[0]["name"]
    if name is not None:
        name = name.strip()[:MAX_CATEGORY_NAME_CHARS] or None
    return {"root_id": root_id, "name": name}


def _package_known(package: PackageInfo) -> bool:
    return any(value is not None for value in package.values())


def current_price(offer: MarketOffer) -> int:
    """The headline price of a market: buy box if positive, else lowest new, else -1."""
    if offer["buy_box"] > 0:
        return offer["buy_box"]
    if offer["new"] > 0:
        return offer["new"]
    return PRICE_NONE


def _ordered_markets(per_market: Mapping[str, Any], market_order: Sequence[str]) -> list[str]:
    ordered = [code for code in market_order if code in per_market]
    # Markets the caller did not rank still count, after the ranked ones, in a stable order.
    ordered += sorted(code for code in per_market if code not in ordered)
    return ordered


def merge_market_products(
    asin: str,
    per_market: Mapping[str, Mapping[str, Any]],
    pulled_at: datetime,
    source: Source,
    market_order: Sequence[str] = DEFAULT_MARKETS,
    history_days: int = 0,
    history_stats: HistoryStats | None = None,
) -> RawUpdate:
    """Merge one ASIN's Keepa product objects from several markets into ONE raw update.

    The home market (``domain_id``) is the first market in ``market_order`` that has data;
    title, package and category come from it, each falling back to the other markets in order.
    With ``history_days`` > 0 (the pull asked Keepa for history) each market's ``csv`` arrays
    become its ``history`` block, the points of the ``history_days`` before the pull
    (arbitrage/domain/keepa_history.py), counted in ``history_stats``.
    Raises ``ValueError`` when no market has data for the ASIN (there is nothing to send).
    """
    asin = asin.strip().upper()
    if not ASIN_PATTERN.match(asin):
        raise ValueError(f"{asin!r} is not an ASIN (10 characters A-Z, 0-9)")
    if source not in ("keepa", "sample"):
        raise ValueError(f"source must be 'keepa' or 'sample', not {source!r}")

    offers: dict[str, MarketOffer] = {}
    found: dict[str, Mapping[str, Any]] = {}
    for code in _ordered_markets(per_market, market_order):
        if code not in MARKETPLACES:
            known = ", ".join(sorted(MARKETPLACES))
            raise ValueError(f"unknown marketplace code {code!r}; known codes are {known}")
        offer = parse_product(per_market[code], code)
        if offer is not None:
            offers[code] = offer
            found[code] = per_market[code]
    if not offers:
        asked = ", ".join(per_market) or "no markets"
        raise ValueError(f"Keepa has no data for {asin} in any of: {asked}")

    timestamp = format_utc(pulled_at)
    if history_days > 0:
        window = history_window(epoch_ms(timestamp), history_days)
        for code, offer in offers.items():
            history = parse_history(found[code].get("csv"), *window)
            if history_stats is not None:
                history_stats.add(history)
            if history.points:
                offer["history"] = history.points

    home = next(iter(offers))
    products = list(found.values())  # home market first, then the others in market order
    title = next((t for t in map(extract_title, products) if t is not None), "")
    package = next(
        (p for p in map(extract_package, products) if _package_known(p)), extract_package({})
    )
    category = next(
        (c for c in map(extract_category, products) if c["root_id"] is not None or c["name"]),
        {"root_id": None, "name": None},
    )
    return {
        "schema_version": RAW_UPDATE_SCHEMA_VERSION,
        "asin": asin,
        "title": title,
        "domain_id": MARKETPLACES[home].keepa_domain_id,
        "current_prices": {code: current_price(offer) for code, offer in offers.items()},
        "markets": offers,
        "package": package,
        "category": category,
        "timestamp": timestamp,
        "source": source,
    }


# --------------------------------------------------------------------------- /product response


# Keepa's token costs of a /product request, per product asked for (Keepa's API documentation as
# the `keepa` package's `Keepa.query` quotes it): 1 token per product; `stats` "no extra token
# cost"; `buybox` "additional token cost: 2 per product". Assumed: an ASIN Keepa has no data for
# costs the same (the response's `tokensConsumed` is reported next to this estimate, so a
# difference shows); `offers` and `update=0` would cost more and are not used.
# `history` (the csv arrays; on unless history=0) and `days` (cut them to the last N days) have
# no extra cost: Keepa's plans describe one token as "the complete data set for one product",
# history included, and neither parameter is listed with a cost (history=0 only makes the
# answer smaller and faster).
TOKENS_PER_PRODUCT = 1
TOKENS_STATS_EXTRA = 0
TOKENS_BUYBOX_EXTRA = 2
TOKENS_HISTORY_EXTRA = 0


def product_token_cost(*, stats: bool, buybox: bool, history: bool = False) -> int:
    """Tokens one product costs in one market's /product request with these parameters."""
    return (
        TOKENS_PER_PRODUCT
        + (TOKENS_STATS_EXTRA if stats else 0)
        + (TOKENS_BUYBOX_EXTRA if buybox else 0)
        + (TOKENS_HISTORY_EXTRA if history else 0)
    )


@dataclass(frozen=True)
class TokenInfo:
    """Keepa's token bookkeeping from a response body (None where the body lacks the field)."""

    tokens_left: int | None
    refill_in_ms: int | None
    refill_rate: int | None
    tokens_consumed: int
    # Keepa's clock when it answered (epoch ms): the time discovery and the planner keep.
    timestamp_ms: int | None = None


def token_info(body: Mapping[str, Any]) -> TokenInfo:
    return TokenInfo(
        tokens_left=keepa_int(body.get("tokensLeft")),
        refill_in_ms=keepa_int(body.get("refillIn")),
        refill_rate=keepa_int(body.get("refillRate")),
        tokens_consumed=keepa_int(body.get("tokensConsumed")) or 0,
        timestamp_ms=keepa_int(body.get("timestamp")),
    )


def response_error(body: Mapping[str, Any]) -> str | None:
    """Keepa's ``error`` object ({type, message, details}) as one sentence, or None."""
    error = body.get("error")
    if not error:
        return None
    if isinstance(error, Mapping):
        parts = [str(error[k]) for k in ("type", "message", "details") if error.get(k)]
        return ": ".join(parts) or "unspecified error"
    return str(error)


def parse_product_response(body: Mapping[str, Any], market_code: str) -> list[tuple[str, dict]]:
    """``(asin, product)`` for each product Keepa has data for, in response order.

    ``products`` may be missing or null (nothing found). Placeholder objects (an ASIN with no
    title and no stats, or productType INVALID) count as "not found in that market".
    Raises ``ValueError`` when the body answers for another marketplace than ``market_code``.
    """
    domain_id = MARKETPLACES[market_code].keepa_domain_id
    products = body.get("products")
    if not isinstance(products, list):
        return []
    found: list[tuple[str, dict]] = []
    for product in products:
        if not isinstance(product, dict):
            continue
        asin = product.get("asin")
        if not isinstance(asin, str) or not ASIN_PATTERN.match(asin.strip().upper()):
            continue
        answered_domain = keepa_int(product.get("domainId"))
        if answered_domain is not None and answered_domain != domain_id:
            raise ValueError(
                f"Keepa answered {asin} for domain {answered_domain}, but the request was for "
                f"{market_code} (domain {domain_id})"
            )
        if has_product_data(product):
            found.append((asin.strip().upper(), product))
    return found


# --------------------------------------------------------------------------- ASIN list


def read_asin_list(text: str) -> tuple[list[str], list[str]]:
    """Parse an ASIN list file: one per line, ``#`` comments and blank lines allowed.

    Returns ``(asins, problems)``: ASINs upper-cased and de-duplicated in first-seen order;
    each unusable line is reported by number with a redacted preview and skipped:
    ``"line N: 'KEEP…' (41 characters) is not an ASIN (...)"``. Never the whole line: a list
    pointed at the wrong file (an env file, /proc/self/environ) would put its secrets in the log.
    """
    asins: dict[str, None] = {}
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        candidate = entry.upper()
        if ASIN_PATTERN.match(candidate):
            asins.setdefault(candidate, None)
        else:
            problems.append(
                f"line {number}: {preview(entry)} is not an ASIN (10 characters A-Z, 0-9)"
            )
    return list(asins), problems


def chunked(items: Sequence[str], size: int = MAX_ASINS_PER_REQUEST) -> Iterable[Sequence[str]]:
    """Consecutive slices of at most ``size`` items (Keepa's per-request ASIN limit)."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]
