"""The simulated catalog: ``size`` products over the five markets, every attribute drawn from
the seed and the product's index, so a million products cost only their arrays (≈ 200 MB) and
the same seed always gives the same catalog.

What it draws from (categories with each store's root node, referral percentages, price and
weight ranges, brands, title words) is the bundled sample's (tools/sample_catalog.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from devservices.keepa_sim.hashing import hashed, log_uniform, uniform
from tools.sample_catalog import (
    ADJECTIVES,
    BRANDS,
    CATEGORIES,
    COLOURS,
    MAX_PRICE_EUR_CENTS,
    MAX_SALES_RANK,
    MIN_PRICE_EUR_CENTS,
)

MARKETS: tuple[str, ...] = ("DE", "FR", "IT", "ES", "GB")
SOLD_SHOWN_SHARE = 0.35


def _badge(sold: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Amazon's "bought in the past month" steps: nothing below 50, then 50+, 100+ ... 900+,
    1K+ ... 9K+, 10K+ ... (floored to the step)."""
    step = np.where(
        sold < 100, 50, np.where(sold < 1_000, 100, np.where(sold < 10_000, 1_000, 10_000))
    )
    return np.where(sold < 50, 0, (sold // step) * step).astype(np.int64)


MAX_PRODUCTS = 1_000_000
# ASINs are "B0" + 8 base-36 digits: index × a multiplier coprime to 36⁸, plus a seed offset,
# is a bijection, so an ASIN maps back to its index without a table.
_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SPACE = 36**8
_MULTIPLIER = 2_654_435_761  # odd and not a multiple of 3: coprime to 36⁸
_INVERSE = pow(_MULTIPLIER, -1, _SPACE)

# Salts: one independent stream of draws per attribute.
(
    _CATEGORY,
    _PRICE,
    _RANK,
    _WEIGHT,
    _SIDES,
    _FBA,
    _AMAZON,
    _LISTED,
    _NOISE,
    _RANK_NOISE,
    _PERIOD,
    _PHASE,
    _TITLE,
    _SOLD,
    _SOLD_SHOWN,
    _HAZMAT,
    _PACK,
    _PACK_STORE,
    _PACK_SIZE,
    _RETURNS,
) = range(1, 21)


@dataclass(frozen=True)
class Catalog:
    """Per product (first axis) and per (product, market) arrays; markets in ``MARKETS`` order."""

    seed: int
    category: npt.NDArray[np.int64]  # index into tools.sample_catalog.CATEGORIES
    base_eur_cents: npt.NDArray[np.float64]
    base_rank: npt.NDArray[np.float64]
    monthly_sold: npt.NDArray[np.int64]
    weight_g: npt.NDArray[np.int64]
    sides_mm: npt.NDArray[np.int64]  # (n, 3), longest first
    fba_eur_cents: npt.NDArray[np.float64]
    has_amazon: npt.NDArray[np.bool_]
    listed: npt.NDArray[np.bool_]  # (n, markets)
    price_noise: npt.NDArray[np.float64]  # (n, markets): the market's price level
    rank_noise: npt.NDArray[np.float64]  # (n, markets)
    period_min: npt.NDArray[np.float64]  # (n, markets): how long a price state lasts
    phase_min: npt.NDArray[np.float64]  # (n, markets)

    @property
    def size(self) -> int:
        return len(self.category)

    @classmethod
    def generate(cls, seed: int, size: int) -> Catalog:
        if not 1 <= size <= MAX_PRODUCTS:
            raise ValueError(f"a catalog holds 1 to {MAX_PRODUCTS:,} products, not {size:,}")
        index = np.arange(size, dtype=np.int64)
        cell = (index[:, None], np.arange(len(MARKETS))[None, :])
        category = (uniform(seed, _CATEGORY, index) * len(CATEGORIES)).astype(np.int64)
        low = np.array([c.price_eur[0] * 100 for c in CATEGORIES], dtype=np.float64)[category]
        high = np.array([c.price_eur[1] * 100 for c in CATEGORIES], dtype=np.float64)[category]
        base = np.exp(
            np.log(low) + uniform(seed, _PRICE, index) * (np.log(high) - np.log(low))
        ).clip(MIN_PRICE_EUR_CENTS, MAX_PRICE_EUR_CENTS)
        rank = log_uniform(uniform(seed, _RANK, index), 1, MAX_SALES_RANK)
        w_low = np.array([c.weight_g[0] for c in CATEGORIES], dtype=np.float64)[category]
        w_high = np.array([c.weight_g[1] for c in CATEGORIES], dtype=np.float64)[category]
        weight = np.exp(
            np.log(w_low) + uniform(seed, _WEIGHT, index) * (np.log(w_high) - np.log(w_low))
        ).round()
        sides = np.sort(
            40 + (uniform(seed, _SIDES, index[:, None], np.arange(3)[None, :]) * 560),
            axis=1,
        )[:, ::-1].astype(np.int64)
        return cls(
            seed=seed,
            category=category,
            base_eur_cents=base,
            base_rank=rank,
            # Keepa's "bought in the past month": falls with the sales rank; Amazon shows it
            # for about a third of the products, in its badge's steps (0: none shown).
            monthly_sold=np.where(
                uniform(seed, _SOLD_SHOWN, index) < SOLD_SHOWN_SHARE,
                _badge(30_000 / np.sqrt(rank) * (0.5 + uniform(seed, _SOLD, index))),
                0,
            ),
            weight_g=weight.astype(np.int64),
            sides_mm=np.ascontiguousarray(sides),
            fba_eur_cents=np.minimum(800, 200 + weight * 0.2 + uniform(seed, _FBA, index) * 60),
            has_amazon=uniform(seed, _AMAZON, index) < 0.5,
            listed=uniform(seed, _LISTED, *cell) >= 0.04,
            price_noise=1 + np.clip((uniform(seed, _NOISE, *cell) - 0.5) * 0.14, -0.08, 0.08),
            rank_noise=np.exp((uniform(seed, _RANK_NOISE, *cell) - 0.5) * 0.8),
            # A price state lasts 20 minutes to 12 hours (log-uniform): short promotions and
            # long stable spells, so opportunities open and close with a spread of durations.
            period_min=log_uniform(uniform(seed, _PERIOD, *cell), 20, 720),
            phase_min=uniform(seed, _PHASE, *cell) * 720,
        )

    # ------------------------------------------------------------------ names

    def asin(self, index: int) -> str:
        number = (index * _MULTIPLIER + self._offset) % _SPACE
        digits = []
        for _ in range(8):
            number, digit = divmod(number, 36)
            digits.append(_DIGITS[digit])
        return "B0" + "".join(reversed(digits))

    def asins(self, indexes: npt.ArrayLike) -> list[str]:
        return [self.asin(int(i)) for i in np.asarray(indexes).ravel()]

    def index(self, asin: str) -> int | None:
        """The product's index, or None for an ASIN not in this catalog."""
        if len(asin) != 10 or not asin.startswith("B0"):
            return None
        number = 0
        for char in asin[2:]:
            digit = _DIGITS.find(char)
            if digit < 0:
                return None
            number = number * 36 + digit
        index = ((number - self._offset) * _INVERSE) % _SPACE
        return index if index < self.size else None

    @property
    def _offset(self) -> int:
        return int(hashed(self.seed, 0)) % _SPACE

    def title(self, index: int) -> str:
        category = CATEGORIES[int(self.category[index])]
        draws = uniform(self.seed, _TITLE, index, np.arange(4))
        brand = self.brand(index)
        noun = category.nouns[int(draws[1] * len(category.nouns))]
        adjective = ADJECTIVES[int(draws[2] * len(ADJECTIVES))]
        colour = COLOURS[int(draws[3] * len(COLOURS))]
        return f"{brand} {adjective} {noun} {brand[:2].upper()}-{100 + index % 900}, {colour}"

    def brand(self, index: int) -> str:
        return BRANDS[int(uniform(self.seed, _TITLE, index, np.arange(4))[0] * len(BRANDS))]

    def listing(self, index: int, market: str) -> dict[str, Any]:
        """The listing's facts in Keepa's fields: hazardous materials declared for 3 % (none
        declared for 60 %, nothing said for the rest), a multipack in one store for 2 % (2 to
        6 items under the same ASIN), a high return rate for 8 % and a low one for 22 %."""
        hazmat = uniform(self.seed, _HAZMAT, index)
        multipack = uniform(self.seed, _PACK, index) < 0.02
        pack_store = MARKETS[int(uniform(self.seed, _PACK_STORE, index) * len(MARKETS))]
        returns = uniform(self.seed, _RETURNS, index)
        facts: dict[str, Any] = {
            "brand": self.brand(index),
            "packageQuantity": 2 + int(uniform(self.seed, _PACK_SIZE, index) * 5)
            if multipack and market == pack_store
            else 1,
            "returnRate": 2 if returns < 0.08 else 1 if returns < 0.30 else None,
        }
        if hazmat < 0.03:
            facts["hazardousMaterials"] = [{"aspect": "UN number", "value": "UN3481"}]
        elif hazmat < 0.63:
            facts["hazardousMaterials"] = []
        return facts

    def root_category(self, index: int, market: str) -> int:
        return CATEGORIES[int(self.category[index])].roots[market][0]

    def referral_pct(self, index: int) -> float:
        return CATEGORIES[int(self.category[index])].referral_pct
