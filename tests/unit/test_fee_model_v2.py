"""Fee model v2 (config/fees_v2.toml): docs/fees.md's worked example of each rule, by hand, and
properties: vectorised = plain formulas, v1 expressed as v2 = v1, no fee rise raises profit."""

from __future__ import annotations

import dataclasses
import random
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbitrage.domain.fee_config import REPO_ROOT, FeeConfig, FeesV2, load_fee_config
from arbitrage.domain.fee_model import (
    FEE_COLUMNS,
    MARKET_CODES,
    V2_ONLY_COLUMNS,
    detect_alerts,
    evaluate_route,
    evaluate_routes,
    market_matrix,
)
from arbitrage.domain.markets import MARKETPLACES
from tests.factories import enriched, offer

V1 = load_fee_config(REPO_ROOT / "config" / "fees_v1.toml")
V2 = load_fee_config(REPO_ROOT / "config" / "fees_v2.toml")
assert V2.v2 is not None
RULES: FeesV2 = V2.v2
NOW = "2026-11-26T10:00:05.000Z"
AFTER_MARCH_2026 = "2026-11-26T10:00:00.000Z"  # DST: 3 % in the France store
BEFORE_MARCH_2026 = "2025-06-01T10:00:00.000Z"  # DST: 2 % in the France store
# Each store's own root category ids (config/fees_v2.toml [categories] names the sources).
BEAUTY = {"DE": 84230031, "FR": 197858031, "IT": 6198082031, "ES": 6198054031, "GB": 117332031}
BOOKS = {"DE": 186606, "FR": 301061, "IT": 411663031, "ES": 599364031, "GB": 266239}
CAR = {"DE": 78191031, "FR": 1571265031, "IT": 1571280031, "ES": 1951051031, "GB": 248877031}
# Roots of every store, those of one store offered in another (found in the union only when
# it is the product's root), and an id no table has.
ROOT_IDS = sorted({*BEAUTY.values(), *BOOKS.values(), *CAR.values(), 562066, 560798, 12950651})
UNMAPPED = 999_999_937


def seller(**changes: Any) -> FeeConfig:
    """fees_v2 with the [seller] (or other v2 rules) changed."""
    return dataclasses.replace(V2, v2=dataclasses.replace(RULES, **changes))


def route(product: Any, buy: str, sell: str, config: FeeConfig) -> Any:
    """The one route's row, after checking the plain formulas give the same lines."""
    routes = evaluate_routes(market_matrix([product], config), config)
    row = routes[(routes.buy_market == buy) & (routes.sell_market == sell)]
    assert len(row) == 1
    row = row.iloc[0]
    plain = evaluate_route(product, buy, sell, config)
    assert plain is not None
    for name in (*FEE_COLUMNS, *V2_ONLY_COLUMNS, "profit_eur_cents"):
        assert getattr(plain, name) == row[name], name
    return row


def de_to_fr(timestamp: str = AFTER_MARCH_2026, **sell: Any) -> Any:
    """docs/fees.md's v2 example: buy on amazon.de at 45.00 €, sell on amazon.fr at 80.00 €,
    Keepa's FBA fee 2.80 € in DE and 3.00 € in FR, 400 g in a 20 × 10 × 5 cm box (extra-large
    envelope), referral 15 % (no schedule for its category)."""
    fields = {"buy_box": 8000, "referral_fee_pct": 15, "fba_fee": 300, **sell}
    return enriched(
        V2,
        markets={"DE": offer("DE", new=4500, fba_fee=280), "FR": offer("FR", **fields)},
        weight_g=400,
        timestamp=timestamp,
    )


# --------------------------------------------------------------------------- one rule each


