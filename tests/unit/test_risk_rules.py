"""The risk rules a seller checks before buying (issue 27 item 4): hazardous materials, a
multipack under one ASIN, a high return rate, a variation parent, and what the seller's
restrictions file forbids; each fails a route on what either store's listing says, and decides
missing facts by ``on_missing`` like the signal rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.fee_model import detect
from arbitrage.domain.rules_config import (
    NO_RULES,
    Restrictions,
    RestrictionsRule,
    RiskRule,
    RulesConfig,
    RulesConfigError,
    load_restrictions,
    load_rules_config,
)
from tests.factories import de_to_fr

CONFIG = load_fee_config()
NOW = "2026-12-07T00:00:00.000Z"
KNOWN = {
    "hazmat": False,
    "variation_parent": False,
    "package_quantity": 1,
    "return_rate_high": False,
    "brand": "Acme",
}
SKIP, PASS = RiskRule(True, "skip"), RiskRule(True, "pass")


def screened(buy: dict[str, Any], sell: dict[str, Any], rules: RulesConfig) -> Any:
    """DE (buy 45.00) → FR (sell 80.00): an alert with every rule off."""
    product = de_to_fr(CONFIG, sell, buy)
    return detect([product], CONFIG, rules, NOW)


def only(**sections: Any) -> RulesConfig:
    return dataclasses.replace(NO_RULES, version="test", **sections)


@pytest.mark.parametrize(
    ("rule", "buy", "sell", "reason"),
    [
        ("hazmat", {"hazmat": True}, {}, "hazmat"),  # declared in the buy store is enough
        ("hazmat", {}, {"hazmat": True}, "hazmat"),
        ("pack_quantity", {"package_quantity": 1}, {"package_quantity": 6}, "pack_mismatch"),
        ("return_rate", {}, {"return_rate_high": True}, "high_returns"),
        ("return_rate", {"return_rate_high": True}, {}, None),  # only where it is sold
        ("variation_parent", {}, {"variation_parent": True}, "variation_parent"),
    ],
)
def test_a_risk_fails_the_route_with_its_reason(
    rule: str, buy: dict[str, Any], sell: dict[str, Any], reason: str | None
) -> None:
    result = screened({**KNOWN, **buy}, {**KNOWN, **sell}, only(**{rule: SKIP}))
    if reason is None:
        assert len(result.alerts) == 1 and result.filtered == {}
    else:
        assert result.alerts == [] and result.filtered == {reason: 1}
    # The same facts with the rule off: the alert, its listing facts on it.
    (alert,) = screened({**KNOWN, **buy}, {**KNOWN, **sell}, only()).alerts
    assert alert["signals"]["listing"]["brand"] == "Acme"


@pytest.mark.parametrize(
    ("rule", "unknown", "no_data"),
    [
        ("hazmat", "hazmat", "no_hazmat_data"),
        ("pack_quantity", "package_quantity", "no_pack_data"),
        ("return_rate", "return_rate_high", "no_return_data"),
        ("variation_parent", "variation_parent", "no_listing_type"),
    ],
)
def test_a_fact_no_store_gives_is_decided_by_on_missing(
    rule: str, unknown: str, no_data: str
) -> None:
    sell = {**KNOWN, unknown: None}
    skipped = screened(KNOWN, sell, only(**{rule: SKIP}))
    assert skipped.alerts == [] and skipped.filtered == {no_data: 1}
    (alert,) = screened(KNOWN, sell, only(**{rule: PASS})).alerts
    assert alert["signals"]["missing"] == [rule]


def restrictions_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "restrictions.toml"
    path.write_text('version = "test"\n' + body)
    return path


def test_restricted_brands_and_categories(tmp_path: Path) -> None:
    path = restrictions_file(
        tmp_path,
        'brands = ["ACME", "Other"]\n'
        '[[category]]\nstore = "FR"\nroot = 57004031\nwhy = "gated in FR"\n',
    )
    loaded = load_restrictions(path)
    assert loaded.brands == {"acme", "other"} and loaded.categories == {("FR", 57004031)}
    rule = RestrictionsRule(True, "skip", str(path), loaded)
    assert screened(KNOWN, KNOWN, only(restrictions=rule)).filtered == {"restricted": 1}
    other = {**KNOWN, "brand": "Zenith"}
    assert len(screened(other, other, only(restrictions=rule)).alerts) == 1
    unknown = {**KNOWN, "brand": None}
    assert screened(unknown, unknown, only(restrictions=rule)).filtered == {"no_brand_data": 1}
    # The sell store's root category: gated whatever the brand.
    gated = Restrictions("t", frozenset(), frozenset({("FR", 57004031)}))
    assert gated.restricted(None, "FR", 57004031) and not gated.restricted(None, "DE", 57004031)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("brands = [1]\n", "brands must be a list"),
        ('[[category]]\nstore = "US"\nroot = 1\nwhy = "x"\n', "store must be one of"),
        ('[[category]]\nstore = "DE"\nroot = "toys"\nwhy = "x"\n', "root must be"),
        ('[[category]]\nstore = "DE"\nroot = 5\n', "why must say"),
        ("colour = 1\n", "unknown key(s) colour"),
    ],
)
def test_a_bad_restrictions_file_is_refused_with_a_sentence(
    tmp_path: Path, body: str, says: str
) -> None:
    with pytest.raises(RulesConfigError, match=None) as refused:
        load_restrictions(restrictions_file(tmp_path, body))
    assert says in str(refused.value)


def test_rules_v2_turns_the_risks_on_and_v1_stays_as_it_was() -> None:
    v1 = load_rules_config()
    assert not v1.any_risk_enabled and not v1.sales.use_monthly_sold
    v2 = load_rules_config(Path("config/rules_v2.toml"))
    assert v2.sales.use_monthly_sold and v2.hazmat.enabled and v2.pack_quantity.enabled
    assert v2.return_rate.on_missing == "pass"  # null is "unknown or average": never a skip
    assert v2.restrictions.enabled and v2.restrictions.restrictions.version
