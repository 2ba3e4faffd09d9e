"""The careful checks: strict parsing that fails with a sentence a person can act on.

``parse_raw_update`` / ``parse_enriched_product`` return the validated dict or raise
``SchemaError`` naming the field, what was expected and what arrived. The raw update first tries
the fast path (fast_validation.py) and falls back to these checks at any doubt.
"""

from __future__ import annotations

from typing import Any

from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.codec import decode_json_object
from arbitrage.domain.messages.fast_validation import fast_raw_update
from arbitrage.domain.messages.history import check_market_histories
from arbitrage.domain.messages.signals import check_signals
from arbitrage.domain.messages.timestamps import parse_utc
from arbitrage.domain.messages.types import (
    ASIN_PATTERN,
    EARLIEST_PULL_DATE,
    EARLIEST_PULL_MS,
    ENRICHED_PRODUCT_SCHEMA_VERSION,
    MAX_DIMENSION_MM,
    MAX_PRICE_MINOR,
    MAX_SALES_RANK,
    MAX_TITLE_CHARS,
    MAX_WEIGHT_G,
    PRICE_NOT_SET,
    RAW_UPDATE_SCHEMA_VERSION,
    SOURCES,
    EnrichedProduct,
    MarketOffer,
    PackageInfo,
    RawUpdate,
    SchemaError,
)


