"""The signal rules (config/rules_*.toml, arbitrage/domain/route_filters.py) on hand-computed cases,
their properties, and rules_none reproducing the fee model's alerts on the bundled sample.

The base case is test_fee_model's hand-computed route: buy DE at 45.00 (net 37.82), sell FR at
the buy box 80.00: sell net 66.67, referral 12.00, FBA 3.00, inbound 1.00, profit 12.85, ROI
0.34 ≥ 0.20 (fees v1 thresholds: profit ≥ 5.00, ROI ≥ 0.20, rank ≤ 100 000).
"""

from __future__ import annotations

import collections
import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import REPO_ROOT, load_fee_config
from arbitrage.domain.fee_model import MARKET_CODES, detect, detect_alerts
from arbitrage.domain.keepa_parsing import merge_market_products, parse_product_response
from arbitrage.domain.keepa_sample import load_sample_document
from arbitrage.domain.messages.timestamps import parse_utc
from arbitrage.domain.messages.types import alert_id
from arbitrage.domain.messages.validation import validate_raw_update
from arbitrage.domain.route_filters import REASONS, RULE_REASONS, gather_signals
from arbitrage.domain.rules_config import (
    NO_RULES,
    RULE_SECTIONS,
    AmazonBuyBoxRule,
    FbaOffersRule,
    RulesConfig,
    RulesConfigError,
    SalesRule,
    SpikeGuardRule,
    StockRule,
    load_rules_config,
)
from tests.factories import de_to_fr, enriched, offer

CONFIG = load_fee_config()
V2 = load_fee_config(REPO_ROOT / "config" / "fees_v2.toml")
RULES_V1 = load_rules_config()
NOW = "2026-11-26T10:00:05.000Z"
MONEY = (
    "buy_price",
    "sell_price",
    "buy_net",
    "sell_net",
    "referral_fee",
    "fba_fee",
    "inbound_shipping",
    "profit_eur_cents",
    "roi",
    "sales_rank",
)


def steady(**overrides: Any) -> dict[str, Any]:
    """Signals of a steady seller in the sell market: every rule of rules_v1 passes."""
    signals: dict[str, Any] = {
        "amazon_avg90": None,
        "new_avg90": 7900,
        "buy_box_avg90": 8000,
        "sales_rank_drops30": 20,
        "sales_rank_drops90": 60,
        "new_oos_pct90": 5,
        "buy_box_oos_pct90": 6,
        "buy_box_amazon_pct": 10,
        "offer_count_fba": 3,
        "offer_count_fbm": 2,
    }
    signals.update(overrides)
    return signals


def product(sell_signals: dict[str, Any] | None) -> Any:
    return de_to_fr(CONFIG, sell_signals)


def rules(**sections: Any) -> RulesConfig:
    """Only the given rules on (each fully configured), like a small rules file."""
    return dataclasses.replace(NO_RULES, version="test", **sections)


def screened(sell_signals: dict[str, Any] | None, rule_set: RulesConfig) -> Any:
    return detect([product(sell_signals)], CONFIG, rule_set, NOW)


# --------------------------------------------------------------------------- the files


def test_rules_none_is_every_rule_off() -> None:
    loaded = load_rules_config(REPO_ROOT / "config" / "rules_none.toml")
    assert dataclasses.replace(loaded, path=NO_RULES.path) == NO_RULES
    assert not loaded.any_enabled


