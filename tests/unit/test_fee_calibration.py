"""The fee model checked against Amazon's estimate (``arbitrage fees calibrate``'s core): a
stand-in Amazon that charges what the model charges except where a test plants a difference;
the report finds each planted difference, its size and the ASIN behind it."""

from __future__ import annotations

import dataclasses
import json

from arbitrage.clients.sp_api import SpApiCredentials, SpApiFeesClient
from arbitrage.domain.fee_calibration import (
    LINES,
    Route,
    all_estimates,
    best_route,
    calibrate,
    estimates_for,
)
from arbitrage.domain.fee_config import REPO_ROOT, FeeConfig, load_fee_config
from arbitrage.domain.fee_model import evaluate_route
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.money import round_half_even
from arbitrage.domain.sp_api_fees import FBA_CORE, FBA_EFN
from tests.factories import enriched, offer
from tests.sp_api_server import BookEntry, SpApiStandIn

V2 = load_fee_config(REPO_ROOT / "config" / "fees_v2.toml")
V1 = load_fee_config(REPO_ROOT / "config" / "fees_v1.toml")
assert V2.v2 is not None
# Seller established in DE, EFN, VAT-registered (config/fees_v2.toml); a sale on 2026-11-26:
# DST 3 % on selling and FBA fees in the France store, 2 % in the UK store, none in Germany.
DST_PCT_X100 = {"DE": (0, 0), "FR": (300, 300), "GB": (200, 200)}
PLANTED_EFN = "B0CALIB003"
PLANTED_REFERRAL = "B0CALIB007"


def _product(n: int) -> dict:
    return enriched(
        V2,
        asin=f"B0CALIB{n:03d}",
        markets={
            "DE": offer("DE", new=4500 + 37 * n, fba_fee=280 + n),
            "FR": offer("FR", buy_box=8000 + 53 * n, referral_fee_pct=15, fba_fee=300),
            "GB": offer("GB", buy_box=6900 + 41 * n, referral_fee_pct=12, fba_fee=250),
        },
        weight_g=300 + 100 * n,
    )


def _book(routes: list[Route], config: FeeConfig) -> dict[tuple[str, str, str], BookEntry]:
    """Amazon charging what the model charges, in each store's currency, minor units."""
    assert config.v2 is not None
    book: dict[tuple[str, str, str], BookEntry] = {}
    for route in routes:
        product, buy, sell = route.product, route.buy_market, route.sell_market
        package = product["package"]
        tier = config.v2.size_tier(
            package["weight_g"], (package["length_mm"], package["width_mm"], package["height_mm"])
        )
        sell_side, buy_side = product["markets"][sell], product["markets"][buy]
        selling, fba = DST_PCT_X100[sell]
        rates = BookEntry(
            referral_pct_x100=sell_side["referral_pct_x100"],
            referral_min_minor=config.v2.referral_min_fee_minor[sell],
            dst_selling_pct_x100=selling,
            dst_fba_pct_x100=fba,
        )
        local = buy_side["fba_fee_resolved"]  # EUR: the buy store is DE
        to_sell_currency = 1 / config.fx(MARKETPLACES[sell].currency)
        efn = round(local * to_sell_currency) + config.v2.efn_surcharge_minor[sell][tier]
        book[(route.asin, buy, FBA_CORE)] = dataclasses.replace(
            rates, fulfilment_minor=local, dst_selling_pct_x100=0, dst_fba_pct_x100=0
        )
        book[(route.asin, sell, FBA_CORE)] = dataclasses.replace(
            rates, fulfilment_minor=sell_side["fba_fee_resolved"]
        )
        book[(route.asin, sell, FBA_EFN)] = dataclasses.replace(rates, fulfilment_minor=efn)
    return book


def _run(routes: list[Route], book: dict, config: FeeConfig = V2) -> dict:
    with SpApiStandIn(book, rate=1000, advertised_rate=100) as server:
        credentials = SpApiCredentials(server.client_id, server.client_secret, server.refresh_token)
        with SpApiFeesClient(credentials, server.url, server.lwa_url) as client:
            answers = client.estimate(all_estimates(routes, config))
    report = calibrate(routes, answers, config).as_dict()
    json.dumps(report)  # the report is written as JSON
    return report


def _line(report: dict, name: str) -> dict:
    return next(line for line in report["lines"] if line["line"] == name)


