"""Keepa product objects → market offers and raw updates (arbitrage.domain.keepa_parsing)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbitrage.domain.keepa_parsing import (
    chunked,
    current_price,
    extract_category,
    extract_package,
    extract_title,
    has_product_data,
    keepa_minutes_to_utc,
    merge_market_products,
    parse_product,
    parse_product_response,
    read_asin_list,
    response_error,
    token_info,
    utc_to_keepa_minutes,
)
from arbitrage.domain.messages.timestamps import format_utc
from arbitrage.domain.messages.types import MAX_TITLE_CHARS
from arbitrage.domain.messages.validation import validate_raw_update

PULLED_AT = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
# 2026-11-26T10:00:00Z in Keepa minutes.
LAST_UPDATE = utc_to_keepa_minutes(datetime(2026, 11, 26, 10, 0, tzinfo=UTC))


def current(**values: int) -> list[int]:
    """A 36-entry stats.current with named indices set, the rest -1."""
    index = {"amazon": 0, "new": 1, "sales": 3, "count_new": 11, "buy_box": 18}
    array = [-1] * 36
    for name, value in values.items():
        array[index[name]] = value
    return array


def product(asin: str = "B0TEST0001", domain_id: int = 3, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "asin": asin,
        "domainId": domain_id,
        "productType": 0,
        "title": "Nordvik Compact Kettle NO-123, Black",
        "rootCategory": 3167641,
        "categoryTree": [
            {"catId": 3167641, "name": "Küche, Haushalt & Wohnen"},
            {"catId": 3169011, "name": "Wasserkocher"},
        ],
        "packageWeight": 1250,
        "packageLength": 300,
        "packageWidth": 200,
        "packageHeight": 150,
        "referralFeePercentage": 15.0,
        "fbaFees": {"pickAndPackFee": 412},
        "lastUpdate": LAST_UPDATE,
        "csv": None,
        "stats": {"current": current(amazon=2999, new=2899, sales=1234, count_new=7, buy_box=2999)},
    }
    base.update(overrides)
    return base


# --------------------------------------------------------------------------- Keepa time


def test_keepa_minutes_follow_the_documented_formula() -> None:
    # Keepa's own example: 411180 → 1318510800000 ms.
    assert keepa_minutes_to_utc(411180) == datetime.fromtimestamp(1318510800, tz=UTC)
    assert keepa_minutes_to_utc(0) == datetime(2011, 1, 1, tzinfo=UTC)


def test_keepa_minutes_round_trip() -> None:
    moment = datetime(2026, 11, 26, 10, 15, 59, tzinfo=UTC)
    minutes = utc_to_keepa_minutes(moment)
    assert keepa_minutes_to_utc(minutes) == datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
    with pytest.raises(ValueError, match="aware"):
        utc_to_keepa_minutes(datetime(2026, 11, 26))


# --------------------------------------------------------------------------- parse_product


def test_parse_product_reads_the_documented_fields() -> None:
    offer = parse_product(product(), "DE")
    assert offer == {
        "domain_id": 3,
        "currency": "EUR",
        "buy_box": 2999,
        "amazon": 2999,
        "new": 2899,
        "sales_rank": 1234,
        "offer_count_new": 7,
        "referral_fee_pct": 15.0,
        "fba_fee": 412,
        "root_category": 3167641,
        "last_update": "2026-11-26T10:00:00.000Z",
        "signals": None,  # stats has only `current`: Keepa sent no statistics
    }


def test_gb_prices_stay_in_pence_with_gbp_currency() -> None:
    offer = parse_product(product(domain_id=2), "GB")
    assert offer is not None
    assert (offer["domain_id"], offer["currency"], offer["new"]) == (2, "GBP", 2899)


def test_sentinels_are_kept_in_price_fields() -> None:
    stats = {"current": current(amazon=-1, new=-1, sales=50, count_new=0, buy_box=-2)}
    offer = parse_product(product(stats=stats), "DE")
    assert offer is not None
    assert (offer["amazon"], offer["new"], offer["buy_box"]) == (-1, -1, -2)
    assert offer["offer_count_new"] == 0
    assert current_price(offer) == -1


@pytest.mark.parametrize(
    "stats",
    [None, {}, {"current": None}, {"current": [1999, 1899, -1, 5]}],
    ids=["stats-null", "stats-empty", "current-null", "current-short"],
)
def test_missing_stats_values_become_not_set(stats: Any) -> None:
    offer = parse_product(product(stats=stats), "DE")
    assert offer is not None
    assert offer["buy_box"] == -2  # index 18 absent → "not set", never a price
    assert offer["offer_count_new"] == -1
    if stats and stats.get("current"):
        assert (offer["amazon"], offer["new"], offer["sales_rank"]) == (1999, 1899, 5)
    else:
        assert (offer["amazon"], offer["new"], offer["sales_rank"]) == (-2, -2, -1)


def test_missing_stats_key_entirely() -> None:
    raw = product()
    del raw["stats"]
    offer = parse_product(raw, "DE")
    assert offer is not None and offer["amazon"] == -2 and offer["sales_rank"] == -1


@pytest.mark.parametrize("rank", [-1, 0, None, "12", 10**12])
def test_unknown_sales_rank_is_minus_one(rank: Any) -> None:
    stats = {"current": [2999, 2899, -1, rank] + [-1] * 15}
    offer = parse_product(product(stats=stats), "DE")
    assert offer is not None and offer["sales_rank"] == -1


@pytest.mark.parametrize("bad", [-3, -100, 10**9, "1999", 19.5, True, None])
def test_unusable_prices_are_not_set(bad: Any) -> None:
    stats = {"current": current(amazon=2999, new=2899, buy_box=2999)}
    stats["current"][0] = bad
    offer = parse_product(product(stats=stats), "DE")
    assert offer is not None and offer["amazon"] == -2


@pytest.mark.parametrize(
    ("fees", "expected"),
    [
        ({"pickAndPackFee": 412}, 412),
        (None, None),
        ({}, None),
        ({"pickAndPackFee": None}, None),
        ({"pickAndPackFee": -1}, None),
        ({"pickAndPackFee": 0}, None),  # Keepa: 0 = no valid dimensions, fee unknown
        ({"storageFee": 20}, None),
        ("412", None),
    ],
)
def test_fba_fee(fees: Any, expected: int | None) -> None:
    offer = parse_product(product(fbaFees=fees), "DE")
    assert offer is not None and offer["fba_fee"] == expected


def test_fba_fees_key_absent() -> None:
    raw = product()
    del raw["fbaFees"]
    offer = parse_product(raw, "DE")
    assert offer is not None and offer["fba_fee"] is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"referralFeePercentage": 12.5}, 12.5),
        ({"referralFeePercentage": 8}, 8.0),
        ({"referralFeePercentage": None}, None),
        ({"referralFeePercentage": 0}, None),
        ({"referralFeePercentage": -1}, None),
        ({"referralFeePercentage": 150}, None),
        ({"referralFeePercentage": None, "referralFeePercent": 7}, 7.0),  # deprecated name
        ({"referralFeePercentage": True}, None),
    ],
)
def test_referral_fee(fields: dict[str, Any], expected: float | None) -> None:
    raw = product()
    raw.update(fields)
    offer = parse_product(raw, "DE")
    assert offer is not None and offer["referral_fee_pct"] == expected


@pytest.mark.parametrize("minutes", [0, -1, None, "x"])
def test_unknown_last_update_is_none(minutes: Any) -> None:
    offer = parse_product(product(lastUpdate=minutes), "DE")
    assert offer is not None and offer["last_update"] is None


def test_root_category_zero_means_unknown() -> None:
    offer = parse_product(product(rootCategory=0), "DE")
    assert offer is not None and offer["root_category"] is None


@pytest.mark.parametrize(
    "raw",
    [
        {"asin": "B0TEST0001", "domainId": 3},
        {"asin": "B0TEST0001", "domainId": 3, "title": "", "stats": None, "csv": None},
        {"asin": "B0TEST0001", "domainId": 3, "title": "   ", "stats": {"current": []}},
        {"asin": "B0TEST0001", "domainId": 3, "title": "Something", "productType": 4},
    ],
    ids=["bare", "empty-title-no-stats", "blank-title-empty-current", "type-invalid"],
)
def test_placeholder_objects_have_no_data(raw: dict[str, Any]) -> None:
    assert not has_product_data(raw)
    assert parse_product(raw, "DE") is None


def test_stats_without_title_still_counts_as_data() -> None:
    raw = product(title=None)
    assert has_product_data(raw)
    assert parse_product(raw, "DE") is not None


# --------------------------------------------------------------------------- title/package/category


def test_extract_title_trims_and_caps() -> None:
    assert extract_title(product(title="  A kettle  ")) == "A kettle"
    assert extract_title(product(title=None)) is None
    assert extract_title(product(title="x" * (MAX_TITLE_CHARS + 50))) == "x" * MAX_TITLE_CHARS


def test_extract_package_treats_zero_and_minus_one_as_unknown() -> None:
    assert extract_package(product()) == {
        "weight_g": 1250,
        "length_mm": 300,
        "width_mm": 200,
        "height_mm": 150,
    }
    unknown = product(packageWeight=-1, packageLength=0, packageWidth=None, packageHeight=10**7)
    assert extract_package(unknown) == {
        "weight_g": None,
        "length_mm": None,
        "width_mm": None,
        "height_mm": None,
    }


def test_extract_category_names_the_root() -> None:
    assert extract_category(product()) == {"root_id": 3167641, "name": "Küche, Haushalt & Wohnen"}
    # The tree may not list the root id; its first entry is then the best name there is.
    other = product(rootCategory=999, categoryTree=[{"catId": 1, "name": "Top"}])
    assert extract_category(other) == {"root_id": 999, "name": "Top"}
    assert extract_category(product(rootCategory=0, categoryTree=None)) == {
        "root_id": None,
        "name": None,
    }


# --------------------------------------------------------------------------- merge


def per_market_products(asin: str = "B0TEST0001") -> dict[str, dict[str, Any]]:
    return {
        "DE": product(asin, 3),
        "FR": product(asin, 4, stats={"current": current(new=2599, sales=800, buy_box=-1)}),
        "GB": product(asin, 2, stats={"current": current(amazon=-1, new=-1, buy_box=-2)}),
    }


def test_merge_builds_one_valid_raw_update() -> None:
    update = merge_market_products("b0test0001", per_market_products(), PULLED_AT, "keepa")
    assert validate_raw_update(update) == update
    assert update["asin"] == "B0TEST0001"
    assert update["domain_id"] == 3
    assert update["current_prices"] == {"DE": 2999, "FR": 2599, "GB": -1}
    assert list(update["markets"]) == ["DE", "FR", "GB"]
    assert update["timestamp"] == format_utc(PULLED_AT) == "2026-11-26T10:15:00.000Z"
    assert update["source"] == "keepa"
    assert update["schema_version"] == 1
    assert update["package"]["weight_g"] == 1250
    assert update["category"] == {"root_id": 3167641, "name": "Küche, Haushalt & Wohnen"}


def test_home_market_is_the_first_in_order_that_has_data() -> None:
    products = per_market_products()
    products["DE"] = {"asin": "B0TEST0001", "domainId": 3, "title": None, "stats": None}
    products["FR"]["title"] = "Bouilloire"
    update = merge_market_products(
        "B0TEST0001", products, PULLED_AT, "sample", market_order=("DE", "FR", "GB")
    )
    assert update["domain_id"] == 4
    assert "DE" not in update["markets"] and "DE" not in update["current_prices"]
    assert update["title"] == "Bouilloire"
    update_gb_first = merge_market_products(
        "B0TEST0001", per_market_products(), PULLED_AT, "sample", market_order=("GB", "DE")
    )
    assert update_gb_first["domain_id"] == 2
    # FR was not ranked but has data: it comes last, not dropped.
    assert list(update_gb_first["markets"]) == ["GB", "DE", "FR"]


def test_title_package_category_fall_back_to_other_markets() -> None:
    products = per_market_products()
    products["DE"].update(
        title=None,
        packageWeight=-1,
        packageLength=0,
        packageWidth=0,
        packageHeight=0,
        rootCategory=0,
        categoryTree=None,
    )
    products["FR"].update(
        title="Bouilloire",
        rootCategory=57004031,
        categoryTree=[{"catId": 57004031, "name": "Cuisine & Maison"}],
    )
    update = merge_market_products("B0TEST0001", products, PULLED_AT, "keepa")
    assert update["domain_id"] == 3
    assert update["title"] == "Bouilloire"
    assert update["package"]["weight_g"] == 1250  # FR's package
    assert update["category"] == {"root_id": 57004031, "name": "Cuisine & Maison"}
    assert validate_raw_update(update) == update


def test_no_title_anywhere_gives_an_empty_title() -> None:
    products = {code: dict(p, title=None) for code, p in per_market_products().items()}
    update = merge_market_products("B0TEST0001", products, PULLED_AT, "keepa")
    assert update["title"] == ""
    validate_raw_update(update)


def test_merge_without_data_raises() -> None:
    placeholder = {"asin": "B0TEST0001", "domainId": 3, "title": None, "stats": None}
    with pytest.raises(ValueError, match="no data for B0TEST0001"):
        merge_market_products("B0TEST0001", {"DE": placeholder}, PULLED_AT, "keepa")
    with pytest.raises(ValueError, match="no data"):
        merge_market_products("B0TEST0001", {}, PULLED_AT, "keepa")


def test_merge_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not an ASIN"):
        merge_market_products("B00X", per_market_products(), PULLED_AT, "keepa")
    with pytest.raises(ValueError, match="source"):
        merge_market_products("B0TEST0001", per_market_products(), PULLED_AT, "live")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown marketplace"):
        merge_market_products("B0TEST0001", {"US": product()}, PULLED_AT, "keepa")


def test_merge_does_not_modify_its_input() -> None:
    products = per_market_products()
    before = copy.deepcopy(products)
    merge_market_products("B0TEST0001", products, PULLED_AT, "keepa")
    assert products == before


_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
_PRICE_LIKE = st.one_of(st.integers(min_value=-5, max_value=20_000_000), _ANY_VALUE)


@st.composite
def keepa_products(draw: st.DrawFn, domain_id: int) -> dict[str, Any]:
    raw: dict[str, Any] = {"asin": "B0PROP0001", "domainId": domain_id}
    raw["title"] = draw(st.one_of(st.none(), st.text(max_size=30), st.just("x" * 2500)))
    fields = (
        "rootCategory",
        "packageWeight",
        "packageLength",
        "packageWidth",
        "packageHeight",
        "referralFeePercentage",
        "referralFeePercent",
        "lastUpdate",
        "productType",
    )
    for name in fields:
        if draw(st.booleans()):
            raw[name] = draw(_ANY_VALUE)
    if draw(st.booleans()):
        raw["fbaFees"] = draw(
            st.one_of(_ANY_VALUE, st.fixed_dictionaries({"pickAndPackFee": _PRICE_LIKE}))
        )
    if draw(st.booleans()):
        raw["categoryTree"] = draw(
            st.one_of(
                _ANY_VALUE,
                st.lists(
                    st.fixed_dictionaries({"catId": _ANY_VALUE, "name": _ANY_VALUE}), max_size=3
                ),
            )
        )
    raw["stats"] = draw(
        st.one_of(
            _ANY_VALUE,
            st.fixed_dictionaries({"current": st.lists(_PRICE_LIKE, max_size=40)}),
        )
    )
    return raw


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(de=keepa_products(3), gb=keepa_products(2))
def test_any_keepa_product_merges_into_a_valid_raw_update(
    de: dict[str, Any], gb: dict[str, Any]
) -> None:
    """Whatever Keepa sends, a merged update either validates or there was no data at all."""
    per_market = {"DE": de, "GB": gb}
    if not (has_product_data(de) or has_product_data(gb)):
        with pytest.raises(ValueError):
            merge_market_products("B0PROP0001", per_market, PULLED_AT, "keepa")
        return
    update = merge_market_products("B0PROP0001", per_market, PULLED_AT, "keepa")
    assert validate_raw_update(update) == update
    for code, offer in update["markets"].items():
        assert update["current_prices"][code] in {offer["buy_box"], offer["new"], -1}


# --------------------------------------------------------------------------- response body


def test_parse_product_response_skips_placeholders_and_junk() -> None:
    body = {
        "tokensLeft": 1200,
        "products": [
            product("B0TEST0001"),
            {"asin": "B0TEST0002", "domainId": 3, "title": None, "stats": None},
            "junk",
            {"title": "no asin"},
            product("b0test0003"),
        ],
    }
    found = parse_product_response(body, "DE")
    assert [asin for asin, _ in found] == ["B0TEST0001", "B0TEST0003"]


@pytest.mark.parametrize("body", [{}, {"products": None}, {"products": []}, {"products": {}}])
def test_parse_product_response_without_products(body: dict[str, Any]) -> None:
    assert parse_product_response(body, "FR") == []


def test_parse_product_response_rejects_another_domain() -> None:
    with pytest.raises(ValueError, match=r"domain 4.*DE"):
        parse_product_response({"products": [product(domain_id=4)]}, "DE")


def test_token_info_and_error() -> None:
    body = {"tokensLeft": 17, "refillIn": 4500, "refillRate": 20, "tokensConsumed": 300}
    info = token_info(body)
    assert (info.tokens_left, info.refill_in_ms, info.refill_rate, info.tokens_consumed) == (
        17,
        4500,
        20,
        300,
    )
    assert token_info({}).tokens_consumed == 0 and token_info({}).tokens_left is None
    assert response_error(body) is None
    assert response_error({"error": None}) is None
    error = {"type": "REQUEST_REJECTED", "message": "Invalid ASIN", "details": None}
    assert response_error({"error": error}) == "REQUEST_REJECTED: Invalid ASIN"


# --------------------------------------------------------------------------- ASIN list


def test_read_asin_list() -> None:
    text = "\n".join(
        [
            "# my watch list",
            "B0TEST0001",
            "  b0test0002  ",
            "",
            "B0TEST0001",
            "B0TEST0003  # the kettle",
            "   # indented comment",
            "B00X",
            "B0TEST00045",
            "B0TEST-004",
        ]
    )
    asins, problems = read_asin_list(text)
    assert asins == ["B0TEST0001", "B0TEST0002", "B0TEST0003"]
    assert problems == [
        "line 8: 'B00X' is not an ASIN (10 characters A-Z, 0-9)",
        "line 9: 'B0TE'… (11 characters) is not an ASIN (10 characters A-Z, 0-9)",
        "line 10: 'B0TE'… (10 characters) is not an ASIN (10 characters A-Z, 0-9)",
    ]


def test_read_empty_asin_list() -> None:
    assert read_asin_list("") == ([], [])
    assert read_asin_list("# nothing\n\n") == ([], [])


def test_chunked() -> None:
    items = [f"B0TEST{i:04d}" for i in range(250)]
    assert [len(c) for c in chunked(items)] == [100, 100, 50]
    assert list(chunked([], 100)) == []
    with pytest.raises(ValueError):
        list(chunked(items, 0))