def test_v1_lines_unchanged_under_v2() -> None:
    # buy_net, sell_net, referral, inbound: the v1 rules (docs/fees.md, the fees v1 example).
    row = route(de_to_fr(), "DE", "FR", V2)
    assert row.buy_net == 3782  # 4500 / 1.19
    assert row.sell_net == 6667  # 8000 / 1.20
    assert row.referral_fee == 1200  # 15 % of 8000; above the 0.30 € minimum
    assert row.inbound_shipping == 100  # max(100, 150 × 0.4)


def test_rule_efn_local_fee_of_the_buy_market_plus_surcharge() -> None:
    # Rule "fulfilment, EFN": DE's local fee 280 + surcharge to FR of the extra-large envelope
    # tier (400 g, sides 200/100/50 mm: too thick for a large envelope's 40 mm) = 130.
    assert RULES.size_tier(400, (200, 100, 50)) == 3
    assert RULES.size_tiers[3].name == "extra_large_envelope"
    row = route(de_to_fr(), "DE", "FR", seller(fulfilment="efn"))
    assert (row.fba_fee, row.efn_fee) == (280, 130)
    # DST (DE seller, France store, 2026-11-26: 3 % of selling and FBA fees):
    # 3 % × 1200 + 3 % × (280 + 130) = 36 + 12.3 = 48.3 → 48.
    assert row.dst_fee == 48
    assert row.profit_eur_cents == 6667 - 1200 - 0 - 280 - 130 - 48 - 0 - 100 - 3782 == 1127


def test_rule_pan_european_local_fee_of_the_destination() -> None:
    # Rule "fulfilment, Pan-European": FR's local fee 300, no surcharge.
    row = route(de_to_fr(), "DE", "FR", seller(fulfilment="pan_eu"))
    assert (row.fba_fee, row.efn_fee) == (300, 0)
    assert row.dst_fee == 45  # 3 % × 1200 + 3 % × 300 = 36 + 9
    assert row.profit_eur_cents == 6667 - 1200 - 300 - 45 - 100 - 3782 == 1240


def test_rule_digital_services_fee_by_date_store_and_seller_country() -> None:
    # 2025-06-01, DE seller, France store: 2 % of selling and FBA fees:
    # 2 % × 1200 + 2 % × 410 = 24 + 8.2 = 32.2 → 32.
    assert route(de_to_fr(BEFORE_MARCH_2026), "DE", "FR", V2).dst_fee == 32
    # Italy store, DE seller, after 2026-03-20: 3 % of selling fees only (12 % is
    # Keepa's flat rate here): 3 % × 960 = 28.8 → 29.
    product = enriched(
        V2,
        markets={
            "DE": offer("DE", new=4500, fba_fee=280),
            "IT": offer("IT", buy_box=8000, referral_fee_pct=12),
        },
        weight_g=400,
    )
    assert route(product, "DE", "IT", V2).dst_fee == 29
    # The German store has no DST for a DE seller; a seller established in France pays 3 %
    # on selling and FBA fees there: 3 % × (675 + 300 + 120 (FR → DE surcharge)) = 32.85 → 33.
    back = enriched(
        V2,
        markets={
            "FR": offer("FR", new=4000, fba_fee=300),
            "DE": offer("DE", buy_box=4500, referral_fee_pct=15, fba_fee=280),
        },
        weight_g=400,
    )
    assert route(back, "FR", "DE", V2).dst_fee == 0
    french = seller(dst=load_v2_with(country="FR").dst, seller_country="FR")
    assert route(back, "FR", "DE", french).dst_fee == 33


def load_v2_with(**seller_fields: Any) -> FeesV2:
    """fees_v2.toml re-read with other [seller] values (the DST table is resolved per seller)."""
    text = Path(V2.path).read_text()
    for key, value in seller_fields.items():
        quoted = f'"{value}"' if isinstance(value, str) else str(value).lower()
        old = {"country": 'country = "DE"', "fulfilment": 'fulfilment = "efn"'}[key]
        text = text.replace(old, f"{key} = {quoted}", 1)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fees.toml"
        path.write_text(text)
        rules = load_fee_config(path).v2
    assert rules is not None
    return rules


