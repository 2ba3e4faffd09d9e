"""Fee model v1 on hand-computed cases, and properties that must hold for any product."""

from __future__ import annotations

import dataclasses
import random
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbitrage.domain.fee_config import FeeConfig, load_fee_config
from arbitrage.domain.fee_model import (
    MARKET_CODES,
    detect_alerts,
    evaluate_route,
    evaluate_routes,
    market_matrix,
)
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.types import alert_id
from arbitrage.settings import Settings
from resources.fees import fee_model_resource
from tests.factories import enriched, offer

CONFIG = load_fee_config()
NOW = "2026-11-26T10:00:05.000Z"


def only_route(product, buy: str, sell: str):
    routes = evaluate_routes(market_matrix([product], CONFIG), CONFIG)
    row = routes[(routes.buy_market == buy) & (routes.sell_market == sell)]
    assert len(row) == 1
    return row.iloc[0]


def test_eur_to_eur_by_hand() -> None:
    # Buy DE: lowest of Amazon 49.99 and new 45.00 → 45.00. Sell FR at the buy box 80.00.
    product = enriched(
        CONFIG,
        markets={
            "DE": offer("DE", amazon=4999, new=4500),
            "FR": offer("FR", buy_box=8000, new=7900, referral_fee_pct=15, fba_fee=300),
        },
        weight_g=400,
    )
    route = only_route(product, "DE", "FR")
    assert route.buy_net == 3782  # 4500 / 1.19 = 3781.51
    assert route.sell_net == 6667  # 8000 / 1.20 = 6666.67
    assert route.referral_fee == 1200  # 15 % of 8000
    assert route.fba_fee == 300
    assert route.inbound_shipping == 100  # max(100, 150 × 0.4 = 60)
    assert route.profit_eur_cents == 6667 - 1200 - 300 - 100 - 3782 == 1285
    assert route.qualifies  # roi 1285 / 3782 = 0.34
    (alert,) = detect_alerts([product], CONFIG, NOW)
    assert alert["alert_id"] == alert_id("B000TEST01", "DE", "FR", 4500, 8000)
    assert alert["roi"] == pytest.approx(0.3398, abs=1e-4)
    assert alert["buy_price"] == {"amount": 4500, "currency": "EUR"}


def test_gbp_on_the_sell_side() -> None:
    product = enriched(
        CONFIG,
        markets={
            "DE": offer("DE", new=4500),
            "GB": offer("GB", buy_box=7000, referral_fee_pct=15, fba_fee=250),
        },
    )
    route = only_route(product, "DE", "GB")
    # 7000 p × 1.145 = 8015 EUR cents gross.
    assert route.sell_net == 6679  # 8015 / 1.2 = 6679.17
    assert route.referral_fee == 1202  # 1202.25
    assert route.fba_fee == 286  # 250 × 1.145 = 286.25
    assert route.profit_eur_cents == 6679 - 1202 - 286 - 100 - 3782 == 1309
    (alert,) = detect_alerts([product], CONFIG, NOW)
    assert alert["sell_price"] == {"amount": 7000, "currency": "GBP"}
    assert alert["fx_sell_eur_per_unit"] == "1.145"
    assert alert["fx_buy_eur_per_unit"] == "1"


def test_gbp_on_the_buy_side() -> None:
    product = enriched(
        CONFIG,
        markets={"GB": offer("GB", new=1900), "DE": offer("DE", buy_box=5000, fba_fee=300)},
    )
    route = only_route(product, "GB", "DE")
    assert route.buy_net == 1813  # 1900 × 1.145 / 1.2 = 1812.92
    assert route.sell_net == 4202  # 5000 / 1.19 = 4201.68
    assert route.profit_eur_cents == 4202 - 750 - 300 - 100 - 1813 == 1239


def test_missing_buy_box_sells_at_the_lowest_new_offer() -> None:
    product = enriched(
        CONFIG,
        markets={"DE": offer("DE", new=4500), "IT": offer("IT", buy_box=-1, new=9000)},
    )
    assert product["markets"]["IT"]["sell_price"] == 9000
    route = only_route(product, "DE", "IT")
    assert route.sell_price == 9000
    assert route.sell_net == 7377  # 9000 / 1.22 = 7377.05


def test_missing_fba_fee_uses_the_weight_tier() -> None:
    product = enriched(
        CONFIG,
        markets={"DE": offer("DE", new=4500), "ES": offer("ES", buy_box=9000, fba_fee=None)},
        weight_g=400,
    )
    assert product["markets"]["ES"]["fba_fee_source"] == "weight_tier"
    assert only_route(product, "DE", "ES").fba_fee == 332  # the ≤ 500 g tier


def test_referral_from_the_category_default() -> None:
    product = enriched(
        CONFIG,
        markets={
            "DE": offer("DE", new=4500),
            "FR": offer("FR", buy_box=8000, referral_fee_pct=None, root_category=562066),
        },
    )
    assert product["markets"]["FR"]["referral_pct_source"] == "category_default"
    assert only_route(product, "DE", "FR").referral_fee == 560  # 7 % of 8000


