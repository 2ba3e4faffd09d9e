"""Price observations: what an enriched product says each market's prices were at its pull.

The enrichment stage indexes them beside the product (arbitrage/engine/processors.py), one document
per (ASIN, pull time) holding every market with a price; the opportunities page draws them
(arbitrage/web/). The id is built from the two, so a replay or a rerun of the same pull finds its
document already there (``create`` answers 409) and never stores a second copy. Only what a chart
needs is kept, and only the ASIN and the time are indexed: the prices are read from the document,
for one ASIN at a time (docs/decisions.md 33).
"""

from __future__ import annotations

from typing import TypedDict

from arbitrage.domain.messages.types import EnrichedProduct


class MarketPrices(TypedDict):
    currency: str
    buy_price: int | None  # minor units of ``currency`` (arbitrage/domain/enrichment.py buy_price)
    sell_price: int | None
    buy_price_eur_cents: int | None
    sell_price_eur_cents: int | None


class PriceObservation(TypedDict):
    asin: str
    observed_at: int  # the Keepa pull time, epoch ms
    markets: dict[str, MarketPrices]  # by marketplace code


def observation_id(asin: str, observed_at_ms: int) -> str:
    """``B0…:1764151200000``: one document per ASIN and pull."""
    return f"{asin}:{observed_at_ms}"


def observation(product: EnrichedProduct) -> tuple[str, PriceObservation] | None:
    """(id, document) of the pull, with each market that has a buy or a sell price; None when
    no market has either (Keepa had no offer anywhere: nothing to draw)."""
    markets: dict[str, MarketPrices] = {
        code: {
            "currency": market["currency"],
            "buy_price": market["buy_price"],
            "sell_price": market["sell_price"],
            "buy_price_eur_cents": market["buy_price_eur_cents"],
            "sell_price_eur_cents": market["sell_price_eur_cents"],
        }
        for code, market in product["markets"].items()
        if market["buy_price"] is not None or market["sell_price"] is not None
    }
    if not markets:
        return None
    pulled_at = product["source_timestamp_ms"]
    return observation_id(product["asin"], pulled_at), {
        "asin": product["asin"],
        "observed_at": pulled_at,
        "markets": markets,
    }
