"""The Amazon EU marketplaces the pipeline knows, with their Keepa domain ids, currencies and
Amazon's marketplace ids (SP-API's ``MarketplaceId``: developer-docs.amazon.com/sp-api/docs/
marketplace-ids, the Europe region, read 2026-12-07)."""

from __future__ import annotations

from dataclasses import dataclass

from arbitrage.domain.redaction import preview


@dataclass(frozen=True)
class Marketplace:
    code: str
    keepa_domain_id: int
    currency: str
    amazon_host: str
    amazon_marketplace_id: str


MARKETPLACES: dict[str, Marketplace] = {
    m.code: m
    for m in (
        Marketplace("GB", 2, "GBP", "amazon.co.uk", "A1F83G8C2ARO7P"),
        Marketplace("DE", 3, "EUR", "amazon.de", "A1PA6795UKMFR9"),
        Marketplace("FR", 4, "EUR", "amazon.fr", "A13V1IB3VIYZZH"),
        Marketplace("IT", 8, "EUR", "amazon.it", "APJ6JRA9NG5V4"),
        Marketplace("ES", 9, "EUR", "amazon.es", "A1RKKUPIHCS9HS"),
    )
}

MARKET_BY_DOMAIN_ID: dict[int, Marketplace] = {m.keepa_domain_id: m for m in MARKETPLACES.values()}
MARKET_BY_AMAZON_ID: dict[str, Marketplace] = {
    m.amazon_marketplace_id: m for m in MARKETPLACES.values()
}

DEFAULT_MARKETS: tuple[str, ...] = ("DE", "FR", "IT", "ES", "GB")


def parse_market_list(text: str) -> tuple[str, ...]:
    """Parse a comma-separated market list such as ``"DE,FR,GB"`` (the ``KEEPA_MARKETS`` format)."""
    codes = [part.strip().upper() for part in text.split(",") if part.strip()]
    if not codes:
        raise ValueError("the market list is empty; give codes such as DE,FR,IT,ES,GB")
    unknown = [c for c in codes if c not in MARKETPLACES]
    if unknown:
        raise ValueError(
            # Previews only: a misplaced value (a secret, even) is not echoed whole.
            f"unknown marketplace code(s) {', '.join(map(preview, unknown))}; "
            f"known codes are {', '.join(sorted(MARKETPLACES))}"
        )
    # Keep the caller's order (the first market is the product's home market) without repeats.
    return tuple(dict.fromkeys(codes))
