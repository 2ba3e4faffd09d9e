"""The one module that owns every message schema on the pipeline's topics.

Messages are JSON objects in UTF-8 and each carries ``schema_version``. Parsing is strict:
``parse_raw_update`` / ``parse_enriched_product`` return the validated dict or raise
``SchemaError`` whose message is a sentence a person can act on (it names the field, what was
expected and what arrived). Money is always an integer in minor units (cents, pence).
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from pipelines.markets import MARKETPLACES

RAW_UPDATE_SCHEMA_VERSION = 1
ENRICHED_PRODUCT_SCHEMA_VERSION = 1
ALERT_SCHEMA_VERSION = 1
DLQ_SCHEMA_VERSION = 1

# A raw update for five markets is ~2 KiB; anything far beyond is not a product message.
MAX_MESSAGE_BYTES = 256 * 1024
MAX_TITLE_CHARS = 2000
# Prices above this (10 million in minor units, e.g. EUR 100 000) are data errors, not offers.
MAX_PRICE_MINOR = 10_000_000
MAX_SALES_RANK = 100_000_000
MAX_WEIGHT_G = 1_000_000
MAX_DIMENSION_MM = 10_000

PRICE_NONE = -1  # Keepa: no offer
PRICE_NOT_SET = -2  # Keepa: value not set / not tracked

ASIN_PATTERN = re.compile(r"^[A-Z0-9]{10}$")
SOURCES = ("keepa", "sample")


class SchemaError(ValueError):
    """A message does not match its schema; the text says what to fix."""


# --------------------------------------------------------------------------- typed shapes


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


class DlqEnvelope(TypedDict):
    schema_version: int
    source_topic: str
    partition: int
    offset: int
    key: str | None
    value: str  # original bytes, base64
    value_bytes: int
    stage: str
    error: str
    failed_at: str


# --------------------------------------------------------------------------- time helpers


def utc_now_iso() -> str:
    return format_utc(datetime.now(UTC))


def format_utc(moment: datetime) -> str:
    """ISO-8601 UTC with millisecond precision and a ``Z`` suffix."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def parse_utc(text: str) -> datetime:
    """Parse an ISO-8601 timestamp that must carry a UTC offset (``Z`` or ``+00:00``)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None or moment.utcoffset() != UTC.utcoffset(None):
        raise ValueError("not UTC")
    return moment


def epoch_ms(text: str) -> int:
    return int(parse_utc(text).timestamp() * 1000)


# --------------------------------------------------------------------------- field checks


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


def decode_json_object(raw: bytes | None, kind: str) -> dict[str, Any]:
    """Bytes off a topic → a JSON object, with size and syntax checks."""
    if raw is None:
        raise SchemaError(
            f"the {kind} message has no value (a tombstone); producers must send JSON"
        )
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SchemaError(
            f"the {kind} message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES} bytes, "
            "so it was not parsed"
        )
    try:
        # orjson reads UTF-8 only (never UTF-16/32) and is several times faster than json,
        # which matters: decoding is a large share of a stage's CPU.
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SchemaError(f"the {kind} message is not UTF-8 text") from None
        raise SchemaError(
            f"the {kind} message is not valid JSON ({exc.msg} at character {exc.pos})"
        ) from None
    if not isinstance(obj, dict):
        raise SchemaError(
            f"the {kind} message must be a JSON object, but it is a {type(obj).__name__}"
        )
    return obj


# --------------------------------------------------------------------------- raw update


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


# --------------------------------------------------------------------------- raw update, fast path
#
# Nearly every message is valid. ``_fast_raw_update`` applies the same rules as the checks above
# in one pass of inline tests (some stricter, never looser) and gives up with None at the first
# doubt; ``validate_raw_update`` then runs the careful checks, which name the problem. Either way
# the result is the same; the fast path only skips ~60 helper calls and path strings per
# message, which profiling showed to be a third of the enrichment stage's CPU.


def _is_utc_timestamp(text: str) -> bool:
    # Only short strings are cached, so junk in a poison message cannot grow the cache; a long
    # one just takes the careful path.
    return len(text) <= 40 and _parses_as_utc(text)


@lru_cache(maxsize=65_536)
def _parses_as_utc(text: str) -> bool:
    # Pull times and Keepa's minute-resolution last_update values repeat across messages.
    try:
        parse_utc(text)
    except ValueError:
        return False
    return True


def _is_price(value: Any) -> bool:
    return type(value) is int and PRICE_NOT_SET <= value <= MAX_PRICE_MINOR


def _is_optional_int(value: Any, low: int, high: int) -> bool:
    return value is None or (type(value) is int and low <= value <= high)


_OFFER_FIELDS = itemgetter(
    "domain_id",
    "currency",
    "buy_box",
    "amazon",
    "new",
    "sales_rank",
    "offer_count_new",
    "referral_fee_pct",
    "fba_fee",
    "root_category",
    "last_update",
)


def _fast_market_offer(code: str, obj: Any) -> MarketOffer | None:
    # The checks are written out inline (no helper calls): this runs 5 times per message.
    if not isinstance(obj, dict):
        return None
    market = MARKETPLACES[code]
    try:
        # Producers write every field; a message that leaves optional ones out (allowed, with
        # defaults) takes the careful path.
        (
            domain_id,
            currency,
            buy_box,
            amazon,
            new,
            sales_rank,
            offer_count,
            referral,
            fba_fee,
            root_category,
            last_update,
        ) = _OFFER_FIELDS(obj)
    except KeyError:
        return None
    valid = (
        type(domain_id) is int
        and domain_id == market.keepa_domain_id
        and currency == market.currency
        and type(buy_box) is int
        and PRICE_NOT_SET <= buy_box <= MAX_PRICE_MINOR
        and type(amazon) is int
        and PRICE_NOT_SET <= amazon <= MAX_PRICE_MINOR
        and type(new) is int
        and PRICE_NOT_SET <= new <= MAX_PRICE_MINOR
        and type(sales_rank) is int
        and -1 <= sales_rank <= MAX_SALES_RANK
        and type(offer_count) is int
        and -1 <= offer_count <= 100_000
        and (referral is None or (type(referral) in (int, float) and 0 <= referral <= 100))
        and (fba_fee is None or (type(fba_fee) is int and 0 <= fba_fee <= MAX_PRICE_MINOR))
        and (root_category is None or (type(root_category) is int and 0 <= root_category <= 2**53))
        and (last_update is None or (type(last_update) is str and _is_utc_timestamp(last_update)))
    )
    if not valid:
        return None
    return {
        "domain_id": domain_id,
        "currency": currency,
        "buy_box": buy_box,
        "amazon": amazon,
        "new": new,
        "sales_rank": sales_rank,
        "offer_count_new": offer_count,
        "referral_fee_pct": referral,
        "fba_fee": fba_fee,
        "root_category": root_category,
        "last_update": last_update,
    }


def _fast_raw_update(obj: dict[str, Any]) -> RawUpdate | None:
    get = obj.get
    markets_in = get("markets")
    prices_in = get("current_prices", {})
    package = get("package")
    category = get("category")
    title = get("title") or ""
    asin, domain_id, timestamp, source = (
        get("asin"),
        get("domain_id"),
        get("timestamp"),
        get("source"),
    )
    if (
        "schema_version" not in obj
        or obj["schema_version"] != RAW_UPDATE_SCHEMA_VERSION
        or not isinstance(markets_in, dict)
        or not markets_in
        or not isinstance(prices_in, dict)
        or source not in SOURCES
        or not isinstance(asin, str)
        or not ASIN_PATTERN.match(asin)
        or not isinstance(title, str)
        or len(title) > MAX_TITLE_CHARS
        or type(domain_id) is not int
        or not 1 <= domain_id <= 100
        or type(timestamp) is not str
        or not _is_utc_timestamp(timestamp)
    ):
        return None
    markets: dict[str, MarketOffer] = {}
    for code, offer in markets_in.items():
        if code not in MARKETPLACES:
            return None
        checked = _fast_market_offer(code, offer)
        if checked is None:
            return None
        markets[code] = checked
    for code, price in prices_in.items():
        if code not in MARKETPLACES or not _is_price(price):
            return None
    if package is None:
        package = {}
    elif not isinstance(package, dict):
        return None
    weight, length = package.get("weight_g"), package.get("length_mm")
    width, height = package.get("width_mm"), package.get("height_mm")
    if not (
        _is_optional_int(weight, 0, MAX_WEIGHT_G)
        and _is_optional_int(length, 0, MAX_DIMENSION_MM)
        and _is_optional_int(width, 0, MAX_DIMENSION_MM)
        and _is_optional_int(height, 0, MAX_DIMENSION_MM)
    ):
        return None
    if category is None:
        category_out: dict[str, Any] = {"root_id": None, "name": None}
    elif isinstance(category, dict):
        root_id, name = category.get("root_id"), category.get("name")
        if not _is_optional_int(root_id, 0, 2**53) or not (
            name is None or (isinstance(name, str) and len(name) <= 500)
        ):
            return None
        category_out = {"root_id": root_id, "name": name}
    else:
        return None
    return {
        "schema_version": RAW_UPDATE_SCHEMA_VERSION,
        "asin": asin,
        "title": title,
        "domain_id": domain_id,
        "current_prices": dict(prices_in),
        "markets": markets,
        "package": {
            "weight_g": weight,
            "length_mm": length,
            "width_mm": width,
            "height_mm": height,
        },
        "category": category_out,
        "timestamp": timestamp,
        "source": source,
    }


def validate_raw_update(obj: dict[str, Any]) -> RawUpdate:
    """Check a decoded raw update strictly and return it normalised."""
    fast = _fast_raw_update(obj) if isinstance(obj, dict) else None
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
    return {
        "schema_version": RAW_UPDATE_SCHEMA_VERSION,
        "asin": _asin(_require(obj, "asin", "")),
        "title": _str(obj.get("title") or "", "title", MAX_TITLE_CHARS),
        "domain_id": _int(_require(obj, "domain_id", ""), "domain_id", 1, 100, "Keepa domain id"),
        "current_prices": current_prices,
        "markets": markets,
        "package": _package(obj.get("package")),
        "category": _category(obj.get("category")),
        "timestamp": _timestamp(_require(obj, "timestamp", ""), "timestamp"),
        "source": source,
    }


def parse_raw_update(raw: bytes | None) -> RawUpdate:
    return validate_raw_update(decode_json_object(raw, "raw update"))


# --------------------------------------------------------------------------- enriched product


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


# --------------------------------------------------------------------------- alert id


def alert_id(asin: str, buy_market: str, sell_market: str, buy_price: int, sell_price: int) -> str:
    """Stable id of one opportunity: the same prices on the same route are the same alert."""
    text = f"{asin}|{buy_market}|{sell_market}|{buy_price}|{sell_price}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- DLQ


def dlq_envelope(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    stage: str,
    error: str,
    failed_at: str | None = None,
) -> DlqEnvelope:
    raw = value or b""
    return {
        "schema_version": DLQ_SCHEMA_VERSION,
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key": None if key is None else key.decode("utf-8", errors="replace"),
        "value": base64.b64encode(raw).decode("ascii"),
        "value_bytes": len(raw),
        "stage": stage,
        "error": error,
        "failed_at": failed_at or utc_now_iso(),
    }


def encode(message: dict[str, Any]) -> bytes:
    """Serialise compactly; keys keep insertion order, so equal messages are equal bytes."""
    return orjson.dumps(message)
