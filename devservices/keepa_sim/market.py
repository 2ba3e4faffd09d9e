"""The market at a moment: each (product, market)'s offers, computed from the catalog and the
time alone (no state is kept, so any moment of any product can be asked for, in any order).

Time is cut into spells per (product, market) (``Catalog.period_min``, 20 minutes to 12 hours,
each with its own phase). Within a spell the market stands still; at each spell a fresh draw
says whether there is a promotion (the offers 20-45 % down), whether the item is out of stock,
whether Amazon sells it, where the third-party offer sits, and the sales rank. Over it all a
slow drift (±4 % over a week) moves every price. A promotion in one market while the others
stand at their usual level is what opens a cross-market opportunity; it closes when the spell
ends, so opportunities last from minutes to hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from devservices.keepa_sim.catalog import MARKETS, Catalog
from devservices.keepa_sim.hashing import uniform
from tools.sample_catalog import EUR_PER_GBP, MAX_SALES_RANK

PROMOTION_RATE = 0.05  # per spell
OUT_OF_STOCK_RATE = 0.02  # per spell
AMAZON_PRESENCE = 0.75  # per spell, of the products Amazon sells
DRIFT = 0.04
DRIFT_PERIOD_MIN = 7 * 24 * 60
(_PROMO, _DEPTH, _STOCK, _AMAZON_IN, _AMAZON_PRICE, _THIRD_PARTY, _RANK, _SHIPPING, _OFFERS) = (
    range(20, 29)
)


@dataclass(frozen=True)
class MarketState:
    """Offers of ``indexes`` (rows) in each market (columns, ``MARKETS`` order) at ``minute``.

    Prices are the market's minor units (cents, pence); -1 is "no such offer" as in Keepa.
    """

    indexes: npt.NDArray[np.int64]
    minute: float  # simulated minutes since the simulator's epoch
    listed: npt.NDArray[np.bool_]
    amazon: npt.NDArray[np.int64]
    third_party: npt.NDArray[np.int64]
    shipping: npt.NDArray[np.int64]
    buy_box: npt.NDArray[np.int64]  # price + shipping of the buy box winner
    buy_box_is_amazon: npt.NDArray[np.bool_]
    rank: npt.NDArray[np.int64]
    offers: npt.NDArray[np.int64]
    promotion: npt.NDArray[np.bool_]
    spell_start: npt.NDArray[np.float64]  # minute the current spell began
    new: npt.NDArray[np.int64]  # Keepa's NEW: the lowest new offer, Amazon's included


def shelf_price(minor: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Shelf prices end in 9 (12.49, 23.99); never below 0.99."""
    return np.maximum(99, np.round(minor / 10) * 10 - 1).astype(np.int64)


def state_at(
    catalog: Catalog,
    indexes: npt.ArrayLike,
    minute: float,
    markets: tuple[str, ...] = MARKETS,
    *,
    promotions: bool = True,
) -> MarketState:
    """The offers at ``minute``; columns are ``markets`` (all five unless fewer are asked for:
    a Product Finder query over a million products needs one). ``promotions=False``: the same
    draws with no promotion (what a deal's price is measured against)."""
    idx = np.asarray(indexes, dtype=np.int64).ravel()
    columns = np.array([MARKETS.index(m) for m in markets], dtype=np.int64)
    seed = catalog.seed
    phase = catalog.phase_min[idx][:, columns]
    period = catalog.period_min[idx][:, columns]
    spell = np.floor((minute + phase) / period).astype(np.int64)
    spell_start = spell * period - phase
    cell = (idx[:, None], columns[None, :], spell)
    promotion = (uniform(seed, _PROMO, *cell) < PROMOTION_RATE) & promotions
    depth = np.where(promotion, 0.55 + uniform(seed, _DEPTH, *cell) * 0.25, 1.0)
    out_of_stock = (uniform(seed, _STOCK, *cell) < OUT_OF_STOCK_RATE) & ~promotion
    drift = 1 + DRIFT * np.sin(2 * math.pi * (minute / DRIFT_PERIOD_MIN + phase / 720))
    eur = catalog.base_eur_cents[idx, None] * catalog.price_noise[idx][:, columns] * drift * depth
    minor = np.where(columns == MARKETS.index("GB"), eur / EUR_PER_GBP, eur)
    listed = catalog.listed[idx][:, columns]
    third_party = shelf_price(minor * (0.97 + uniform(seed, _THIRD_PARTY, *cell) * 0.06))
    amazon_in = catalog.has_amazon[idx, None] & (uniform(seed, _AMAZON_IN, *cell) < AMAZON_PRESENCE)
    amazon = np.where(
        amazon_in, shelf_price(minor * (0.99 + uniform(seed, _AMAZON_PRICE, *cell) * 0.05)), -1
    )
    shipping = np.where(uniform(seed, _SHIPPING, *cell) < 0.8, 0, 299)
    gone = out_of_stock | ~listed
    third_party = np.where(gone, -1, third_party)
    amazon = np.where(gone, -1, amazon)
    amazon_wins = (amazon > 0) & ((third_party < 0) | (amazon <= third_party * 1.02))
    buy_box = np.where(amazon_wins, amazon, np.where(third_party > 0, third_party + shipping, -1))
    rank = np.clip(
        catalog.base_rank[idx, None]
        * catalog.rank_noise[idx][:, columns]
        * (0.8 + uniform(seed, _RANK, *cell) * 0.4),
        1,
        MAX_SALES_RANK,
    ).astype(np.int64)
    offers = np.where(gone, 0, 1 + (uniform(seed, _OFFERS, *cell) * 30).astype(np.int64))
    lowest = np.minimum(third_party, np.where(amazon > 0, amazon, np.iinfo(np.int64).max))
    new = np.where(third_party > 0, lowest, np.where(amazon > 0, amazon, -1))
    return MarketState(
        new=new,
        indexes=idx,
        minute=minute,
        listed=listed,
        amazon=amazon,
        third_party=third_party,
        shipping=np.where(third_party > 0, shipping, 0),
        buy_box=buy_box,
        buy_box_is_amazon=amazon_wins,
        rank=np.where(listed, rank, -1),
        offers=offers,
        promotion=promotion & listed,
        spell_start=spell_start,
    )
