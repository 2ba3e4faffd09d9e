"""The deterministic Keepa sample (tools.sample_generator) and the bundled files."""

from __future__ import annotations

import copy
import gzip
import json
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from arbitrage.domain.keepa_parsing import (
    merge_market_products,
    parse_product_response,
    read_asin_list,
)
from arbitrage.domain.keepa_sample import load_sample_document
from arbitrage.domain.markets import DEFAULT_MARKETS, MARKETPLACES
from arbitrage.domain.messages.types import ASIN_PATTERN
from arbitrage.domain.messages.validation import validate_raw_update
from tools import sample_signals
from tools.sample_catalog import EDGE_CASE_KINDS, EUR_PER_GBP, SIGNAL_ARCHETYPES
from tools.sample_generator import (
    DEFAULT_PULLED_AT,
    DEFAULT_SEED,
    build_sample_document,
    encode_sample_document,
    generate_sample,
    iter_products,
    iter_sample_batches,
    main,
)

REPO = Path(__file__).resolve().parents[2]
BUNDLED_SAMPLE = REPO / "data" / "sample" / "keepa_sample.json.gz"
BODY_KEYS = {
    "timestamp",
    "tokensLeft",
    "refillIn",
    "refillRate",
    "tokenFlowReduction",
    "tokensConsumed",
    "processingTimeInMs",
    "products",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_sample_document(500)


def products_of(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for market, body in document["markets"].items():
        for product in body["products"]:
            yield market, product


def current_of(product: dict[str, Any]) -> list[int]:
    return product["stats"]["current"]


def merged_updates(bodies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    per_asin: dict[str, dict[str, dict[str, Any]]] = {}
    for market, body in bodies.items():
        for asin, product in parse_product_response(body, market):
            per_asin.setdefault(asin, {})[market] = product
    return {
        asin: merge_market_products(asin, found, DEFAULT_PULLED_AT, "sample")
        for asin, found in per_asin.items()
    }


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_bytes() -> None:
    first = encode_sample_document(build_sample_document(80, seed=7))
    second = encode_sample_document(build_sample_document(80, seed=7))
    assert first == second
    assert encode_sample_document(build_sample_document(80, seed=8)) != first


def test_the_first_products_do_not_depend_on_the_count() -> None:
    few = [p.per_market for p in iter_products(20, seed=3)]
    many = [p.per_market for p in iter_products(60, seed=3)]
    assert few == many[:20]


def test_streaming_batches_hold_the_same_products() -> None:
    whole = generate_sample(230, seed=11)
    batches = list(iter_sample_batches(230, seed=11, batch_size=100))
    assert len(batches) == 3
    for market in DEFAULT_MARKETS:
        streamed = [p for batch in batches for p in batch[market]["products"]]
        assert streamed == whole[market]["products"]
        assert all(len(batch[market]["products"]) <= 100 for batch in batches)


def test_bundled_sample_is_what_the_generator_makes() -> None:
    """The committed file must be regenerated whenever the generator changes."""
    # ~230 KiB of prices plus ~240 KiB of Keepa statistics (averages, buy box statistics).
    assert BUNDLED_SAMPLE.stat().st_size < 512 * 1024
    expected = encode_sample_document(build_sample_document(500, DEFAULT_SEED))
    assert BUNDLED_SAMPLE.read_bytes() == expected, (
        "data/sample/keepa_sample.json.gz is stale; run python -m tools.sample_generator "
        "--products 500 --out data/sample/keepa_sample.json.gz and copy asins.txt to data/"
    )


@pytest.mark.parametrize("name", ["data/asins.txt", "data/sample/asins.txt"])
def test_bundled_asin_lists_match_the_sample(name: str) -> None:
    asins, problems = read_asin_list((REPO / name).read_text(encoding="utf-8"))
    assert problems == []
    assert asins == load_sample_document(BUNDLED_SAMPLE)["asins"]
    assert len(asins) == 500


# --------------------------------------------------------------------------- format


def test_bodies_have_keepas_shape(document: dict[str, Any]) -> None:
    assert set(document["markets"]) == set(DEFAULT_MARKETS)
    for market, body in document["markets"].items():
        assert set(body) == BODY_KEYS
        assert body["tokenFlowReduction"] == 0
        assert body["timestamp"] == int(DEFAULT_PULLED_AT.timestamp() * 1000)
        assert body["tokensConsumed"] == 3 * len(body["products"])
        for product in body["products"]:
            assert product["domainId"] == MARKETPLACES[market].keepa_domain_id
            assert product["csv"] is None
            if product["title"] is None:  # a placeholder: Keepa has no data there
                continue
            assert len(current_of(product)) >= 19
            assert {
                "asin",
                "title",
                "rootCategory",
                "categoryTree",
                "packageWeight",
                "packageLength",
                "packageWidth",
                "packageHeight",
                "referralFeePercentage",
                "fbaFees",
                "lastUpdate",
                "stats",
            } <= set(product)
            assert product["categoryTree"][0]["catId"] == product["rootCategory"]


def test_asins_are_unique_and_well_formed(document: dict[str, Any]) -> None:
    asins = document["asins"]
    assert len(asins) == len(set(asins)) == 500
    assert all(ASIN_PATTERN.match(a) and a.startswith("B0") for a in asins)


def test_values_are_in_realistic_ranges(document: dict[str, Any]) -> None:
    for market, product in products_of(document):
        if product["title"] is None:
            continue
        current = current_of(product)
        scale = 1 / EUR_PER_GBP if market == "GB" else 1
        for price in (current[0], current[1]):
            # Shelf prices end in 9, which can move them a few cents past the band edges.
            assert price == -1 or 499 * scale - 10 <= price <= 30_000 * scale + 10
        assert current[3] == -1 or 1 <= current[3] <= 500_000
        referral = product["referralFeePercentage"]
        assert referral is None or 7 <= referral <= 15
        if product["fbaFees"] is not None:
            assert 190 * scale <= product["fbaFees"]["pickAndPackFee"] <= 850 * scale
        assert product["lastUpdate"] > 0


def test_gb_prices_are_pence_about_eur_divided_by_1_15(document: dict[str, Any]) -> None:
    by_asin: dict[str, dict[str, int]] = {}
    for market, product in products_of(document):
        if product["title"] is not None and current_of(product)[1] > 0:
            by_asin.setdefault(product["asin"], {})[market] = current_of(product)[1]
    ratios = [p["GB"] / p["DE"] for p in by_asin.values() if "GB" in p and "DE" in p]
    assert len(ratios) > 300
    assert statistics.median(ratios) == pytest.approx(1 / EUR_PER_GBP, rel=0.05)


# --------------------------------------------------------------------------- what is planted


def test_edge_cases_are_present_in_the_data(document: dict[str, Any]) -> None:
    """Counted from the product objects themselves, not from the generator's bookkeeping."""
    counts = dict.fromkeys(EDGE_CASE_KINDS, 0)
    for _market, product in products_of(document):
        if product["title"] is None:
            counts["placeholder"] += 1
            continue
        current = current_of(product)
        counts["out_of_stock"] += current[0] == -1 and current[1] == -1
        counts["no_buy_box"] += current[18] in (-1, -2) and current[1] > 0
        counts["no_fba_fees"] += product["fbaFees"] is None
        counts["no_referral_fee"] += product["referralFeePercentage"] is None
        counts["unknown_sales_rank"] += current[3] == -1
    counts["absent_market"] = sum(
        len(DEFAULT_MARKETS) - len(b) for b in _markets_per_asin(document).values()
    )
    listed = {kind: len(entries) for kind, entries in document["edge_cases"].items()}
    assert counts == listed
    for kind, count in counts.items():
        assert count >= 3, f"the 500-product sample should hold some {kind} cases"


def _markets_per_asin(document: dict[str, Any]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {asin: set() for asin in document["asins"]}
    for market, product in products_of(document):
        seen[product["asin"]].add(market)
    return seen


def test_arbitrage_seeds_have_one_clearly_cheaper_market(document: dict[str, Any]) -> None:
    seeds = document["arbitrage_seeds"]
    assert 0.05 * 500 <= len(seeds) <= 0.10 * 500
    updates = merged_updates(document["markets"])
    for seed in seeds:
        update = updates[seed["asin"]]
        cheap = seed["cheap_market"]
        eur = {
            code: price * (EUR_PER_GBP if code == "GB" else 1)
            for code, price in update["current_prices"].items()
        }
        others = [price for code, price in eur.items() if code != cheap]
        assert eur[cheap] <= 0.70 * statistics.median(others)
        for code, offer in update["markets"].items():
            if code != cheap:
                assert 0 < offer["sales_rank"] <= 40_000
                assert offer["buy_box"] > 0


# --------------------------------------------------------------------------- Keepa statistics

SIGNAL_STATS_KEYS = {
    "avg30",
    "avg90",
    "avg180",
    "salesRankDrops30",
    "salesRankDrops90",
    "outOfStockPercentage90",
    "buyBoxStats",
    "offerCountFBA",
    "offerCountFBM",
}


def test_signal_archetypes_are_present_in_the_data(document: dict[str, Any]) -> None:
    """Each archetype checked on the parsed signals, not on the generator's bookkeeping."""
    listed = document["signal_archetypes"]
    assert list(listed) == list(SIGNAL_ARCHETYPES)
    assert sum(len(entries) for entries in listed.values()) == 500
    for kind, entries in listed.items():
        assert len(entries) >= 25, f"the 500-product sample should hold {kind} listings"
    updates = merged_updates(document["markets"])

    for entry in listed["spike"]:  # today's sell price well above its 90-day average
        asin, market = entry.split("/")
        offer = updates[asin]["markets"][market]
        signals = offer["signals"]
        if offer["buy_box"] > 0:
            today, usual = offer["buy_box"], signals["buy_box_avg90"]
        else:
            today, usual = offer["new"], signals["new_avg90"]
        assert today >= 1.25 * usual
    for asin in listed["dead"]:  # few rank drops, out of stock much of the time
        for offer in updates[asin]["markets"].values():
            assert offer["signals"]["sales_rank_drops30"] in (None, 0, 1)
            assert offer["signals"]["new_oos_pct90"] >= 40
    for asin in listed["amazon_dominated"]:  # Amazon holds the buy box most of the time
        for offer in updates[asin]["markets"].values():
            assert 70 <= offer["signals"]["buy_box_amazon_pct"] <= 98
    for asin in listed["steady"]:
        for offer in updates[asin]["markets"].values():
            signals = offer["signals"]
            if offer["buy_box"] > 0 and signals["buy_box_avg90"] is not None:
                assert 0.9 <= offer["buy_box"] / signals["buy_box_avg90"] <= 1.1
            if offer["sales_rank"] > 0:
                assert signals["sales_rank_drops30"] >= 1
            assert signals["new_oos_pct90"] <= 70


def test_sample_statistics_hold_every_kind_of_no_data(document: dict[str, Any]) -> None:
    """Keepa's -1 / missing cases occur, and parse to None (never to 0)."""
    nones = dict.fromkeys(("buy_box_avg180", "buy_box_amazon_pct", "sales_rank_drops30"), 0)
    amazon_free = 0
    for update in merged_updates(document["markets"]).values():
        for offer in update["markets"].values():
            signals = offer["signals"]
            assert signals is not None
            for name in nones:
                nones[name] += signals[name] is None
            amazon_free += signals["amazon_avg90"] is None and offer["amazon"] < 0
    assert all(count >= 3 for count in nones.values()), nones
    assert amazon_free > 100  # items Amazon does not sell have no Amazon averages


def test_statistics_never_change_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    """They come from a stream of their own: other statistics, the very same prices."""
    before = [p.per_market for p in iter_products(60, seed=3)]
    monkeypatch.setattr(
        sample_signals, "archetype_rng", lambda seed, asin: sample_signals.random.Random(asin)
    )
    after = [p.per_market for p in iter_products(60, seed=3)]
    assert before != after

    def without_statistics(per_market: dict[str, Any]) -> dict[str, Any]:
        stripped = copy.deepcopy(per_market)
        for product in stripped.values():
            for key in SIGNAL_STATS_KEYS & set(product.get("stats") or {}):
                del product["stats"][key]
        return stripped

    assert [without_statistics(p) for p in before] == [without_statistics(p) for p in after]


def test_every_generated_product_merges_into_a_valid_raw_update(document: dict[str, Any]) -> None:
    updates = merged_updates(document["markets"])
    # Each product misses at most one market, so every ASIN has data somewhere.
    assert sorted(updates) == sorted(document["asins"])
    for update in updates.values():
        assert validate_raw_update(update) == update
    placeholders = {entry.split("/")[0] for entry in document["edge_cases"]["placeholder"]}
    for asin in placeholders:
        market = next(
            e.split("/")[1] for e in document["edge_cases"]["placeholder"] if e.startswith(asin)
        )
        assert market not in updates[asin]["markets"]


def test_other_market_lists_work() -> None:
    bodies = generate_sample(10, markets=("FR", "GB"))
    assert set(bodies) == {"FR", "GB"}
    with pytest.raises(ValueError, match="unknown"):
        generate_sample(1, markets=("US",))


# --------------------------------------------------------------------------- CLI


def test_cli_writes_the_sample_and_the_asin_list(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "sample" / "keepa.json.gz"
    pulled_at = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    assert (
        main(
            [
                "--products",
                "40",
                "--seed",
                "5",
                "--out",
                str(out),
                "--pulled-at",
                "2026-12-01T08:30:00Z",
            ]
        )
        == 0
    )
    assert "40 products" in capsys.readouterr().out
    with gzip.open(out, "rb") as handle:
        document = json.loads(handle.read())
    assert document["generated_by"].startswith("tools.sample_generator")
    assert (document["seed"], document["products"]) == (5, 40)
    assert document["pulled_at"] == "2026-12-01T08:30:00.000Z"
    assert document == json.loads(
        json.dumps(build_sample_document(40, seed=5, pulled_at=pulled_at))
    )
    text = (tmp_path / "sample" / "asins.txt").read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert read_asin_list(text) == (document["asins"], [])


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--products", "0", "--out", str(tmp_path / "x.json.gz")])
    with pytest.raises(SystemExit):
        main(["--pulled-at", "yesterday", "--out", str(tmp_path / "x.json.gz")])