def test_rules_v1_defaults() -> None:
    assert RULES_V1.version == "v1"
    assert RULES_V1.sales == SalesRule(True, "drops30", 4, "skip")
    assert RULES_V1.spike_guard == SpikeGuardRule(True, "buy_box", "skip")
    assert RULES_V1.amazon_buy_box == AmazonBuyBoxRule(True, 50, "pass")
    assert RULES_V1.fba_offers == FbaOffersRule(True, 15, "pass")
    assert RULES_V1.stock == StockRule(True, "new", 40, "pass")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('version = "x"\n', "[sales] is missing"),
        ("[sales]\nenabled = false\n", "version must be a non-empty string"),
        ('version = "x"\nspeed = 1\n', "unknown key(s) speed"),
        (
            'version = "x"\n[sales]\nenabled = true\nestimator = "drops30"\n'
            'min_monthly_sales = 4\non_missing = "maybe"',
            "sales.on_missing must be one of 'skip', 'pass', got 'maybe'",
        ),
        (
            'version = "x"\n[sales]\nenabled = true\nestimator = "drops7"\n'
            'min_monthly_sales = 4\non_missing = "skip"',
            "sales.estimator must be one of 'drops30', 'drops90'",
        ),
        ('version = "x"\n[sales]\nenabled = true\n', "sales is enabled but lacks estimator"),
        (
            'version = "x"\n[sales]\nenabled = false\n[spike_guard]\nenabled = false\n'
            '[amazon_buy_box]\nenabled = true\nmax_pct = 150\non_missing = "pass"\n',
            "amazon_buy_box.max_pct must be a whole percentage from 0 to 100, got 150",
        ),
        ('version = "x"\n[sales]\nenabled = "yes"\n', "sales.enabled must be true or false"),
        ('version = "x"\n[sales]\nenabled = false\nminimum = 3\n', "unknown key(s) minimum"),
        (
            'version = "x"\n[sales]\nenabled = false\n[lifecycle]\nmax_data_age_hours = 0\n',
            "lifecycle.max_data_age_hours must be at least 1, got 0",
        ),
        (
            'version = "x"\n[sales]\nenabled = false\n[lifecycle]\nupdate_min_change_cents = -5\n',
            "lifecycle.update_min_change_cents must be a non-negative whole number, got -5",
        ),
        (
            'version = "x"\n[sales]\nenabled = false\n[lifecycle]\nmax_age = 3\n',
            "lifecycle has unknown key(s) max_age",
        ),
    ],
)
def test_a_bad_rules_file_is_refused_naming_file_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    """Sections a case does not mention are added, off, so the case's own error is the one."""
    if "[sales]" in text:
        text += "".join(
            f"\n[{name}]\nenabled = false\n" for name in RULE_SECTIONS if f"[{name}]" not in text
        )
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesConfigError) as error:
        load_rules_config(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_a_missing_rules_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(RulesConfigError, match="ARBITRAGE_RULES_FILE"):
        load_rules_config(tmp_path / "nope.toml")


# --------------------------------------------------------------------------- one test per rule


def test_the_base_case_passes_every_rule_of_v1_and_carries_its_signals() -> None:
    result = screened(steady(), RULES_V1)
    (alert,) = result.alerts
    assert result.filtered == {}
    # 80.00 is not above the 90-day buy box average 80.00: the guard leaves the price alone.
    assert alert["sell_price"]["amount"] == 8000 and alert["profit_eur_cents"] == 1285
    assert alert["rules_version"] == "v1"
    assert alert["signals"] == {
        "monthly_sales": 20,
        "sales_estimator": "drops30",
        "sell_price_current": 8000,
        "sell_avg90": 8000,
        "sell_avg90_kind": "buy_box",
        "amazon_buy_box_pct": 10,
        "fba_offers": 3,
        "oos_pct90": 5,
        "missing": [],
        # No listing facts in these signals: the alert says nothing is known.
        "listing": {
            "hazmat": None,
            "variation_parent": None,
            "package_quantity_buy": None,
            "package_quantity_sell": None,
            "return_rate_high": None,
            "brand": None,
        },
    }
    assert alert["alert_id"] == alert_id(
        "B000TEST01", "DE", "FR", 4500, 8000, fee_version="v1", rules_version="v1"
    )


SALES = SalesRule(True, "drops30", 4, "skip")


@pytest.mark.parametrize(("drops30", "kept"), [(3, False), (4, True)])
def test_sales_rule_minimum_monthly_sales_from_drops30(drops30: int, kept: bool) -> None:
    """Rule sales: estimate = salesRankDrops30; skip below min_monthly_sales (4)."""
    result = screened(steady(sales_rank_drops30=drops30), rules(sales=SALES))
    assert len(result.alerts) == int(kept)
    assert result.filtered == ({} if kept else {"low_sales": 1})


@pytest.mark.parametrize(("drops90", "estimate", "kept"), [(10, 3, False), (11, 4, True)])
def test_sales_rule_drops90_estimator_is_a_third_rounded_half_even(
    drops90: int, estimate: int, kept: bool
) -> None:
    """Rule sales, estimator drops90: 10 / 3 = 3.33 → 3 (< 4: skip); 11 / 3 = 3.67 → 4."""
    rule = dataclasses.replace(SALES, estimator="drops90")
    result = screened(steady(sales_rank_drops90=drops90), rules(sales=rule))
    assert len(result.alerts) == int(kept)
    if kept:
        assert result.alerts[0]["signals"]["monthly_sales"] == estimate


@pytest.mark.parametrize(
    ("monthly_sold", "drops30", "kept", "shown", "source"),
    [
        (600, 1, True, 600, "monthly_sold"),  # Amazon's figure wins over 1 rank drop
        (2, 40, False, 2, "monthly_sold"),  # and over 40: it is not an estimate
        (None, 40, True, 40, "drops30"),  # no figure: the estimator
    ],
)
def test_sales_rule_takes_amazons_monthly_sold_where_the_product_has_it(
    monthly_sold: int | None, drops30: int, kept: bool, shown: int, source: str
) -> None:
    rule = dataclasses.replace(SALES, use_monthly_sold=True, min_monthly_sales=4)
    signals = steady(sales_rank_drops30=drops30, monthly_sold=monthly_sold)
    result = screened(signals, rules(sales=rule))
    assert len(result.alerts) == int(kept)
    if kept:
        assert result.alerts[0]["signals"]["monthly_sales"] == shown
        assert result.alerts[0]["signals"]["sales_estimator"] == source
    # Rules v1 leave the figure aside: the estimator alone, as before.
    (v1_alert,) = screened(steady(monthly_sold=2, sales_rank_drops30=40), rules(sales=SALES)).alerts
    assert v1_alert["signals"]["sales_estimator"] == "drops30"


def test_sales_rule_missing_data_skips_or_passes_flagged_as_configured() -> None:
    """on_missing: skip → reason no_sales_data; pass → the alert names "sales" as missing."""
    skipped = screened(steady(sales_rank_drops30=None), rules(sales=SALES))
    assert skipped.alerts == [] and skipped.filtered == {"no_sales_data": 1}
    passing = dataclasses.replace(SALES, on_missing="pass")
    (alert,) = screened(steady(sales_rank_drops30=None), rules(sales=passing)).alerts
    assert alert["signals"]["missing"] == ["sales"]
    assert alert["signals"]["monthly_sales"] is None
    # No signals object at all (Keepa sent no statistics) is missing data too.
    assert screened(None, rules(sales=SALES)).filtered == {"no_sales_data": 1}


GUARD = SpikeGuardRule(True, "buy_box", "skip")


def test_spike_guard_prices_the_route_at_the_average_through_the_fee_model() -> None:
    """Rule spike_guard: sell price = min(current 80.00, 90-day buy box average 75.00) = 75.00.
    Sell net 75.00 / 1.20 = 62.50; referral 15 % = 11.25; FBA 3.00; inbound 1.00; buy net
    37.82: profit 62.50 - 11.25 - 3.00 - 1.00 - 37.82 = 9.43, ROI 0.249 ≥ 0.20: still an alert,
    at the guarded price and money lines."""
    (alert,) = screened(steady(buy_box_avg90=7500), rules(spike_guard=GUARD)).alerts
    assert alert["sell_price"] == {"amount": 7500, "currency": "EUR"}
    assert (alert["sell_net"], alert["referral_fee"], alert["fba_fee"]) == (6250, 1125, 300)
    assert (alert["inbound_shipping"], alert["buy_net"]) == (100, 3782)
    assert alert["profit_eur_cents"] == 6250 - 1125 - 300 - 100 - 3782 == 943
    assert alert["signals"]["sell_price_current"] == 8000
    assert alert["signals"]["sell_avg90"] == 7500
    assert alert["alert_id"] == alert_id(
        "B000TEST01", "DE", "FR", 4500, 7500, fee_version="v1", rules_version="test"
    )


def test_spike_guard_removes_a_route_only_the_spike_makes_profitable() -> None:
    """Average 60.00: sell net 50.00, referral 9.00 → profit 50.00 - 9.00 - 3.00 - 1.00 - 37.82
    = -0.82: a price_spike."""
    result = screened(steady(buy_box_avg90=6000), rules(spike_guard=GUARD))
    assert result.alerts == [] and result.filtered == {"price_spike": 1}


def test_spike_guard_average_kind_and_missing_average() -> None:
    """average = "new" reads new_avg90; no average: skip → no_average_price, pass → flagged."""
    new_guard = dataclasses.replace(GUARD, average="new")
    (alert,) = screened(steady(new_avg90=7500), rules(spike_guard=new_guard)).alerts
    assert alert["sell_price"]["amount"] == 7500
    assert screened(steady(buy_box_avg90=None), rules(spike_guard=GUARD)).filtered == {
        "no_average_price": 1
    }
    passing = dataclasses.replace(GUARD, on_missing="pass")
    (alert,) = screened(steady(buy_box_avg90=None), rules(spike_guard=passing)).alerts
    assert alert["sell_price"]["amount"] == 8000 and alert["signals"]["missing"] == [
        "average_price"
    ]


@pytest.mark.parametrize(("share", "kept"), [(50, True), (51, False)])
def test_amazon_buy_box_rule(share: int, kept: bool) -> None:
    """Rule amazon_buy_box: skip when Amazon held the buy box more than max_pct (50) %."""
    rule = AmazonBuyBoxRule(True, 50, "pass")
    result = screened(steady(buy_box_amazon_pct=share), rules(amazon_buy_box=rule))
    assert len(result.alerts) == int(kept)
    assert result.filtered == ({} if kept else {"amazon_buy_box": 1})
    (flagged,) = screened(steady(buy_box_amazon_pct=None), rules(amazon_buy_box=rule)).alerts
    assert flagged["signals"]["missing"] == ["amazon_buy_box"]


@pytest.mark.parametrize(("offers", "kept"), [(15, True), (16, False)])
def test_fba_offers_rule(offers: int, kept: bool) -> None:
    """Rule fba_offers: skip when the sell market has more than max_offers (15) FBA offers."""
    rule = FbaOffersRule(True, 15, "skip")
    result = screened(steady(offer_count_fba=offers), rules(fba_offers=rule))
    assert result.filtered == ({} if kept else {"fba_offers": 1})
    assert screened(steady(offer_count_fba=None), rules(fba_offers=rule)).filtered == {
        "no_fba_offer_data": 1
    }


@pytest.mark.parametrize(("oos", "kept"), [(40, True), (41, False)])
def test_stock_rule(oos: int, kept: bool) -> None:
    """Rule stock: skip sell markets out of stock (new offers) more than 40 % of 90 days."""
    rule = StockRule(True, "new", 40, "skip")
    result = screened(steady(new_oos_pct90=oos), rules(stock=rule))
    assert result.filtered == ({} if kept else {"out_of_stock": 1})
    buy_box_series = dataclasses.replace(rule, series="buy_box")
    assert screened(steady(new_oos_pct90=90), rules(stock=buy_box_series)).filtered == {}


def test_a_route_failing_several_rules_counts_under_the_first() -> None:
    """Order: sales, amazon_buy_box, fba_offers, stock, spike_guard."""
    result = screened(
        steady(sales_rank_drops30=0, buy_box_amazon_pct=90, buy_box_avg90=5000), RULES_V1
    )
    assert result.filtered == {"low_sales": 1}


def test_the_signals_of_the_candidate_routes_are_gathered_as_columns() -> None:
    products = [product(steady()), product(None)]
    fr = MARKET_CODES.index("FR")
    signals = gather_signals(
        products,
        np.array([0, 1, 0]),
        np.array([fr, fr, fr]),
        ("sales_rank_drops30", "new_oos_pct90"),
    )
    assert signals["sales_rank_drops30"].tolist() == [20, -1, 20]
    assert signals["new_oos_pct90"].tolist() == [5, -1, 5]
    assert signals["sales_rank_drops30"].dtype == np.int64


# --------------------------------------------------------------------------- ids


def test_alert_ids_keep_todays_form_for_fees_v1_without_rules() -> None:
    base = alert_id("B000TEST01", "DE", "FR", 4500, 8000)
    assert alert_id("B000TEST01", "DE", "FR", 4500, 8000, "v1", "none") == base
    assert alert_id("B000TEST01", "DE", "FR", 4500, 8000, "v1", "v1") != base
    assert alert_id("B000TEST01", "DE", "FR", 4500, 8000, "v2", "none") != base
    (alert,) = detect([product(steady())], CONFIG, NO_RULES, NOW).alerts
    assert alert["alert_id"] == base and alert["rules_version"] == "none"


# --------------------------------------------------------------------------- properties


def money(alerts: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (a["alert_id"], a["asin"], a["buy_market"], a["sell_market"], *(a[k] for k in MONEY))
        for a in alerts
    ]


def random_products(seed: int, count: int) -> list[Any]:
    """Products priced around each other, with random (sometimes missing) signals."""
    rng = random.Random(seed)
    products = []
    for n in range(count):
        markets = {}
        for code in MARKET_CODES:
            if rng.random() < 0.2:
                continue
            base = rng.randint(2000, 9000) if code != "GB" else rng.randint(1800, 8000)
            signals = None
            if rng.random() < 0.85:
                signals = {
                    name: (None if rng.random() < 0.1 else value)
                    for name, value in {
                        "buy_box_avg90": max(1, int(base * rng.uniform(0.5, 1.3))),
                        "new_avg90": max(1, int(base * rng.uniform(0.5, 1.3))),
                        "amazon_avg90": max(1, int(base * rng.uniform(0.5, 1.3))),
                        "sales_rank_drops30": rng.randint(0, 40),
                        "sales_rank_drops90": rng.randint(0, 120),
                        "new_oos_pct90": rng.randint(0, 100),
                        "buy_box_oos_pct90": rng.randint(0, 100),
                        "amazon_oos_pct90": rng.randint(0, 100),
                        "buy_box_amazon_pct": rng.randint(0, 100),
                        "offer_count_fba": rng.randint(0, 30),
                    }.items()
                }
            markets[code] = offer(
                code,
                new=base,
                buy_box=base + rng.randint(-300, 300),
                sales_rank=rng.randint(1, 150_000),
                fba_fee=rng.randint(100, 600),
                referral_fee_pct=rng.choice((7, 8, 15)),
                signals=signals,
            )
        if len(markets) >= 2:
            products.append(enriched(CONFIG, asin=f"B0PROP{n:04d}", markets=markets))
    return products


def rule_sets() -> st.SearchStrategy[RulesConfig]:
    on_missing = st.sampled_from(("skip", "pass"))
    return st.builds(
        lambda version, *parts: RulesConfig(version, *parts, path="(hypothesis)"),
        st.sampled_from(("none", "v1", "x")),
        st.builds(
            SalesRule, st.booleans(), st.sampled_from(("drops30", "drops90")),
            st.integers(0, 30), on_missing,
        ),
        st.builds(
            SpikeGuardRule, st.booleans(), st.sampled_from(("buy_box", "new", "amazon")),
            on_missing,
        ),
        st.builds(AmazonBuyBoxRule, st.booleans(), st.integers(0, 100), on_missing),
        st.builds(FbaOffersRule, st.booleans(), st.integers(0, 30), on_missing),
        st.builds(
            StockRule, st.booleans(), st.sampled_from(("new", "buy_box", "amazon")),
            st.integers(0, 100), on_missing,
        ),
    )  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), rule_set=rule_sets(), v2=st.booleans())
