"""Raw update → enriched product: buy/sell prices, EUR conversion, resolved fee inputs, spread."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.messages.timestamps import epoch_ms
from arbitrage.domain.messages.types import (
    ENRICHED_PRODUCT_SCHEMA_VERSION,
    EnrichedMarket,
    EnrichedProduct,
    MarketOffer,
    RawUpdate,
)
from arbitrage.domain.money import convert_to_eur_cents, round_fraction
from arbitrage.domain.price_history import MarketPrices, PriceObservation, observation_id


def buy_price(offer: MarketOffer) -> int | None:
    """The lowest positive of Amazon's own and the lowest new offer; None if neither.

    docs/fees.md, "Fee model v1".
    """
    amazon, new = offer["amazon"], offer["new"]
    if amazon > 0:
        return min(amazon, new) if new > 0 else amazon
    return new if new > 0 else None


def sell_price(offer: MarketOffer) -> int | None:
    """The buy box price including shipping, else the lowest new offer; None if neither."""
    if offer["buy_box"] > 0:
        return offer["buy_box"]
    if offer["new"] > 0:
        return offer["new"]
    return None


def resolve_referral_pct_x100(
    offer: MarketOffer,
    product_root_category: int | None,
    config: FeeConfig,
    market: str | None = None,
) -> tuple[int, str]:
    """Keepa's referral % for the market when positive, else the category default (of the
    market's root category, else the product's), else fallback."""
    pct = offer["referral_fee_pct"]
    if pct is not None and pct > 0:
        return _pct_x100(pct), "product"
    return config.referral_default_pct_x100(offer["root_category"], product_root_category, market)


def resolve_fba_fee(offer: MarketOffer, weight_g: int | None, config: FeeConfig) -> tuple[int, str]:
    """Keepa's pick & pack fee when present (≥ 0), else the configured weight-tier estimate."""
    if offer["fba_fee"] is not None and offer["fba_fee"] >= 0:
        return offer["fba_fee"], "keepa"
    return config.fba_tier_fee(weight_g, offer["currency"]), "weight_tier"


@lru_cache(maxsize=4096)
def _pct_x100(pct: float) -> int:
    # Keepa sends a handful of distinct percentages; parsing each one once saves a Fraction
    # per market per record. Equal int/float keys (15 and 15.0) give the same result.
    return round_fraction(Fraction(str(pct)) * 100)


@dataclass(frozen=True)
class _MarketRates:
    """What enrichment needs of the fee config for one market, computed once per config."""

    fx: Fraction
    fx_text: str
    vat_pct_x100: int


# id(config) → (config, {(market, currency): rates}); the config is kept so an id reused by a
# later object can never match. A handful of configs at most live in one process.
_RATES: dict[int, tuple[FeeConfig, dict[tuple[str, str], _MarketRates]]] = {}


def _market_rates(code: str, currency: str, config: FeeConfig) -> _MarketRates:
    entry = _RATES.get(id(config))
    if entry is None or entry[0] is not config:
        if len(_RATES) >= 16:
            _RATES.clear()
        entry = _RATES[id(config)] = (config, {})
    rates = entry[1].get((code, currency))
    if rates is None:
        fx = config.fx(currency)
        rates = _MarketRates(fx, _decimal_text(fx), round_fraction(config.vat_pct[code] * 100))
        entry[1][(code, currency)] = rates
    return rates


def enrich_market(
    code: str, offer: MarketOffer, raw: RawUpdate, config: FeeConfig
) -> EnrichedMarket:
    rates = _market_rates(code, offer["currency"], config)
    fx = rates.fx
    buy = buy_price(offer)
    sell = sell_price(offer)
    referral_x100, referral_source = resolve_referral_pct_x100(
        offer, raw["category"]["root_id"], config, code
    )
    fba_fee, fba_source = resolve_fba_fee(offer, raw["package"]["weight_g"], config)
    if "history" in offer:
        # Keepa's history becomes price observations (history_observations), never part of
        # the enriched product: it is large, and products.enriched stays as it was.
        offer = {key: value for key, value in offer.items() if key != "history"}  # type: ignore[assignment]
    return {
        **offer,
        "buy_price": buy,
        "sell_price": sell,
        "buy_price_eur_cents": None if buy is None else convert_to_eur_cents(buy, fx),
        "sell_price_eur_cents": None if sell is None else convert_to_eur_cents(sell, fx),
        "vat_pct_x100": rates.vat_pct_x100,
        "fx_eur_per_unit": rates.fx_text,
        "referral_pct_x100": referral_x100,
        "referral_pct_source": referral_source,  # type: ignore[typeddict-item]
        "fba_fee_resolved": fba_fee,
        "fba_fee_source": fba_source,  # type: ignore[typeddict-item]
    }