def test_each_planted_difference_is_found_with_its_size_and_asin() -> None:
    products = [_product(n) for n in range(10)]
    routes = [Route(p, "DE", "GB" if n % 4 == 1 else "FR") for n, p in enumerate(products)]
    book = _book(routes, V2)
    # Amazon's EFN fee for one product is 0.45 above the model's; its referral for another
    # store is 16 % where the model took Keepa's 15 %.
    efn_key = (PLANTED_EFN, "FR", FBA_EFN)
    book[efn_key] = dataclasses.replace(
        book[efn_key], fulfilment_minor=book[efn_key].fulfilment_minor + 45
    )
    for program in (FBA_CORE, FBA_EFN):
        key = (PLANTED_REFERRAL, "FR", program)
        book[key] = dataclasses.replace(book[key], referral_pct_x100=1600)
    report = _run(routes, book)
    assert (report["routes_asked"], report["routes_compared"]) == (10, 10)
    assert [line["line"] for line in report["lines"]] == list(LINES)
    efn = _line(report, "efn_fee")
    assert efn["worst_difference"] == -45  # the model charges 0.45 less than Amazon
    assert efn["worst"][0]["asin"] == PLANTED_EFN
    # The others are exact, but for a cent where Amazon's UK fee was the local one in pounds.
    assert all(abs(w["difference"]) <= 1 and w["route"] == "DE→GB" for w in efn["worst"][1:])
    assert efn["exact"] >= 7
    referral = _line(report, "referral_fee")
    sell_price = products[7]["markets"]["FR"]["sell_price"]
    model, amazon = (round_half_even(sell_price * pct, 10_000) for pct in (1500, 1600))
    assert referral["worst_difference"] == model - amazon  # 1 % of the price, each rounded
    assert referral["worst"][0]["asin"] == PLANTED_REFERRAL
    assert referral["worst"][0]["route"] == "DE→FR"
    # Everywhere else the two agree to within a cent of rounding (Amazon rounds each fee,
    # the model once; GBP amounts cross the FX rate).
    for name in ("closing_fee", "fba_fee", "fee_vat"):
        assert abs(_line(report, name)["worst_difference"]) <= 1, name
    total = _line(report, "total")
    assert {w["asin"] for w in total["worst"][:2]} == {PLANTED_EFN, PLANTED_REFERRAL}
    assert total["by_store"]["GB"]["compared"] == 3


def test_estimates_asked_follow_the_fulfilment_the_fee_file_names() -> None:
    product = _product(1)
    efn = estimates_for(Route(product, "DE", "FR"), V2)
    assert [(r.market, r.program) for r in efn] == [
        ("FR", FBA_CORE),
        ("FR", FBA_EFN),
        ("DE", FBA_CORE),
    ]
    assert efn[2].price_minor == product["markets"]["DE"]["buy_price"]
    pan_eu = dataclasses.replace(V2, v2=dataclasses.replace(V2.v2, fulfilment="pan_eu"))
    assert [(r.market, r.program) for r in estimates_for(Route(product, "DE", "FR"), pan_eu)] == [
        ("FR", FBA_CORE)
    ]
    assert len(estimates_for(Route(product, "DE", "FR"), V1)) == 1


def test_routes_amazon_cannot_estimate_are_listed_with_the_reason() -> None:
    products = [_product(n) for n in range(3)]
    routes = [Route(p, "DE", "FR") for p in products]
    book = _book(routes, V2)
    del book[("B0CALIB001", "FR", FBA_EFN)]
    report = _run(routes, book)
    assert report["routes_compared"] == 2
    assert report["not_compared"] == [
        {
            "asin": "B0CALIB001",
            "route": "DE→FR",
            "why": "B0CALIB001/FR/FBA_EFN/"
            f"{products[1]['markets']['FR']['sell_price']}: InvalidParameterValue: There is an "
            "client-side error. Please verify your inputs.",
        }
    ]


def test_a_product_without_an_opportunity_is_checked_on_its_best_route() -> None:
    product = _product(2)
    route = best_route(product, V2)
    assert route is not None
    chosen = evaluate_route(product, route.buy_market, route.sell_market, V2)
    assert chosen is not None
    for buy in MARKETPLACES:
        for sell in MARKETPLACES:
            other = evaluate_route(product, buy, sell, V2)
            assert other is None or other.profit_eur_cents <= chosen.profit_eur_cents