def test_rule_vat_on_fees_for_an_unregistered_seller() -> None:
    # Registered: fees are net (reverse charge), fee_vat 0. Unregistered DE seller: 19 % of
    # every Amazon fee incl. the DST, exactly: (1200 + 280 + 130 + 48.3) × 0.19 = 315.077 → 315.
    assert route(de_to_fr(), "DE", "FR", V2).fee_vat == 0
    row = route(de_to_fr(), "DE", "FR", seller(vat_registered=False))
    assert row.fee_vat == 315
    assert row.profit_eur_cents == 1127 - 315 == 812


def test_rule_referral_by_total_price_band_with_minimum() -> None:
    # Beauty: 8 % for a total ≤ 10.00 €, 15 % above; at least 0.30 €.
    def beauty(price: int) -> Any:
        product = enriched(
            V2,
            markets={
                "DE": offer("DE", new=100, fba_fee=280),
                "FR": offer("FR", buy_box=price, root_category=BEAUTY["FR"]),
            },
            weight_g=50,
        )
        return route(product, "DE", "FR", V2).referral_fee

    assert beauty(1000) == 80  # 8 % of 10.00 €
    assert beauty(1001) == 150  # 15 % of 10.01 € = 150.15
    assert beauty(300) == 30  # 8 % of 3.00 € = 24 < the 0.30 € minimum


def test_rule_referral_by_portion_above_a_threshold() -> None:
    # Car & Motorbike: 15 % of the price up to 50.00 €, 9 % of the part above (UK: £45).
    product = enriched(
        V2,
        markets={
            "DE": offer("DE", new=4000, fba_fee=280),
            "FR": offer("FR", buy_box=8000, root_category=CAR["FR"]),
            "GB": offer("GB", buy_box=10000, root_category=CAR["GB"]),
        },
        weight_g=400,
    )
    assert route(product, "DE", "FR", V2).referral_fee == 1020  # 15 % × 5000 + 9 % × 3000
    # 15 % × 4500 p + 9 % × 5500 p = 1170 p × 1.145 = 1339.65 → 1340 EUR cents.
    assert route(product, "DE", "GB", V2).referral_fee == 1340


def test_rule_closing_fee_for_media() -> None:
    # Books: 5 % below 5.00 €, 15 % from 5.00 €, no minimum, closing fee 1.01 € per item.
    product = enriched(
        V2,
        markets={
            "DE": offer("DE", new=200, fba_fee=280),
            "FR": offer("FR", buy_box=499, root_category=BOOKS["FR"]),
            "IT": offer("IT", buy_box=2000, root_category=BOOKS["IT"]),
        },
        weight_g=400,
    )
    cheap = route(product, "DE", "FR", V2)
    assert (cheap.referral_fee, cheap.closing_fee) == (25, 101)  # 5 % × 499 = 24.95
    dear = route(product, "DE", "IT", V2)
    assert (dear.referral_fee, dear.closing_fee) == (300, 101)
    # The product's own root category (here amazon.de's, its home store) stands in when the
    # market has none; a market's root is looked up in that market's table only.
    product["markets"]["IT"]["root_category"] = None
    product["category"]["root_id"] = BOOKS["DE"]
    assert route(product, "DE", "IT", V2).closing_fee == 101
    product["markets"]["IT"]["root_category"] = BOOKS["DE"]
    assert route(product, "DE", "IT", V2).closing_fee == 0


def test_unknown_sides_size_as_a_standard_parcel() -> None:
    assert RULES.size_tier(400, (None, 100, 50)) == 5  # standard_parcel
    assert RULES.size_tier(20_000, (None, None, None)) == 6  # too heavy: small oversize
    assert RULES.size_tier(50, (150, 100, 5)) == 0  # small envelope