def test_referral_fallback_without_category() -> None:
    product = enriched(
        CONFIG,
        markets={
            "DE": offer("DE", new=4500),
            "FR": offer("FR", buy_box=8000, referral_fee_pct=None),
        },
    )
    assert product["markets"]["FR"]["referral_pct_source"] == "fallback"
    assert only_route(product, "DE", "FR").referral_fee == 1200


def test_half_even_at_half_a_cent() -> None:
    # 100 p × 1.145 = 114.5 → 114 (even); 300 p → 343.5 → 344; 15 % of 1010 = 151.5 → 152.
    product = enriched(
        CONFIG,
        markets={
            "DE": offer("DE", new=500),
            "GB": offer("GB", buy_box=2000, fba_fee=100),
            "FR": offer("FR", buy_box=1010, fba_fee=0),
        },
    )
    assert only_route(product, "DE", "GB").fba_fee == 114
    product["markets"]["GB"]["fba_fee_resolved"] = 300
    assert only_route(product, "DE", "GB").fba_fee == 344
    assert only_route(product, "DE", "FR").referral_fee == 152
    assert evaluate_route(product, "DE", "FR", CONFIG).referral_fee == 152


def test_out_of_stock_market_is_neither_bought_nor_sold() -> None:
    product = enriched(
        CONFIG,
        markets={"DE": offer("DE"), "FR": offer("FR", buy_box=8000)},  # DE: -1 everywhere
    )
    assert product["markets"]["DE"]["buy_price"] is None
    routes = evaluate_routes(market_matrix([product], CONFIG), CONFIG)
    assert routes.empty


def test_thresholds_block_small_or_slow_routes() -> None:
    thin = enriched(CONFIG, markets={"DE": offer("DE", new=4500), "FR": offer("FR", buy_box=6000)})
    assert not only_route(thin, "DE", "FR").qualifies  # profit below 5 €
    slow = enriched(
        CONFIG,
        markets={"DE": offer("DE", new=4500), "FR": offer("FR", buy_box=8000, sales_rank=250_000)},
    )
    assert not only_route(slow, "DE", "FR").qualifies
    unranked = enriched(
        CONFIG,
        markets={"DE": offer("DE", new=4500), "FR": offer("FR", buy_box=8000, sales_rank=-1)},
    )
    assert not only_route(unranked, "DE", "FR").qualifies
    assert detect_alerts([thin, slow, unranked], CONFIG, NOW) == []


# --------------------------------------------------------------------------- properties

PRICE = st.one_of(st.just(-1), st.just(-2), st.integers(1, 500_000))


@st.composite
def products(draw: st.DrawFn):
    codes = draw(
        st.lists(st.sampled_from(sorted(MARKETPLACES)), min_size=1, max_size=5, unique=True)
    )
    markets = {
        code: offer(
            code,
            buy_box=draw(PRICE),
            amazon=draw(PRICE),
            new=draw(PRICE),
            sales_rank=draw(st.integers(-1, 200_000)),
            referral_fee_pct=draw(
                st.one_of(st.none(), st.integers(1, 20), st.sampled_from([8.5, 10.25]))
            ),
            fba_fee=draw(st.one_of(st.none(), st.integers(0, 2000))),
        )
        for code in codes
    }
    weight = draw(st.one_of(st.none(), st.integers(0, 30_000)))
    return enriched(CONFIG, markets=markets, weight_g=weight)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(products())
def test_vectorised_model_equals_the_plain_formulas(product) -> None:
    routes = evaluate_routes(market_matrix([product], CONFIG), CONFIG)
    for route in routes.itertuples():
        reference = evaluate_route(product, route.buy_market, route.sell_market, CONFIG)
        assert reference is not None
        assert (
            route.buy_net,
            route.sell_net,
            route.referral_fee,
            route.fba_fee,
            route.inbound_shipping,
            route.profit_eur_cents,
            bool(route.qualifies),
        ) == (
            reference.buy_net,
            reference.sell_net,
            reference.referral_fee,
            reference.fba_fee,
            reference.inbound_shipping,
            reference.profit_eur_cents,
            reference.qualifies,
        )


def assert_batch_equals_the_plain_formulas(batch: list) -> None:
    """Every route of the batch, through market_matrix + evaluate_routes, is the per-route
    reference to the cent, and the two agree on which routes exist."""
    routes = evaluate_routes(market_matrix(batch, CONFIG), CONFIG)
    got = {
        (route.row, route.buy_market, route.sell_market): (
            route.asin,
            route.buy_price,
            route.sell_price,
            route.buy_net,
            route.sell_net,
            route.referral_fee,
            route.fba_fee,
            route.inbound_shipping,
            route.profit_eur_cents,
            route.sales_rank,
            bool(route.qualifies),
        )
        for route in routes.itertuples()
    }
    expected = {}
    for row, product in enumerate(batch):
        for buy in MARKET_CODES:
            for sell in MARKET_CODES:
                reference = evaluate_route(product, buy, sell, CONFIG)
                if reference is None:
                    continue
                expected[(row, buy, sell)] = (
                    product["asin"],
                    product["markets"][buy]["buy_price"],
                    product["markets"][sell]["sell_price"],
                    reference.buy_net,
                    reference.sell_net,
                    reference.referral_fee,
                    reference.fba_fee,
                    reference.inbound_shipping,
                    reference.profit_eur_cents,
                    product["markets"][sell]["sales_rank"],
                    reference.qualifies,
                )
    assert got == expected


