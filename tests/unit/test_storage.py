"""Storage and time to sell (issue 27 item 2): the worked examples of docs/fees.md ("Storage and
time to sell") to the cent, the size tiers, the rule's reason and the alert's lines."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import pytest

from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.fee_model import detect
from arbitrage.domain.rules_config import NO_RULES, SalesRule, TimeToSellRule, load_rules_config
from arbitrage.domain.storage import (
    StorageConfigError,
    load_storage_rates,
    storage_cost,
    time_to_sell,
)
from tests.factories import de_to_fr

RATES = load_storage_rates()
BOX = {"length_mm": 300, "width_mm": 200, "height_mm": 100, "weight_g": 500}  # 0.006 m³


def test_worked_example_de_january_to_september() -> None:
    """40 sales a month shared with 3 FBA offers: the seller sells 10 a month; 20 units take
    60 days. 0.006 m³ × 27.82 €/m³ = 16.692 c a month; half the stock for 2 months: 16.692 c
    → 17 c a unit."""
    per_month, days = time_to_sell(40, 3, 20)  # type: ignore[misc]
    assert (per_month, days) == (10, 60)
    assert RATES.tier(BOX) == "standard"
    assert storage_cost(RATES, "DE", BOX, 5, days, Fraction(1)) == (17, 17)


def test_worked_example_uk_october_to_december_in_pence_then_euro() -> None:
    """0.006 m³ = 0.21189 ft³ × 100 p = 21.189 p a month; 60 days, half stored: 21.189 p →
    21 p; × 1.145 €/£ = 24.26 → 24 c."""
    assert storage_cost(RATES, "GB", BOX, 11, Fraction(60), Fraction("1.145")) == (21, 24)


def test_size_tiers_and_unknown_sizes() -> None:
    assert RATES.tier({**BOX, "length_mm": 460}) == "large"  # longer than 45 cm
    assert RATES.tier({**BOX, "weight_g": 12_001}) == "large"
    # Sides compare longest first: 26 x 45 x 34 fits 45 x 34 x 26.
    assert RATES.tier({**BOX, "length_mm": 260, "width_mm": 450, "height_mm": 340}) == "standard"
    assert RATES.tier({**BOX, "height_mm": None}) is None
    assert (
        storage_cost(RATES, "DE", {**BOX, "weight_g": None}, 5, Fraction(60), Fraction(1)) is None
    )
    assert time_to_sell(None, 3, 20) is None
    assert time_to_sell(0, 0, 20)[1] > 10**8  # type: ignore[index]  # never sells


def test_a_bad_storage_file_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "storage.toml"
    bad.write_text(
        'version = "x"\nsource = "s"\nread_on = "d"\n'
        "[standard_size]\nmax_sides_mm = [1, 2, 3]\nmax_weight_g = 1\n"
        '[stores.DE]\nunit = "m3"\nstandard = { jan_sep = 1 }\n'
        "large = { jan_sep = 1, oct_dec = 2 }\n"
    )
    with pytest.raises(
        StorageConfigError, match=r"\[stores.DE\]: standard needs jan_sep and oct_dec"
    ):
        load_storage_rates(bad)


CONFIG = load_fee_config()


def detected(drops30: int, rule: TimeToSellRule) -> object:
    signals = {"sales_rank_drops30": drops30, "offer_count_fba": 3}
    product = de_to_fr(CONFIG, signals, package=BOX)
    rules = dataclasses.replace(NO_RULES, version="test", sales=SalesRule(False), time_to_sell=rule)
    return detect([product], CONFIG, rules, "2026-05-04T10:00:00.000Z")


def test_the_rule_skips_slow_sellers_and_the_alert_shows_storage() -> None:
    rule = TimeToSellRule(True, "skip", 90, 20, rates=RATES)
    (alert,) = detected(40, rule).alerts  # type: ignore[attr-defined]
    storage = alert["signals"]["storage"]
    assert storage["days_to_sell"] == 60 and storage["units_per_month"] == 10
    # FR's rate 28.65 €/m³: 0.006 × 28.65 = 17.19 c a month, half stored for 2 months: 17 c.
    assert storage["storage_eur_cents"] == 17 and storage["season"] == "jan_sep"
    assert storage["profit_after_storage_eur_cents"] == alert["profit_eur_cents"] - 17
    # 12 sales a month among 4 FBA offers: 3 a month for the seller, 200 days > 90.
    assert detected(12, rule).filtered == {"slow_to_sell": 1}  # type: ignore[attr-defined]


def test_rules_v2_sets_the_limit_and_the_planned_quantity() -> None:
    v2 = load_rules_config(Path("config/rules_v2.toml"))
    assert v2.time_to_sell.enabled and v2.time_to_sell.rates is not None
    assert v2.time_to_sell.max_days == 90 and v2.time_to_sell.planned_quantity == 20
