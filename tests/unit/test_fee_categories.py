"""Fee model v2's category keys (config/fees_v2.toml [categories]): each store's own root
category ids find their referral schedule and category default, in the vectorised model and in
the plain formulas alike, on hand-built products and on every entry of the bundled sample."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import REPO_ROOT, FeeConfigError, load_fee_config
from arbitrage.domain.fee_model import MARKET_CODES, evaluate_route, market_matrix
from arbitrage.domain.keepa_parsing import merge_market_products, parse_product_response
from arbitrage.domain.keepa_sample import load_sample_document
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.validation import parse_raw_update
from tests.factories import enriched, offer
from tools.sample_catalog import CATEGORIES
from tools.sample_generator import DEFAULT_PULLED_AT

V1 = load_fee_config(REPO_ROOT / "config" / "fees_v1.toml")
V2 = load_fee_config(REPO_ROOT / "config" / "fees_v2.toml")
assert V2.v2 is not None
RULES = V2.v2
SAMPLE = REPO_ROOT / "data" / "sample" / "keepa_sample.json.gz"

ELECTRONICS = "Consumer electronics"
COMPUTERS = "Computers"
HOME = "Home and Kitchen"
DIY = "DIY & Tools"
BEAUTY_HEALTH_BABY = "Beauty, Health & Personal Care, Baby"
BOOKS = "Books"
CAR = "Car & Motorbike"

# Amazon's root browse node of each category in each store, as Keepa reports rootCategory
# (written out here, not read from the config, so a wrong or missing table entry fails).
REAL_ROOTS: dict[str, dict[str, int]] = {
    ELECTRONICS: {"DE": 562066, "FR": 13921051, "IT": 412609031, "ES": 599370031, "GB": 560798},
    COMPUTERS: {
        "DE": 340843031,
        "FR": 340858031,
        "IT": 425916031,
        "ES": 667049031,
        "GB": 340831031,
    },
    HOME: {"DE": 3167641, "FR": 57004031, "IT": 524015031, "ES": 599391031, "GB": 11052681},
    DIY: {"DE": 80084031, "FR": 590748031, "IT": 2454160031, "ES": 2454133031, "GB": 79903031},
    BEAUTY_HEALTH_BABY: {
        "DE": 84230031,
        "FR": 197858031,
        "IT": 6198082031,
        "ES": 6198054031,
        "GB": 117332031,
    },
    BOOKS: {"DE": 186606, "FR": 301061, "IT": 411663031, "ES": 599364031, "GB": 266239},
    CAR: {"DE": 78191031, "FR": 1571265031, "IT": 1571280031, "ES": 1951051031, "GB": 248877031},
}
# Health & personal care and baby share the beauty schedule (Amazon's 2019 change names all
# three).
HEALTH = {"DE": 64187031, "FR": 197861031, "IT": 1571289031, "ES": 3677430031, "GB": 65801031}
BABY = {"DE": 355007011, "FR": 206617031, "IT": 1571286031, "ES": 1703495031, "GB": 59624031}
# Categories without a schedule (the flat Keepa percentage applies).
TOYS = {"DE": 12950651, "FR": 322086011, "IT": 523997031, "ES": 599385031, "GB": 468292}
CASES = [
    (name, market, root)
    for name, roots in [
        *REAL_ROOTS.items(),
        (BEAUTY_HEALTH_BABY, HEALTH),
        (BEAUTY_HEALTH_BABY, BABY),
        (None, TOYS),
    ]
    for market, root in roots.items()
]


def schedule_name(index: int) -> str | None:
    return None if index < 0 else RULES.schedules[index].name


def sold_in(market: str, root: int | None, price: int = 8000, **fields: Any) -> Any:
    """A product bought on the cheapest other store and sold in ``market`` under ``root``."""
    buy = "DE" if market != "DE" else "FR"
    return enriched(
        V2,
        markets={
            buy: offer(buy, new=1000, fba_fee=280),
            market: offer(market, buy_box=price, root_category=root, **fields),
        },
        weight_g=400,
    )


@pytest.mark.parametrize(("name", "market", "root"), CASES)
def test_each_stores_own_root_id_finds_its_schedule(
    name: str | None, market: str, root: int
) -> None:
    product = sold_in(market, root)
    matrix = market_matrix([product], V2)
    assert matrix.schedule is not None
    assert schedule_name(int(matrix.schedule[0, MARKET_CODES.index(market)])) == name
    assert schedule_name(RULES.schedule_for(RULES.category_key(market, root, None))) == name


@pytest.mark.parametrize("market", ["FR", "IT", "ES", "GB"])
def test_a_sale_outside_amazon_de_is_charged_its_schedule(market: str) -> None:
    # Car & Motorbike in the store's own id: 15 % up to 50 €/£45, 9 % above, as on amazon.de;
    # on the old DE-only table these sales took Keepa's flat 15 % (1500 for 100.00).
    product = sold_in(market, REAL_ROOTS[CAR][market], price=10000, referral_fee_pct=15)
    plain = evaluate_route(product, "DE", market, V2)
    assert plain is not None
    threshold = 4500 if market == "GB" else 5000
    expected = 15 * threshold + 9 * (10000 - threshold)  # minor units × 100
    fx = V2.fx("GBP" if market == "GB" else "EUR")
    assert plain.referral_fee == round(fx * expected / 100)
    assert plain.referral_fee < round(fx * 1500)


def test_an_id_of_another_store_or_of_no_table_takes_the_flat_rate() -> None:
    # amazon.de's books id on amazon.fr's offer: not amazon.fr's, so no schedule there; an id
    # no table has: none either. Both: Keepa's flat 12 %, the general minimum, no closing fee.
    for root in (BOOKS_DE := REAL_ROOTS[BOOKS]["DE"], 999_999_937):
        plain = evaluate_route(sold_in("FR", root, price=200, referral_fee_pct=12), "DE", "FR", V2)
        assert plain is not None
        assert plain.closing_fee == 0
        assert plain.referral_fee == RULES.referral_min_fee_minor["FR"] == 30  # 12 % × 2 € < 0.30
    # The product's own root (here amazon.de's) stands in where the market names none.
    product = sold_in("FR", None, price=2000)
    product["category"]["root_id"] = BOOKS_DE
    plain = evaluate_route(product, "DE", "FR", V2)
    assert plain is not None and plain.closing_fee == 101


def test_category_default_by_key_in_v2_and_by_amazon_de_id_in_v1() -> None:
    # No Keepa percentage on amazon.fr's electronics: v2 finds the electronics default (7 %)
    # through amazon.fr's own id; v1 keys its defaults by amazon.de ids, unchanged.
    def pct(config: Any, root: int) -> tuple[int, str]:
        product = enriched(
            config,
            markets={
                "DE": offer("DE", new=1000),
                "FR": offer("FR", buy_box=8000, referral_fee_pct=None, root_category=root),
            },
        )
        market = product["markets"]["FR"]
        return market["referral_pct_x100"], market["referral_pct_source"]

    assert pct(V2, REAL_ROOTS[ELECTRONICS]["FR"]) == (700, "category_default")
    assert pct(V2, REAL_ROOTS[ELECTRONICS]["DE"]) == (1500, "fallback")  # not amazon.fr's
    assert pct(V1, REAL_ROOTS[ELECTRONICS]["FR"]) == (1500, "fallback")
    assert pct(V1, REAL_ROOTS[ELECTRONICS]["DE"]) == (700, "category_default")


# --------------------------------------------------------------------------- bundled sample

# The sample catalog's categories and the schedule each must find (None: Amazon has none).
SAMPLE_SCHEDULES = {
    "electronics": ELECTRONICS,
    "computers": COMPUTERS,
    "kitchen": HOME,
    "tools": DIY,
    "beauty": BEAUTY_HEALTH_BABY,
    "toys": None,
    "sports": None,
    "office": None,
}


def sample_products() -> list[Any]:
    document = load_sample_document(SAMPLE)
    found: dict[str, dict[str, Any]] = {}
    for market, body in document["markets"].items():
        for asin, product in parse_product_response(body, market):
            found.setdefault(asin, {})[market] = product
    return [
        enrich(
            parse_raw_update(encode(merge_market_products(asin, per, DEFAULT_PULLED_AT, "sample"))),
            V2,
        )
        for asin, per in found.items()
    ]


def test_every_sample_sale_finds_its_schedule_in_every_store() -> None:
    assert set(SAMPLE_SCHEDULES) == {category.key for category in CATEGORIES}
    category_of = {
        (market, root): category.key
        for category in CATEGORIES
        for market, (root, _) in category.roots.items()
    }
    products = sample_products()
    matrix = market_matrix(products, V2)
    assert matrix.schedule is not None
    found, scheduled = Counter(), Counter()
    for row, product in enumerate(products):
        for market, sale in product["markets"].items():
            expected = SAMPLE_SCHEDULES[category_of[market, sale["root_category"]]]
            got = schedule_name(int(matrix.schedule[row, MARKET_CODES.index(market)]))
            assert got == expected, (product["asin"], market, sale["root_category"])
            scheduled[market] += expected is not None
            found[market] += got is not None
    assert found == scheduled
    # Counted on the bundled sample (docs/fees.md, "Fee model v2"): before the category keys, only
    # amazon.de's 309 found a schedule.
    assert dict(found) == {"DE": 309, "FR": 305, "IT": 306, "ES": 308, "GB": 307}


# --------------------------------------------------------------------------- the file's checks


def load_with(old: str, new: str) -> Any:
    text = Path(V2.path).read_text(encoding="utf-8")
    assert old in text
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fees.toml"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        return load_fee_config(path)


def test_the_file_refuses_unknown_keys_and_an_id_with_two_keys() -> None:
    with pytest.raises(FeeConfigError, match="no \\[categories\\] table maps"):
        load_with('categories = ["automotive"]', 'categories = ["car"]')
    with pytest.raises(FeeConfigError, match="no category key"):
        load_with('diy_tools = "12"', 'tools = "12"')
    with pytest.raises(FeeConfigError, match="category id 562066 has two keys"):
        load_with('468292 = "toys"', '562066 = "toys"')
    with pytest.raises(FeeConfigError, match="must name its source"):
        load_with('[categories.IT]\nsource = "', '[categories.IT]\nnote = "')


def test_every_store_has_a_table_with_a_source_and_every_schedule_key_in_each() -> None:
    for market in MARKET_CODES:
        keys = set(RULES.category_keys[market].values())
        for schedule in RULES.schedules:
            assert set(schedule.categories) <= keys, (market, schedule.name)