@SETTINGS
@given(st.lists(products(), min_size=1, max_size=30))
def test_a_batch_through_the_matrix_equals_the_plain_formulas(batch) -> None:
    # Rows must not leak into each other: products with different markets side by side.
    for position, product in enumerate(batch):
        product["asin"] = f"B{position:09d}"
    assert_batch_equals_the_plain_formulas(batch)


def test_a_large_mixed_batch_equals_the_plain_formulas() -> None:
    """A seeded batch with every edge at once: markets missing, prices missing (Keepa's -1/-2
    → None), 1-cent and maximal prices, GB (GBP) on either side, unknown and zero weights,
    unranked products, and many routes that lose money."""
    rng = random.Random(20261126)

    def price() -> int:
        return rng.choice([-1, -2, 1, 9_999_999, rng.randint(1, 5_000), rng.randint(1, 200_000)])

    batch = []
    for position in range(1_500):
        codes = rng.sample(sorted(MARKETPLACES), rng.randint(1, 5))
        markets = {
            code: offer(
                code,
                buy_box=price(),
                amazon=price(),
                new=price(),
                sales_rank=rng.choice([-1, 1, rng.randint(1, 400_000)]),
                referral_fee_pct=rng.choice([None, 7, 8.5, 15, 45]),
                fba_fee=rng.choice([None, 0, 250, 9_999]),
            )
            for code in codes
        }
        weight = rng.choice([None, 0, 1, 499, 500, 501, rng.randint(1, 30_000)])
        batch.append(enriched(CONFIG, asin=f"B{position:09d}", markets=markets, weight_g=weight))
    assert_batch_equals_the_plain_formulas(batch)


@SETTINGS
@given(products(), st.integers(1, 5000), st.integers(1, 2000))
def test_profit_never_rises_when_a_fee_rises(
    product, fba_increase: int, referral_increase: int
) -> None:
    base = {
        (r.buy_market, r.sell_market): r.profit_eur_cents
        for r in evaluate_routes(market_matrix([product], CONFIG), CONFIG).itertuples()
    }
    for market in product["markets"].values():
        market["fba_fee_resolved"] += fba_increase
        market["referral_pct_x100"] = min(10_000, market["referral_pct_x100"] + referral_increase)
    dearer = evaluate_routes(market_matrix([product], CONFIG), CONFIG)
    for route in dearer.itertuples():
        assert route.profit_eur_cents <= base[(route.buy_market, route.sell_market)]


@SETTINGS
@given(products(), st.integers(0, 1000))
def test_profit_never_rises_with_inbound_or_vat(product, per_kg: int) -> None:
    pricier = dataclasses.replace(
        CONFIG,
        inbound_per_kg_eur_cents=CONFIG.inbound_per_kg_eur_cents + per_kg,
        vat_pct={code: pct + 1 for code, pct in CONFIG.vat_pct.items()},
    )
    before = evaluate_routes(market_matrix([product], CONFIG), CONFIG)
    after = evaluate_routes(market_matrix([product], pricier), pricier)
    # A higher sell-side VAT lowers sell_net, but a higher buy-side VAT lowers buy_net too, so
    # compare the fee lines each on their own: each may only move against the seller.
    assert (after.inbound_shipping >= before.inbound_shipping).all()
    assert (after.sell_net <= before.sell_net).all()


@SETTINGS
@given(st.lists(products(), min_size=1, max_size=5))
def test_alerts_are_integer_money_and_never_same_market(batch) -> None:
    for position, product in enumerate(batch):
        product["asin"] = f"B{position:09d}"
    for alert in detect_alerts(batch, CONFIG, NOW):
        assert alert["buy_market"] != alert["sell_market"]
        for name in (
            "buy_net",
            "sell_net",
            "referral_fee",
            "fba_fee",
            "inbound_shipping",
            "profit_eur_cents",
        ):
            assert type(alert[name]) is int
        assert type(alert["buy_price"]["amount"]) is int
        assert alert["profit_eur_cents"] >= CONFIG.min_profit_eur_cents
        assert Fraction(alert["profit_eur_cents"], alert["buy_net"]) >= CONFIG.min_roi


def test_fees_file_from_the_environment(tmp_path, monkeypatch) -> None:
    text = Path(CONFIG.path).read_text()
    custom = tmp_path / "fees.toml"
    custom.write_text(text.replace("min_profit_eur_cents = 500", "min_profit_eur_cents = 5000"))
    monkeypatch.setenv("ARBITRAGE_FEES_FILE", str(custom))
    # The setting reaches the stages through the fee model resource the definitions wire.
    strict: FeeConfig = fee_model_resource(Settings.from_env()).load()
    assert strict.min_profit_eur_cents == 5000
    assert strict.path == str(custom)
