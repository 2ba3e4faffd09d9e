"""Deterministic Keepa ``/product`` response bodies for demos and tests (no API key needed).

Each body has the shape Keepa's API sends (``timestamp``, ``tokensLeft``, ``refillIn``,
``refillRate``, ``tokenFlowReduction``, ``tokensConsumed``, ``processingTimeInMs``, ``products``),
and each product object the fields the pipeline reads, so the sample runs through the same
parsing as the live API. Everything comes from one seeded ``random.Random``: the same seed gives
the same bytes. Products are generated one at a time, so 100 000+ can be streamed in batches.

What it draws from, and how often each edge case occurs: tools/sample_catalog.py.

CLI: ``python -m tools.sample_generator --products 500 --out data/sample/keepa_sample.json.gz``
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import math
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arbitrage.domain.keepa_parsing import (
    MAX_ASINS_PER_REQUEST,
    product_token_cost,
    utc_to_keepa_minutes,
)
from arbitrage.domain.markets import DEFAULT_MARKETS, MARKETPLACES
from arbitrage.domain.messages.timestamps import format_utc, parse_utc
from tools.sample_catalog import (
    ADJECTIVES,
    BRANDS,
    CATEGORIES,
    COLOURS,
    EDGE_CASE_KINDS,
    EUR_PER_GBP,
    MAX_PRICE_EUR_CENTS,
    MAX_SALES_RANK,
    MIN_PRICE_EUR_CENTS,
    SIGNAL_ARCHETYPES,
    EdgeCaseRates,
    SignalArchetypeRates,
)
from tools.sample_signals import add_statistics

DEFAULT_SEED = 20261126
# A fixed pull time keeps the output byte-identical run after run.
DEFAULT_PULLED_AT = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
DEFAULT_OUT = Path("data/sample/keepa_sample.json.gz")
GENERATED_BY = "tools.sample_generator v2"
SAMPLE_MARKETS: tuple[str, ...] = DEFAULT_MARKETS
# stats.current has one entry per Product.CsvType (AMAZON … COUNT_NEW_FBM).
CURRENT_LENGTH = 36
# Keepa charges 1 token per product plus 2 for the buybox parameter (stats is free).
TOKENS_PER_PRODUCT = product_token_cost(stats=True, buybox=True)
_ASIN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass
class GeneratedProduct:
    """One ASIN's product objects per market, plus what was planted in it (for tests)."""

    asin: str
    per_market: dict[str, dict[str, Any]]  # absent markets are left out
    cheap_market: str | None = None  # set for a planted arbitrage opportunity
    edge_cases: list[tuple[str, str]] = field(default_factory=list)  # (kind, market)
    archetype: str = "steady"  # of its Keepa statistics (tools/sample_signals.py)
    spike_market: str | None = None  # for a spike: the market whose price spikes today


