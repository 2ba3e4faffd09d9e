"""The fee model written plainly for one (product, buy market, sell market) with
``Fraction``s, as the formulas read: tests hold the vectorised evaluation equal to it and the
benchmark uses it as the per-row baseline."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from arbitrage.domain.fee_config import FeeConfig, FeesV2
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.types import (
    EnrichedProduct,
)
from arbitrage.domain.money import round_fraction


@dataclass(frozen=True)
class RouteFees:
    buy_net: int
    sell_net: int
    referral_fee: int
    fba_fee: int
    inbound_shipping: int
    profit_eur_cents: int
    qualifies: bool
    # v2 only (0 under v1)
    closing_fee: int = 0
    efn_fee: int = 0
    dst_fee: int = 0
    fee_vat: int = 0


def evaluate_route(
    product: EnrichedProduct, buy_market: str, sell_market: str, config: FeeConfig
) -> RouteFees | None:
    """The fee model for one route, written as the formulas read; None if not buyable/sellable."""
    if buy_market == sell_market:
        return None
    buy_side = product["markets"].get(buy_market)
    sell_side = product["markets"].get(sell_market)
    if (
        buy_side is None
        or sell_side is None
        or not buy_side["buy_price"]
        or not sell_side["sell_price"]
    ):
        return None
    if config.v2 is not None:
        return _evaluate_route_v2(product, buy_market, sell_market, config, config.v2)
    fx_buy = config.fx(MARKETPLACES[buy_market].currency)
    fx_sell = config.fx(MARKETPLACES[sell_market].currency)
    sell_eur = sell_side["sell_price"] * fx_sell
    buy_net = round_fraction(
        buy_side["buy_price"] * fx_buy / (1 + config.vat_pct[buy_market] / 100)
    )
    sell_net = round_fraction(sell_eur / (1 + config.vat_pct[sell_market] / 100))
    referral_fee = round_fraction(sell_eur * Fraction(sell_side["referral_pct_x100"], 100) / 100)
    fba_fee = round_fraction(sell_side["fba_fee_resolved"] * fx_sell)
    weight_g = product["package"]["weight_g"]
    weight_kg = Fraction(config.default_weight_g if weight_g is None else weight_g, 1000)
    inbound = max(
        config.inbound_min_eur_cents, round_fraction(config.inbound_per_kg_eur_cents * weight_kg)
    )
    profit = sell_net - referral_fee - fba_fee - inbound - buy_net
    rank = sell_side["sales_rank"]
    ok = (
        buy_net > 0
        and profit >= config.min_profit_eur_cents
        and Fraction(profit, buy_net) >= config.min_roi
        and 0 < rank <= config.max_sales_rank
    )
    return RouteFees(buy_net, sell_net, referral_fee, fba_fee, inbound, profit, ok)


def _evaluate_route_v2(
    product: EnrichedProduct, buy_market: str, sell_market: str, config: FeeConfig, v2: FeesV2
) -> RouteFees:
    """Fee model v2 for one route, as docs/fees.md's rules read (the caller checked prices)."""
    buy_side, sell_side = product["markets"][buy_market], product["markets"][sell_market]
    fx_buy = config.fx(MARKETPLACES[buy_market].currency)
    fx_sell = config.fx(MARKETPLACES[sell_market].currency)
    buy, sell = buy_side["buy_price"] or 0, sell_side["sell_price"] or 0
    buy_net = round_fraction(buy * fx_buy / (1 + config.vat_pct[buy_market] / 100))
    sell_net = round_fraction(sell * fx_sell / (1 + config.vat_pct[sell_market] / 100))
    # Referral (sell currency): the category's schedule, else the enriched flat percentage;
    # never below the per-item minimum. Closing fee where the category has one.
    key = v2.category_key(
        sell_market, sell_side["root_category"], product["category"].get("root_id")
    )
    index = v2.schedule_for(key)
    if index < 0:
        referral = Fraction(sell_side["referral_pct_x100"], 10_000) * sell
        minimum, closing = v2.referral_min_fee_minor[sell_market], 0
    else:
        schedule = v2.schedules[index]
        rates = [Fraction(p, 10_000) for p in schedule.pct_x100]
        bounds = schedule.up_to_minor[sell_market]
        if schedule.basis == "total":
            band = sum(1 for bound in bounds if sell > bound)
            referral = rates[band] * sell
        else:
            lows, highs = (0, *bounds), (*bounds, None)
            referral = sum(
                (
                    rate * max(0, (sell if high is None else min(sell, high)) - low)
                    for rate, low, high in zip(rates, lows, highs, strict=True)
                ),
                Fraction(0),
            )
        minimum = schedule.min_fee_minor[sell_market]
        closing = schedule.closing_fee_minor[sell_market]
    referral = max(referral, Fraction(minimum))
    # Fulfilment: Pan-European → the sell market's local fee; EFN → the buy market's local fee
    # plus the surcharge of the product's size tier to the sell market.
    if v2.fulfilment == "efn":
        fba_eur = buy_side["fba_fee_resolved"] * fx_buy
        package = product["package"]
        weight = package["weight_g"]
        tier = v2.size_tier(
            config.default_weight_g if weight is None else weight,
            (package["length_mm"], package["width_mm"], package["height_mm"]),
        )
        efn_eur = v2.efn_surcharge_minor[sell_market][tier] * fx_sell
    else:
        fba_eur = sell_side["fba_fee_resolved"] * fx_sell
        efn_eur = Fraction(0)
    selling_eur = (referral + closing) * fx_sell
    fulfilment_eur = fba_eur + efn_eur
    at_ms = product["source_timestamp_ms"]
    dst_selling = Fraction(v2.dst_pct_x100(sell_market, "selling", at_ms), 10_000)
    dst_fba = Fraction(v2.dst_pct_x100(sell_market, "fba", at_ms), 10_000)
    dst_eur = selling_eur * dst_selling + fulfilment_eur * dst_fba
    vat = Fraction(0) if v2.vat_registered else v2.seller_vat_pct / 100
    fee_vat = round_fraction((selling_eur + fulfilment_eur + dst_eur) * vat)
    weight_g = product["package"]["weight_g"]
    weight_kg = Fraction(config.default_weight_g if weight_g is None else weight_g, 1000)
    inbound = max(
        config.inbound_min_eur_cents, round_fraction(config.inbound_per_kg_eur_cents * weight_kg)
    )
    lines = {
        "referral_fee": round_fraction(referral * fx_sell),
        "closing_fee": round_fraction(closing * fx_sell),
        "fba_fee": round_fraction(fba_eur),
        "efn_fee": round_fraction(efn_eur),
        "dst_fee": round_fraction(dst_eur),
        "fee_vat": fee_vat,
    }
    profit = sell_net - sum(lines.values()) - inbound - buy_net
    rank = sell_side["sales_rank"]
    ok = (
        buy_net > 0
        and profit >= config.min_profit_eur_cents
        and Fraction(profit, buy_net) >= config.min_roi
        and 0 < rank <= config.max_sales_rank
    )
    return RouteFees(
        buy_net=buy_net,
        sell_net=sell_net,
        inbound_shipping=inbound,
        profit_eur_cents=profit,
        qualifies=ok,
        **lines,
    )