def enrich(raw: RawUpdate, config: FeeConfig) -> EnrichedProduct:
    """Deterministic: the same raw update and config always give the same enriched product."""
    markets = {
        code: enrich_market(code, offer, raw, config)
        for code, offer in sorted(raw["markets"].items())
    }
    # Ties go to the alphabetically first market (markets are sorted), so the result is stable.
    cheapest: tuple[int, str] | None = None
    dearest: tuple[int, str] | None = None
    for code, market in markets.items():
        buy_eur, sell_eur = market["buy_price_eur_cents"], market["sell_price_eur_cents"]
        if buy_eur is not None and (cheapest is None or buy_eur < cheapest[0]):
            cheapest = (buy_eur, code)
        if sell_eur is not None and (dearest is None or sell_eur > dearest[0]):
            dearest = (sell_eur, code)
    return {
        "schema_version": ENRICHED_PRODUCT_SCHEMA_VERSION,
        "asin": raw["asin"],
        "title": raw["title"],
        "domain_id": raw["domain_id"],
        "category": raw["category"],
        "package": raw["package"],
        "markets": markets,
        "cheapest_market": cheapest[1] if cheapest else None,
        "dearest_market": dearest[1] if dearest else None,
        "spread_eur_cents": dearest[0] - cheapest[0] if cheapest and dearest else None,
        "fx_rates_date": config.fx_date,
        "source": raw["source"],
        "source_timestamp": raw["timestamp"],
        "source_timestamp_ms": _epoch_ms(raw["timestamp"]),
    }


def history_observations(raw: RawUpdate, config: FeeConfig) -> list[tuple[str, PriceObservation]]:
    """Keepa's price history of a raw update as price observations: one (id, document) per
    time any market has a point, holding the markets with a price at that time, oldest first.

    EUR amounts use the same rates as the product (the pull's fee config): history in EUR at
    today's rate, not the rate of its day. Empty when no market carries a history.
    """
    if not any("history" in offer for offer in raw["markets"].values()):
        return []  # nearly every message: the pull did not ask for history
    by_time: dict[int, dict[str, MarketPrices]] = {}
    for code, offer in sorted(raw["markets"].items()):
        points = offer.get("history")
        if not points:
            continue
        currency = offer["currency"]
        fx = _market_rates(code, currency, config).fx
        for at, buy, sell in points:
            if buy is None and sell is None:
                continue  # no offer at all: nothing to draw (observation() skips it too)
            by_time.setdefault(at, {})[code] = {
                "currency": currency,
                "buy_price": buy,
                "sell_price": sell,
                "buy_price_eur_cents": None if buy is None else convert_to_eur_cents(buy, fx),
                "sell_price_eur_cents": None if sell is None else convert_to_eur_cents(sell, fx),
            }
    asin = raw["asin"]
    return [
        (observation_id(asin, at), {"asin": asin, "observed_at": at, "markets": markets})
        for at, markets in sorted(by_time.items())
    ]


@lru_cache(maxsize=4096)
def _epoch_ms(timestamp: str) -> int:
    # One pull stamps all its updates with the same time; parse each distinct one once.
    return epoch_ms(timestamp)


def _decimal_text(value: Fraction) -> str:
    """An exact decimal rendering of a rate read from the config (which has ≤ 6 places)."""
    scaled = value * 10**6
    if scaled.denominator != 1:
        return str(value)
    text = f"{scaled.numerator // 10**6}.{scaled.numerator % 10**6:06d}".rstrip("0")
    return text.rstrip(".") if text.endswith(".") else text