class _Generator:
    """Draws products in a fixed order from one ``random.Random``; never the global one."""

    def __init__(
        self,
        seed: int,
        pulled_at: datetime,
        markets: Sequence[str] = SAMPLE_MARKETS,
        rates: EdgeCaseRates | None = None,
        signal_rates: SignalArchetypeRates | None = None,
    ) -> None:
        unknown = [m for m in markets if m not in MARKETPLACES]
        if unknown:
            raise ValueError(f"unknown marketplace code(s): {', '.join(unknown)}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.signal_rates = signal_rates or SignalArchetypeRates()
        self.markets = tuple(markets)
        self.rates = rates or EdgeCaseRates()
        self.pulled_minutes = utc_to_keepa_minutes(pulled_at)
        self._asins: set[str] = set()

    # ------------------------------------------------------------------ draws

    def _asin(self) -> str:
        while True:
            asin = "B0" + "".join(self.rng.choices(_ASIN_CHARS, k=8))
            if asin not in self._asins:
                self._asins.add(asin)
                return asin

    def _log_uniform(self, low: float, high: float) -> float:
        return math.exp(self.rng.uniform(math.log(low), math.log(high)))

    def _to_market_minor(self, eur_cents: float, market: str) -> float:
        return eur_cents / EUR_PER_GBP if MARKETPLACES[market].currency == "GBP" else eur_cents

    def _shelf_price(self, minor: float, market: str, *, clamp: bool = True) -> int:
        if clamp:
            # Offers stay inside the advertised 5-300 EUR band (in the market's currency).
            low = self._to_market_minor(MIN_PRICE_EUR_CENTS, market)
            high = self._to_market_minor(MAX_PRICE_EUR_CENTS, market)
            minor = min(max(minor, low), high)
        # Shelf prices end in 9 (12.49, 23.99); never below 0.99.
        return max(99, round(minor / 10) * 10 - 1)

    # ------------------------------------------------------------------ one product

    def product(self) -> GeneratedProduct:
        rng, rates = self.rng, self.rates
        asin = self._asin()
        category = rng.choice(CATEGORIES)
        brand = rng.choice(BRANDS)
        noun = rng.choice(category.nouns)
        model = f"{brand[:2].upper()}-{rng.randint(100, 999)}"
        title = f"{brand} {rng.choice(ADJECTIVES)} {noun} {model}, {rng.choice(COLOURS)}"
        low, high = category.price_eur
        base = self._log_uniform(low * 100, high * 100)
        base = min(max(base, MIN_PRICE_EUR_CENTS), MAX_PRICE_EUR_CENTS)
        base_rank = self._log_uniform(1, MAX_SALES_RANK)
        is_arbitrage = rng.random() < rates.arbitrage
        weight = round(self._log_uniform(*category.weight_g))
        if is_arbitrage:
            # Light enough that inbound shipping does not eat the margin.
            weight = min(weight, rng.randint(150, 1_500))
        dims = sorted((rng.randint(40, 600) for _ in range(3)), reverse=True)
        # FBA pick & pack grows with weight: about 2 € for light items, capped at 8 €.
        fba_eur_cents = min(800, 200 + weight * 0.2 + rng.uniform(0, 60))
        has_amazon = rng.random() < 0.5

        generated = GeneratedProduct(asin=asin, per_market={})
        cheap_factor = 1.0
        if is_arbitrage:
            # Room for the fees: an opportunity only pays on items of some value.
            base = max(base, rng.uniform(6_000, 25_000))
            generated.cheap_market = rng.choice(self.markets)
            cheap_factor = rng.uniform(0.50, 0.62)
        # Planted opportunities stay clean, so each one is a clear positive for tests.
        absent = None
        placeholder = None
        if not is_arbitrage and rng.random() < rates.absent_market:
            absent = rng.choice(self.markets)
            generated.edge_cases.append(("absent_market", absent))
        if not is_arbitrage and rng.random() < rates.placeholder:
            placeholder = rng.choice([m for m in self.markets if m != absent])
            generated.edge_cases.append(("placeholder", placeholder))

        last_update = self.pulled_minutes - rng.randint(5, 720)
        for market in self.markets:
            if market == absent:
                continue
            domain_id = MARKETPLACES[market].keepa_domain_id
            if market == placeholder:
                generated.per_market[market] = _placeholder(asin, domain_id)
                continue
            noise = 1 + max(-0.08, min(0.08, rng.gauss(0, 0.035)))
            eur = base * noise
            rank = min(MAX_SALES_RANK, max(1, round(base_rank * math.exp(rng.gauss(0, 0.4)))))
            if is_arbitrage:
                if market == generated.cheap_market:
                    eur *= cheap_factor
                else:
                    rank = min(rank, rng.randint(300, 40_000))
            minor = self._to_market_minor(eur, market)
            amazon = (
                self._shelf_price(minor * rng.uniform(0.99, 1.04), market) if has_amazon else -1
            )
            third_party = self._shelf_price(minor * rng.uniform(0.96, 1.03), market)
            # Keepa's NEW includes Amazon's own offer when it is the lowest.
            new = min(third_party, amazon) if amazon > 0 else third_party
            shipping = 0 if rng.random() < 0.8 else rng.choice((299, 349, 499))
            buy_box_is_amazon = amazon > 0 and amazon <= third_party * 1.02
            buy_box_price = amazon if buy_box_is_amazon else third_party
            buy_box_shipping = 0 if buy_box_is_amazon else shipping
            offer_count = rng.randint(1, 30)
            referral: float | None = category.referral_pct
            fba: int | None = round(
                self._to_market_minor(fba_eur_cents * rng.uniform(0.97, 1.05), market)
            )

            if not is_arbitrage:
                if rng.random() < rates.out_of_stock:
                    amazon = new = -1
                    buy_box_price, buy_box_shipping, offer_count = -1, 0, 0
                    generated.edge_cases.append(("out_of_stock", market))
                elif rng.random() < rates.no_buy_box:
                    buy_box_price, buy_box_shipping = rng.choice((-1, -2)), 0
                    generated.edge_cases.append(("no_buy_box", market))
                if rng.random() < rates.no_fba_fees:
                    fba = None
                    generated.edge_cases.append(("no_fba_fees", market))
                if rng.random() < rates.no_referral_fee:
                    referral = None
                    generated.edge_cases.append(("no_referral_fee", market))
                if rng.random() < rates.unknown_sales_rank:
                    rank = -1
                    generated.edge_cases.append(("unknown_sales_rank", market))

            buy_box = buy_box_price + buy_box_shipping if buy_box_price > 0 else buy_box_price
            current = [-1] * CURRENT_LENGTH
            current[0] = amazon
            current[1] = new
            current[3] = rank
            list_price = self._shelf_price(minor * 1.25, market, clamp=False)
            current[4] = list_price if rng.random() < 0.4 else -1
            current[7] = third_party + shipping if new > 0 and shipping else -1
            current[10] = third_party if new > 0 and not shipping else -1
            current[11] = offer_count
            current[12] = rng.randint(0, 5)
            current[16] = rng.randint(30, 50)
            current[17] = rng.randint(0, 5000)
            current[18] = buy_box
            current[34] = offer_count // 2 if offer_count > 0 else 0
            current[35] = offer_count - current[34]
            generated.per_market[market] = {
                "asin": asin,
                "domainId": domain_id,
                "productType": 0,
                "title": title,
                "brand": brand,
                "rootCategory": category.roots[market][0],
                "categoryTree": [
                    {"catId": category.roots[market][0], "name": category.roots[market][1]}
                ],
                "packageWeight": weight,
                "packageLength": dims[0],
                "packageWidth": dims[1],
                "packageHeight": dims[2],
                "packageQuantity": 1,
                "referralFeePercentage": referral,
                "fbaFees": None if fba is None else {"pickAndPackFee": fba},
                "trackingSince": last_update - rng.randint(100_000, 3_000_000),
                "lastUpdate": last_update,
                "lastPriceChange": last_update - rng.randint(0, 20_000),
                "csv": None,
                "stats": {
                    "current": current,
                    "buyBoxPrice": buy_box_price,
                    "buyBoxShipping": buy_box_shipping,
                    "buyBoxIsAmazon": buy_box_is_amazon,
                    "buyBoxIsFBA": buy_box_price > 0 and buy_box_shipping == 0,
                    "totalOfferCount": offer_count + current[12],
                },
            }
        # Statistics come from a stream of their own, after the prices: see sample_signals.py.
        generated.archetype, generated.spike_market = add_statistics(
            generated.per_market, asin, self.seed, self.signal_rates
        )
        return generated


def _placeholder(asin: str, domain_id: int) -> dict[str, Any]:
    # What Keepa answers for an ASIN it has no data on in a marketplace: the id and nothing else.
    return {
        "asin": asin,
        "domainId": domain_id,
        "productType": 0,
        "title": None,
        "lastUpdate": 0,
        "csv": None,
        "stats": None,
    }


def iter_products(
    products: int,
    seed: int = DEFAULT_SEED,
    pulled_at: datetime | None = None,
    *,
    markets: Sequence[str] = SAMPLE_MARKETS,
    rates: EdgeCaseRates | None = None,
) -> Iterator[GeneratedProduct]:
    """Generate ``products`` products lazily; the first N are the same for any larger count."""
    if products < 0:
        raise ValueError("the number of products cannot be negative")
    generator = _Generator(seed, pulled_at or DEFAULT_PULLED_AT, markets, rates)
    for _ in range(products):
        yield generator.product()


def response_body(
    products: Sequence[dict[str, Any]],
    pulled_at: datetime,
    rng: random.Random,
    tokens_left: int,
) -> dict[str, Any]:
    """Wrap product objects in a Keepa ``/product`` response body."""
    return {
        "timestamp": int(pulled_at.timestamp() * 1000),
        "tokensLeft": tokens_left,
        "refillIn": rng.randint(1_000, 59_000),
        "refillRate": 20,
        "tokenFlowReduction": 0,
        "tokensConsumed": TOKENS_PER_PRODUCT * len(products),
        "processingTimeInMs": rng.randint(40, 900) + 5 * len(products),
        "products": list(products),
    }


def _bodies(
    batch: Sequence[GeneratedProduct],
    markets: Sequence[str],
    pulled_at: datetime,
    rng: random.Random,
) -> dict[str, dict[str, Any]]:
    bodies = {}
    for market in markets:
        objects = [p.per_market[market] for p in batch if market in p.per_market]
        bodies[market] = response_body(objects, pulled_at, rng, rng.randint(200, 6_000))
    return bodies


def iter_sample_batches(
    products: int,
    seed: int = DEFAULT_SEED,
    pulled_at: datetime | None = None,
    *,
    batch_size: int = MAX_ASINS_PER_REQUEST,
    markets: Sequence[str] = SAMPLE_MARKETS,
    rates: EdgeCaseRates | None = None,
) -> Iterator[dict[str, dict[str, Any]]]:
    """Streaming variant: one ``{market: response body}`` per batch of ``batch_size`` products.

    Memory stays flat for any count; the products are the same as ``generate_sample``'s.
    """
    moment = pulled_at or DEFAULT_PULLED_AT
    # Token figures come from their own stream so batching never changes the product data.
    meta_rng = random.Random(f"{seed}/response-metadata/{batch_size}")
    batch: list[GeneratedProduct] = []
    for product in iter_products(products, seed, moment, markets=markets, rates=rates):
        batch.append(product)
        if len(batch) == batch_size:
            yield _bodies(batch, markets, moment, meta_rng)
            batch = []
    if batch:
        yield _bodies(batch, markets, moment, meta_rng)


def generate_sample(
    products: int,
    seed: int = DEFAULT_SEED,
    pulled_at: datetime | None = None,
    *,
    markets: Sequence[str] = SAMPLE_MARKETS,
    rates: EdgeCaseRates | None = None,
) -> dict[str, dict[str, Any]]:
    """``{market: Keepa /product response body}`` holding every generated product."""
    return build_sample_document(products, seed, pulled_at, markets=markets, rates=rates)["markets"]


def build_sample_document(
    products: int,
    seed: int = DEFAULT_SEED,
    pulled_at: datetime | None = None,
    *,
    markets: Sequence[str] = SAMPLE_MARKETS,
    rates: EdgeCaseRates | None = None,
) -> dict[str, Any]:
    """The sample file's content: the bodies plus a manifest of what was planted."""
    moment = pulled_at or DEFAULT_PULLED_AT
    generated = list(iter_products(products, seed, moment, markets=markets, rates=rates))
    meta_rng = random.Random(f"{seed}/response-metadata/all")
    edge_cases: dict[str, list[str]] = {kind: [] for kind in EDGE_CASE_KINDS}
    archetypes: dict[str, list[str]] = {kind: [] for kind in SIGNAL_ARCHETYPES}
    for product in generated:
        for kind, market in product.edge_cases:
            edge_cases[kind].append(f"{product.asin}/{market}")
        where = f"/{product.spike_market}" if product.spike_market else ""
        archetypes[product.archetype].append(product.asin + where)
    return {
        "generated_by": GENERATED_BY,
        "seed": seed,
        "products": products,
        "pulled_at": format_utc(moment),
        "asins": [p.asin for p in generated],
        "arbitrage_seeds": [
            {"asin": p.asin, "cheap_market": p.cheap_market} for p in generated if p.cheap_market
        ],
        "edge_cases": edge_cases,
        "signal_archetypes": archetypes,
        "markets": _bodies(generated, markets, moment, meta_rng),
    }


def encode_sample_document(document: dict[str, Any]) -> bytes:
    """Gzip JSON with a zero mtime and no file name, so equal documents are equal bytes."""
    raw = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    return buffer.getvalue()


def asin_list_text(asins: Sequence[str], header: str) -> str:
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    return "\n".join([*lines, *asins]) + "\n"


def _default_header(products: int, seed: int, out: Path) -> str:
    return (
        f"ASINs of the bundled Keepa sample ({products} products, seed {seed}, {out}).\n"
        "Regenerate: python -m tools.sample_generator "
        f"--products {products} --seed {seed} --out {out}\n"
        "One ASIN per line; '#' starts a comment. This is the default list of the keepa_pull job."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.sample_generator",
        description="Write a deterministic Keepa /product sample (gzip JSON) and its ASIN list.",
    )
    parser.add_argument("--products", type=int, default=500, help="number of products")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the .json.gz to write")
    parser.add_argument(
        "--asins-out", type=Path, default=None, help="ASIN list to write (default: OUT's folder)"
    )
    parser.add_argument(
        "--pulled-at",
        default=format_utc(DEFAULT_PULLED_AT),
        help="pull time of the sample, ISO-8601 UTC (default keeps the output byte-identical)",
    )
    args = parser.parse_args(argv)
    if args.products < 1:
        parser.error("--products must be at least 1")
    try:
        pulled_at = parse_utc(args.pulled_at)
    except ValueError:
        parser.error(f"--pulled-at {args.pulled_at!r} is not an ISO-8601 UTC time")

    document = build_sample_document(args.products, args.seed, pulled_at)
    data = encode_sample_document(document)
    asins_out = args.asins_out or args.out.parent / "asins.txt"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    asins_out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    header = _default_header(args.products, args.seed, args.out)
    asins_out.write_text(asin_list_text(document["asins"], header), encoding="utf-8")
    planted = sum(len(v) for v in document["edge_cases"].values())
    print(
        f"wrote {args.out} ({len(data) / 1024:.0f} KiB, {args.products} products, "
        f"{len(document['arbitrage_seeds'])} arbitrage seeds, {planted} edge cases) "
        f"and {asins_out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