def test_v2_alert_carries_the_v2_lines_and_v1_alert_does_not() -> None:
    (alert,) = detect_alerts([de_to_fr()], V2, NOW)
    assert alert["fee_model_version"] == "v2"
    assert (alert["efn_fee"], alert["dst_fee"], alert["fee_vat"]) == (130, 48, 0)
    assert alert["fulfilment"] == "efn"
    v1_product = enriched(
        V1, markets={"DE": offer("DE", new=4500), "FR": offer("FR", buy_box=8000)}
    )
    (v1_alert,) = detect_alerts([v1_product], V1, NOW)
    assert not set(V2_ONLY_COLUMNS) & set(v1_alert)


# --------------------------------------------------------------------------- properties

PRICE = st.one_of(st.just(-1), st.just(-2), st.integers(1, 500_000))
CATEGORY = st.sampled_from([None, UNMAPPED, *ROOT_IDS])
SIDE = st.one_of(st.none(), st.integers(1, 2000))
TIMESTAMP = st.sampled_from(
    [
        "2024-09-30T23:59:59.000Z",
        "2024-10-01T00:00:00.000Z",
        BEFORE_MARCH_2026,
        "2026-03-19T23:59:59.999Z",
        "2026-03-20T00:00:00.000Z",
        AFTER_MARCH_2026,
    ]
)


@st.composite
def products(draw: st.DrawFn) -> Any:
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
            referral_fee_pct=draw(st.one_of(st.none(), st.integers(1, 20), st.just(8.5))),
            fba_fee=draw(st.one_of(st.none(), st.integers(0, 2000))),
            root_category=draw(CATEGORY),
        )
        for code in codes
    }
    package = {
        "weight_g": draw(st.one_of(st.none(), st.integers(1, 40_000))),
        "length_mm": draw(SIDE),
        "width_mm": draw(SIDE),
        "height_mm": draw(SIDE),
    }
    return enriched(
        V2,
        markets=markets,
        timestamp=draw(TIMESTAMP),
        package=package,
        category={"root_id": draw(CATEGORY), "name": None},
    )


SELLERS = st.builds(
    lambda country, fulfilment, registered: (country, fulfilment, registered),
    st.sampled_from(["DE", "FR", "IT", "GB"]),
    st.sampled_from(["efn", "pan_eu"]),
    st.booleans(),
)
_RULES_BY_COUNTRY = {country: load_v2_with(country=country) for country in ("DE", "FR", "IT", "GB")}


def config_for(country: str, fulfilment: str, registered: bool) -> FeeConfig:
    rules = dataclasses.replace(
        _RULES_BY_COUNTRY[country],
        fulfilment=fulfilment,
        vat_registered=registered,
        seller_vat_pct=V2.vat_pct[country],
    )
    return dataclasses.replace(V2, v2=rules)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LINES = (*FEE_COLUMNS, *V2_ONLY_COLUMNS, "profit_eur_cents")


def assert_vectorised_equals_plain(batch: list[Any], config: FeeConfig) -> None:
    routes = evaluate_routes(market_matrix(batch, config), config)
    got = {
        (r.row, r.buy_market, r.sell_market): (*(getattr(r, n) for n in LINES), bool(r.qualifies))
        for r in routes.itertuples()
    }
    expected = {}
    for row, product in enumerate(batch):
        for buy in MARKET_CODES:
            for sell in MARKET_CODES:
                plain = evaluate_route(product, buy, sell, config)
                if plain is not None:
                    expected[(row, buy, sell)] = (
                        *(getattr(plain, n) for n in LINES),
                        plain.qualifies,
                    )
    assert got == expected


@SETTINGS
@given(st.lists(products(), min_size=1, max_size=20), SELLERS)
def test_v2_vectorised_equals_the_plain_formulas(batch: list[Any], who: Any) -> None:
    for position, product in enumerate(batch):
        product["asin"] = f"B{position:09d}"
    assert_vectorised_equals_plain(batch, config_for(*who))