def _fail(path: str, expected: str, got: Any) -> SchemaError:
    shown = repr(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return SchemaError(f"field '{path}' must be {expected}, but it is {shown}")


def _require(obj: dict[str, Any], name: str, path: str) -> Any:
    if name not in obj:
        raise SchemaError(f"field '{path}{name}' is missing; every message of this kind needs it")
    return obj[name]


def _int(value: Any, path: str, low: int, high: int, what: str) -> int:
    # bool is an int subclass in Python; JSON true is never a number here.
    if type(value) is not int:
        raise _fail(path, f"an integer ({what})", value)
    if value < low or value > high:
        raise _fail(path, f"{what} between {low} and {high}", value)
    return value


def _optional_int(value: Any, path: str, low: int, high: int, what: str) -> int | None:
    return None if value is None else _int(value, path, low, high, what)


def _price(value: Any, path: str) -> int:
    if type(value) is not int:
        raise _fail(path, "an integer price in minor units (cents/pence), or -1/-2 for none", value)
    if value < PRICE_NOT_SET:
        raise _fail(
            path, "a price ≥ -2 (-1 = no offer, -2 = not set); negative prices are invalid", value
        )
    if value > MAX_PRICE_MINOR:
        raise _fail(path, f"a plausible price ≤ {MAX_PRICE_MINOR} minor units", value)
    return value


def _str(value: Any, path: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise _fail(path, "a string", value)
    if len(value) > max_len:
        raise SchemaError(f"field '{path}' is {len(value)} characters long; the limit is {max_len}")
    return value


def _timestamp(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, "an ISO-8601 UTC timestamp such as 2026-11-26T10:15:00Z", value)
    try:
        parse_utc(value)
    except ValueError:
        raise _fail(path, "an ISO-8601 UTC timestamp such as 2026-11-26T10:15:00Z", value) from None
    return value


def _pull_time(value: Any, path: str) -> str:
    text = _timestamp(value, path)
    if parse_utc(text).timestamp() * 1000 < EARLIEST_PULL_MS:
        raise _fail(path, f"a pull time on or after {EARLIEST_PULL_DATE} (Keepa's epoch)", value)
    return text


def _asin(value: Any, path: str = "asin") -> str:
    if not isinstance(value, str) or not ASIN_PATTERN.match(value):
        raise _fail(path, "an ASIN: 10 characters, A-Z and 0-9", value)
    return value


def _market_code(code: Any, path: str) -> str:
    if code not in MARKETPLACES:
        raise SchemaError(
            f"'{path}' names the unknown marketplace {code!r}; known marketplaces are "
            f"{', '.join(sorted(MARKETPLACES))}"
        )
    return code


def _schema_version(obj: dict[str, Any], expected: int, kind: str) -> None:
    version = _require(obj, "schema_version", "")
    if version != expected:
        raise SchemaError(
            f"{kind} has schema_version {version!r}, but this stage reads version {expected}; "
            "upgrade the consumer or re-produce the message with the current producer"
        )


def _market_offer(code: str, obj: Any) -> MarketOffer:
    path = f"markets.{code}."
    if not isinstance(obj, dict):
        raise _fail(path[:-1], "an object", obj)
    market = MARKETPLACES[code]
    domain_id = _int(
        _require(obj, "domain_id", path), path + "domain_id", 1, 100, "Keepa domain id"
    )
    if domain_id != market.keepa_domain_id:
        raise _fail(
            path + "domain_id", f"{market.keepa_domain_id}, the Keepa domain of {code}", domain_id
        )
    currency = _require(obj, "currency", path)
    if currency != market.currency:
        raise _fail(path + "currency", f"{market.currency!r}, the currency of {code}", currency)
    referral = obj.get("referral_fee_pct")
    if referral is not None and (
        isinstance(referral, bool)
        or not isinstance(referral, int | float)
        or not 0 <= referral <= 100
    ):
        raise _fail(path + "referral_fee_pct", "a percentage between 0 and 100, or null", referral)
    last_update = obj.get("last_update")
    return {
        "domain_id": domain_id,
        "currency": currency,
        "buy_box": _price(_require(obj, "buy_box", path), path + "buy_box"),
        "amazon": _price(_require(obj, "amazon", path), path + "amazon"),
        "new": _price(_require(obj, "new", path), path + "new"),
        "sales_rank": _int(
            obj.get("sales_rank", -1),
            path + "sales_rank",
            -1,
            MAX_SALES_RANK,
            "sales rank, -1 unknown",
        ),
        "offer_count_new": _int(
            obj.get("offer_count_new", -1), path + "offer_count_new", -1, 100_000, "offer count"
        ),
        "referral_fee_pct": referral,
        "fba_fee": _optional_int(
            obj.get("fba_fee"), path + "fba_fee", 0, MAX_PRICE_MINOR, "fee in minor units"
        ),
        "root_category": _optional_int(
            obj.get("root_category"), path + "root_category", 0, 2**53, "category id"
        ),
        "last_update": None
        if last_update is None
        else _timestamp(last_update, path + "last_update"),
        "signals": check_signals(obj.get("signals"), code),
    }


def _package(obj: Any) -> PackageInfo:
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise _fail("package", "an object with weight_g and dimensions in mm", obj)
    return {
        "weight_g": _optional_int(
            obj.get("weight_g"), "package.weight_g", 0, MAX_WEIGHT_G, "grams"
        ),
        "length_mm": _optional_int(
            obj.get("length_mm"), "package.length_mm", 0, MAX_DIMENSION_MM, "mm"
        ),
        "width_mm": _optional_int(
            obj.get("width_mm"), "package.width_mm", 0, MAX_DIMENSION_MM, "mm"
        ),
        "height_mm": _optional_int(
            obj.get("height_mm"), "package.height_mm", 0, MAX_DIMENSION_MM, "mm"
        ),
    }


def _category(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {"root_id": None, "name": None}
    if not isinstance(obj, dict):
        raise _fail("category", "an object with root_id and name", obj)
    name = obj.get("name")
    return {
        "root_id": _optional_int(obj.get("root_id"), "category.root_id", 0, 2**53, "category id"),
        "name": None if name is None else _str(name, "category.name", 500),
    }


def validate_raw_update(obj: dict[str, Any]) -> RawUpdate:
    """Check a decoded raw update strictly and return it normalised."""
    fast = fast_raw_update(obj) if isinstance(obj, dict) else None
    return fast if fast is not None else _checked_raw_update(obj)


def _checked_raw_update(obj: dict[str, Any]) -> RawUpdate:
    """The careful path: every rule in turn, failing with a sentence that names the field."""
    _schema_version(obj, RAW_UPDATE_SCHEMA_VERSION, "the raw update")
    markets_in = _require(obj, "markets", "")
    if not isinstance(markets_in, dict) or not markets_in:
        raise _fail("markets", "a non-empty object keyed by marketplace code", markets_in)
    markets = {
        _market_code(code, f"markets.{code}"): _market_offer(code, offer)
        for code, offer in markets_in.items()
    }
    prices_in = obj.get("current_prices", {})
    if not isinstance(prices_in, dict):
        raise _fail("current_prices", "an object of marketplace code → price", prices_in)
    current_prices = {
        _market_code(code, f"current_prices.{code}"): _price(price, f"current_prices.{code}")
        for code, price in prices_in.items()
    }
    source = _require(obj, "source", "")
    if source not in SOURCES:
        raise _fail("source", "'keepa' or 'sample'", source)
    update: RawUpdate = {
        "schema_version": RAW_UPDATE_SCHEMA_VERSION,
        "asin": _asin(_require(obj, "asin", "")),
        "title": _str(obj.get("title") or "", "title", MAX_TITLE_CHARS),
        "domain_id": _int(_require(obj, "domain_id", ""), "domain_id", 1, 100, "Keepa domain id"),
        "current_prices": current_prices,
        "markets": markets,
        "package": _package(obj.get("package")),
        "category": _category(obj.get("category")),
        "timestamp": _pull_time(_require(obj, "timestamp", ""), "timestamp"),
        "source": source,
    }
    # Last: a history point must lie before the pull's time, checked above.
    check_market_histories(markets_in, markets, update["timestamp"])  # type: ignore[arg-type]
    return update


def parse_raw_update(raw: bytes | None) -> RawUpdate:
    return validate_raw_update(decode_json_object(raw, "raw update"))


def parse_enriched_product(raw: bytes | None) -> EnrichedProduct:
    """Decode and check the fields the arbitrage stage relies on."""
    obj = decode_json_object(raw, "enriched product")
    _schema_version(obj, ENRICHED_PRODUCT_SCHEMA_VERSION, "the enriched product")
    _asin(_require(obj, "asin", ""))
    _timestamp(_require(obj, "source_timestamp", ""), "source_timestamp")
    _require(obj, "fx_rates_date", "")
    markets = _require(obj, "markets", "")
    if not isinstance(markets, dict) or not markets:
        raise _fail("markets", "a non-empty object keyed by marketplace code", markets)
    for code, market in markets.items():
        _market_code(code, f"markets.{code}")
        path = f"markets.{code}."
        if not isinstance(market, dict):
            raise _fail(path[:-1], "an object", market)
        for name in ("buy_price", "sell_price"):
            value = _require(market, name, path)
            if value is not None:
                _int(
                    value, path + name, 1, MAX_PRICE_MINOR, "positive price in minor units, or null"
                )
        _int(
            _require(market, "fba_fee_resolved", path),
            path + "fba_fee_resolved",
            0,
            MAX_PRICE_MINOR,
            "fee",
        )
        _int(
            _require(market, "sales_rank", path),
            path + "sales_rank",
            -1,
            MAX_SALES_RANK,
            "sales rank",
        )
        _int(
            _require(market, "referral_pct_x100", path),
            path + "referral_pct_x100",
            0,
            10_000,
            "hundredths of a percent",
        )
    _package(obj.get("package"))
    return obj  # type: ignore[return-value]