def test_rules_never_add_an_alert_nor_raise_a_profit(
    seed: int, rule_set: RulesConfig, v2: bool
) -> None:
    fees = V2 if v2 else CONFIG
    products = random_products(seed, 40)
    unfiltered = {
        (a["asin"], a["buy_market"], a["sell_market"]): a
        for a in detect(products, fees, NO_RULES, NOW).alerts
    }
    result = detect(products, fees, rule_set, NOW)
    for alert in result.alerts:
        route = (alert["asin"], alert["buy_market"], alert["sell_market"])
        assert route in unfiltered, "a rule added an alert"
        before = unfiltered[route]
        assert alert["profit_eur_cents"] <= before["profit_eur_cents"]
        assert alert["sell_price"]["amount"] <= before["sell_price"]["amount"]
        assert alert["buy_price"] == before["buy_price"]
        if alert["sell_price"] == before["sell_price"]:
            assert money([alert])[0][4:] == money([before])[0][4:]
    # Every route the rules removed is counted once, under one reason.
    assert sum(result.filtered.values()) == len(unfiltered) - len(result.alerts)
    assert set(result.filtered) <= set(RULE_REASONS)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_rules_none_reproduces_the_fee_model_alone(seed: int) -> None:
    products = random_products(seed, 40)
    assert money(detect(products, CONFIG, NO_RULES, NOW).alerts) == money(
        detect_alerts(products, CONFIG, NOW)
    )