def test_a_large_seeded_v2_batch_equals_the_plain_formulas() -> None:
    rng = random.Random(20261127)

    def price() -> int:
        return rng.choice([-1, 1, 9_999_999, rng.randint(1, 5_000), rng.randint(1, 200_000)])

    batch = []
    for position in range(800):
        codes = rng.sample(sorted(MARKETPLACES), rng.randint(2, 5))
        markets = {
            code: offer(
                code,
                buy_box=price(),
                new=price(),
                sales_rank=rng.choice([-1, 1, rng.randint(1, 400_000)]),
                referral_fee_pct=rng.choice([None, 7, 8.5, 15, 45]),
                fba_fee=rng.choice([None, 0, 250, 9_999]),
                root_category=rng.choice([None, UNMAPPED, *ROOT_IDS]),
            )
            for code in codes
        }
        package = {
            "weight_g": rng.choice([None, 1, 80, 81, 460, 961, 11_900, 40_000]),
            "length_mm": rng.choice([None, 10, 200, 330, 450, 1800]),
            "width_mm": rng.choice([10, 150, 230, 340]),
            "height_mm": rng.choice([None, 1, 10, 25, 60, 260]),
        }
        batch.append(
            enriched(
                V2,
                asin=f"B{position:09d}",
                markets=markets,
                package=package,
                timestamp=rng.choice([BEFORE_MARCH_2026, AFTER_MARCH_2026]),
            )
        )
    for who in (("DE", "efn", True), ("GB", "pan_eu", False), ("FR", "efn", False)):
        assert_vectorised_equals_plain(batch, config_for(*who))


def v1_as_v2() -> FeeConfig:
    """Fees v1 written as v2 rules: Pan-European (the sell market's fee), VAT-registered, no
    schedules or minimum, no DST."""
    rules = FeesV2(
        seller_country="DE",
        fulfilment="pan_eu",
        vat_registered=True,
        seller_vat_pct=Fraction(19),
        referral_min_fee_minor=dict.fromkeys(MARKETPLACES, 0),
        schedules=(),
        category_keys={code: {} for code in MARKETPLACES},
        any_store_keys={},
        category_default_pct_x100={},
        size_tiers=RULES.size_tiers,
        unknown_dimensions_tier=RULES.unknown_dimensions_tier,
        efn_surcharge_minor=RULES.efn_surcharge_minor,
        dst={},
    )
    return dataclasses.replace(V1, v2=rules)


def assert_v1_through_v2_is_identical(batch: list[Any]) -> None:
    before = evaluate_routes(market_matrix(batch, V1), V1)
    as_v2 = v1_as_v2()
    after = evaluate_routes(market_matrix(batch, as_v2), as_v2)
    assert (after[list(V2_ONLY_COLUMNS)] == 0).all().all()
    pd.testing.assert_frame_equal(after[list(before.columns)], before, check_exact=True)


@SETTINGS
@given(st.lists(products(), min_size=1, max_size=20))
def test_v1_rules_through_the_v2_path_give_identical_routes(batch: list[Any]) -> None:
    for position, product in enumerate(batch):
        product["asin"] = f"B{position:09d}"
    assert_v1_through_v2_is_identical(batch)


def _dearer(rules: FeesV2, rise: int) -> FeesV2:
    """Every fee of the v2 rules higher by ``rise`` (minor units or hundredths of a percent)."""
    return dataclasses.replace(
        rules,
        vat_registered=False,
        seller_vat_pct=rules.seller_vat_pct + Fraction(rise, 100),
        referral_min_fee_minor={k: v + rise for k, v in rules.referral_min_fee_minor.items()},
        schedules=tuple(
            dataclasses.replace(
                s,
                pct_x100=tuple(min(10_000, p + rise) for p in s.pct_x100),
                min_fee_minor={k: v + rise for k, v in s.min_fee_minor.items()},
                closing_fee_minor={k: v + rise for k, v in s.closing_fee_minor.items()},
            )
            for s in rules.schedules
        ),
        efn_surcharge_minor={
            k: tuple(f + rise for f in v) for k, v in rules.efn_surcharge_minor.items()
        },
        dst={
            key: tuple((start, min(10_000, pct + rise)) for start, pct in timeline)
            for key, timeline in rules.dst.items()
        },
    )


