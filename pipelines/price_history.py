"""Price observations: what an enriched product says each market's prices were at its pull.

The enrichment stage indexes them beside the product (engine/processors.py), one document per
(ASIN, market, pull time); the opportunities page draws them (web/). The id is built from those
three, so a replay or a rerun of the same pull finds its documents already there (``create``
answers 409) and never stores a second copy. Only what a chart needs is kept.
"""

from __future__ import annotations

from typing import TypedDict

from pipelines.messages.types import EnrichedProduct


class PriceObservation(TypedDict):
    asin: str
    market: str
    observed_at: int  # the Keepa pull time, epoch ms
    currency: str
    buy_price: int | None  # minor units of ``currency`` (pipelines/enrichment.py buy_price)
    sell_price: int | None
    buy_price_eur_cents: int | None
    sell_price_eur_cents: int | None


def observation_id(asin: str, market: str, observed_at_ms: int) -> str:
    """``B0…:DE:1764151200000``: one document per ASIN, market and pull."""
    return f"{asin}:{market}:{observed_at_ms}"


def observations(product: EnrichedProduct) -> list[tuple[str, PriceObservation]]:
    """(id, document) per market with a buy or a sell price; markets without either are left
    out (Keepa had no offer: nothing to draw)."""
    found: list[tuple[str, PriceObservation]] = []
    pulled_at = product["source_timestamp_ms"]
    for code, market in product["markets"].items():
        if market["buy_price"] is None and market["sell_price"] is None:
            continue
        found.append(
            (
                observation_id(product["asin"], code, pulled_at),
                {
                    "asin": product["asin"],
                    "market": code,
                    "observed_at": pulled_at,
                    "currency": market["currency"],
                    "buy_price": market["buy_price"],
                    "sell_price": market["sell_price"],
                    "buy_price_eur_cents": market["buy_price_eur_cents"],
                    "sell_price_eur_cents": market["sell_price_eur_cents"],
                },
            )
        )
    return found