# --------------------------------------------------------------------------- the sample


@pytest.fixture(scope="module")
def sample() -> tuple[list[Any], dict[str, Any]]:
    """The bundled sample through the pull's merge and enrichment, as the stages see it."""
    document = load_sample_document(REPO_ROOT / "data" / "sample" / "keepa_sample.json.gz")
    pulled_at = parse_utc(document["pulled_at"])
    found: dict[str, dict[str, Any]] = {}
    for market, body in document["markets"].items():
        for asin, keepa_product in parse_product_response(body, market):
            found.setdefault(asin, {})[market] = keepa_product
    updates = [
        validate_raw_update(merge_market_products(asin, per_market, pulled_at, "sample"))
        for asin, per_market in found.items()
    ]
    products = [enrich(update, CONFIG) for update in updates]
    return products, document["signal_archetypes"]


def test_fees_v1_and_rules_none_reproduce_todays_alerts_on_the_sample(sample: Any) -> None:
    """ARBITRAGE_FEES_FILE=config/fees_v1.toml ARBITRAGE_RULES_FILE=config/rules_none.toml: the
    same routes, money lines and ids as the fee model without rules (today's stage)."""
    products, _ = sample
    rules_none = load_rules_config(REPO_ROOT / "config" / "rules_none.toml")
    today = detect_alerts(products, CONFIG, NOW)
    result = detect(products, CONFIG, rules_none, NOW)
    assert len(today) == 119  # decision 30: 32 planted opportunities, 119 alerts
    assert money(result.alerts) == money(today)
    assert [
        {k: v for k, v in a.items() if k not in ("rules_version", "signals")} for a in result.alerts
    ] == today
    assert result.filtered == {}


def test_rules_v1_filter_the_planted_spikes_dead_and_amazon_dominated(sample: Any) -> None:
    products, archetypes = sample
    kind = {item.split("/")[0]: name for name, items in archetypes.items() for item in items}
    spiking = {item.split("/")[0]: item.split("/")[1] for item in archetypes["spike"]}
    result = detect(products, CONFIG, RULES_V1, NOW)
    kinds = collections.Counter(kind[a["asin"]] for a in result.alerts)
    assert kinds["dead"] == 0 and kinds["amazon_dominated"] == 0
    assert not [a for a in result.alerts if spiking.get(a["asin"]) == a["sell_market"]]
    assert kinds["steady"] > 60
    assert result.filtered == {"low_sales": 4, "amazon_buy_box": 25, "price_spike": 7}
    assert len(result.alerts) == 119 - sum(result.filtered.values()) == 83
    assert all(a["rules_version"] == "v1" for a in result.alerts)


def test_reasons_are_stable() -> None:
    """Codes are positions: append new reasons, never reorder (metadata names use them)."""
    assert REASONS[:2] == ("", "below_thresholds")
    assert len(set(REASONS)) == len(REASONS)
    assert np.iinfo(np.int8).max >= len(REASONS)