@SETTINGS
@given(products(), SELLERS, st.integers(1, 500), st.integers(0, 3000), st.integers(0, 2000))
def test_profit_never_rises_when_any_fee_rises(
    product: Any, who: Any, rise: int, fba_rise: int, referral_rise: int
) -> None:
    config = config_for(*who)
    assert config.v2 is not None
    base = evaluate_routes(market_matrix([product], config), config)
    profit = {(r.buy_market, r.sell_market): r.profit_eur_cents for r in base.itertuples()}
    dearer_config = dataclasses.replace(config, v2=_dearer(config.v2, rise))
    for market in product["markets"].values():
        market["fba_fee_resolved"] += fba_rise
        market["referral_pct_x100"] = min(10_000, market["referral_pct_x100"] + referral_rise)
    dearer = evaluate_routes(market_matrix([product], dearer_config), dearer_config)
    assert len(dearer) == len(base)
    for r in dearer.itertuples():
        assert r.profit_eur_cents <= profit[(r.buy_market, r.sell_market)]
        for line in ("referral_fee", "closing_fee", "efn_fee", "dst_fee", "fee_vat"):
            assert getattr(r, line) >= base.loc[r.Index, line]


def test_fees_v2_file_constants_carry_a_source() -> None:
    """Every v2 schedule names a source and an effective date (the TOML comments carry the
    others' sources)."""
    import tomllib

    data = tomllib.loads(Path(V2.path).read_text())
    for schedule in data["referral_schedule"]:
        assert schedule["source"] and schedule["effective"]
    assert data["efn"]["effective"]
    assert all(row["from"] for row in data["dst"]["rates"])
    assert "assumption:" in Path(V2.path).read_text()


def test_levies_too_wide_for_int64_stay_exact() -> None:
    """A six-decimal FX and a fractional seller VAT make the DST/fee-VAT coefficients too wide
    for int64 sums: the vectorised model takes Python ints there and still equals the plain one
    (EFN adds the buy market's FBA term per route, Pan-European per market)."""
    rng = random.Random(20261129)
    batch = []
    for position in range(300):
        codes = rng.sample(sorted(MARKETPLACES), rng.randint(2, 5))
        markets = {
            code: offer(
                code,
                buy_box=rng.randint(1, 200_000),
                new=rng.choice([rng.randint(1, 200_000), 9_999_999]),
                sales_rank=rng.randint(1, 50_000),
                referral_fee_pct=rng.choice([None, 7, 8.5, 15]),
                fba_fee=rng.choice([None, 0, 250, 9_999]),
                root_category=rng.choice([None, UNMAPPED, *ROOT_IDS]),
            )
            for code in codes
        }
        package = {"weight_g": rng.choice([None, 80, 961, 40_000]), "length_mm": None}
        batch.append(
            enriched(
                V2,
                asin=f"B{position:09d}",
                markets=markets,
                package={**package, "width_mm": 150, "height_mm": 25},
                timestamp=rng.choice([BEFORE_MARCH_2026, AFTER_MARCH_2026]),
            )
        )
    for fulfilment in ("efn", "pan_eu"):
        config = config_for("GB", fulfilment, False)
        assert config.v2 is not None
        config = dataclasses.replace(
            config,
            eur_per_unit={**config.eur_per_unit, "GBP": Fraction("1.145678")},
            v2=dataclasses.replace(config.v2, seller_vat_pct=Fraction("20.5")),
        )
        assert_vectorised_equals_plain(batch, config)
