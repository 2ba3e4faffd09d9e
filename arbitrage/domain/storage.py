"""Storage and time to sell (docs/fees.md, "Storage and time to sell"): how long a seller's
planned quantity takes to sell, and what Amazon's monthly storage fee costs each unit meanwhile.

- The seller's sales a month: the listing's monthly sales shared with the FBA offers already on
  it (the buy box rotates among FBA offers at one price: the seller gets about 1 / (offers + 1)).
- Days to sell ``planned_quantity`` units: ``planned_quantity`` / that × 30.
- Storage per unit: the stock falls from ``planned_quantity`` to 0 while it sells, so on average
  half of it is stored: rate × unit volume × months to sell / 2, at the store's rate for the
  unit's size tier and the season (January-September or October-December), exact until the one
  rounding to minor units (half-even).

Rates: config/storage.toml (per store, tier and season, with its source and date).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from arbitrage.domain.config_files import read_toml, refuse_unknown_keys
from arbitrage.domain.fee_config import REPO_ROOT
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.money import round_fraction

DEFAULT_STORAGE_FILE = REPO_ROOT / "config" / "storage.toml"
Tier = Literal["standard", "large"]
# Cubic millimetres in a cubic metre and in a cubic foot (304.8 mm).
_MM3 = {"m3": Fraction(10**9), "ft3": Fraction(3048) ** 3 / 1000}
DAYS_PER_MONTH = 30


class StorageConfigError(ValueError):
    """The storage file is missing, malformed or names an unknown setting."""


@dataclass(frozen=True)
class StoreRates:
    unit: Literal["m3", "ft3"]
    # tier → (January-September, October-December), minor units per unit volume a month
    rates: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class StorageRates:
    version: str
    source: str
    read_on: str
    max_sides_mm: tuple[int, int, int]  # longest first
    max_weight_g: int
    stores: dict[str, StoreRates]

    def tier(self, package: dict[str, Any]) -> Tier | None:
        """Amazon's size tier of a packaged unit; None when a dimension or the weight is
        unknown."""
        sides = [package.get(k) for k in ("length_mm", "width_mm", "height_mm")]
        weight = package.get("weight_g")
        if any(not isinstance(v, int) or v <= 0 for v in (*sides, weight)):
            return None
        longest_first = sorted(sides, reverse=True)
        fits = all(s <= m for s, m in zip(longest_first, self.max_sides_mm, strict=True))
        return "standard" if fits and weight <= self.max_weight_g else "large"

    def monthly_minor(self, store: str, package: dict[str, Any], month: int) -> Fraction | None:
        """One unit's storage a month in ``store`` (its minor units), or None if unknown."""
        tier = self.tier(package)
        rates = self.stores.get(store)
        if tier is None or rates is None:
            return None
        volume = (
            Fraction(package["length_mm"] * package["width_mm"] * package["height_mm"])
            / _MM3[rates.unit]
        )
        jan_sep, oct_dec = rates.rates[tier]
        return volume * (oct_dec if month >= 10 else jan_sep)


@dataclass(frozen=True)
class TimeToSell:
    units_per_month: Fraction  # the seller's share of the listing's sales
    days: Fraction
    storage_minor: int | None  # per unit, the sell store's minor units
    storage_eur_cents: int | None


def time_to_sell(
    monthly_sales: int | None,
    fba_offers: int | None,
    planned_quantity: int,
) -> tuple[Fraction, Fraction] | None:
    """(the seller's units a month, days to sell ``planned_quantity``), or None without a
    sales figure; no FBA offer count counts as none."""
    if monthly_sales is None or monthly_sales < 0:
        return None
    share = Fraction(monthly_sales, max(0, fba_offers or 0) + 1)
    if share == 0:
        return share, Fraction(10**9)  # never: a finite number every comparison fails
    return share, Fraction(planned_quantity) / share * DAYS_PER_MONTH


def storage_cost(
    rates: StorageRates,
    store: str,
    package: dict[str, Any],
    month: int,
    days: Fraction,
    eur_per_unit: Fraction,
) -> tuple[int, int] | None:
    """Storage per unit while the planned quantity sells (half of it stored on average):
    (the store's minor units, EUR cents), each rounded once; None if the size is unknown."""
    monthly = rates.monthly_minor(store, package, month)
    if monthly is None:
        return None
    exact = monthly * days / DAYS_PER_MONTH / 2
    return round_fraction(exact), round_fraction(exact * eur_per_unit)


def load_storage_rates(path: str | os.PathLike[str] = DEFAULT_STORAGE_FILE) -> StorageRates:
    where = str(path)
    data = read_toml(Path(path), "storage file", "ARBITRAGE_RULES_FILE", StorageConfigError)
    known = {"version", "source", "read_on", "standard_size", "stores"}
    refuse_unknown_keys(data, known, where, StorageConfigError)
    for key in ("version", "source", "read_on"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise StorageConfigError(f"{where}: {key} must be a non-empty string")
    size = data.get("standard_size") or {}
    sides = size.get("max_sides_mm")
    weight = size.get("max_weight_g")
    if (
        not isinstance(sides, list)
        or len(sides) != 3
        or not all(type(s) is int and s > 0 for s in sides)
        or type(weight) is not int
        or weight <= 0
    ):
        raise StorageConfigError(
            f"{where}: [standard_size] needs max_sides_mm (three mm) and max_weight_g"
        )
    stores: dict[str, StoreRates] = {}
    for store, entry in (data.get("stores") or {}).items():
        at = f"{where} [stores.{store}]"
        if store not in MARKETPLACES:
            raise StorageConfigError(f"{at}: not a store ({', '.join(sorted(MARKETPLACES))})")
        unit = entry.get("unit")
        if unit not in _MM3:
            raise StorageConfigError(f"{at}: unit must be m3 or ft3")
        rates: dict[str, tuple[int, int]] = {}
        for tier in ("standard", "large"):
            season = entry.get(tier)
            values = (season or {}).get("jan_sep"), (season or {}).get("oct_dec")
            if not all(type(v) is int and v >= 0 for v in values):
                raise StorageConfigError(
                    f"{at}: {tier} needs jan_sep and oct_dec, minor units per {unit} a month"
                )
            rates[tier] = (values[0], values[1])  # type: ignore[assignment]
        stores[store] = StoreRates(unit, rates)
    return StorageRates(
        data["version"].strip(),
        data["source"].strip(),
        data["read_on"].strip(),
        tuple(sorted(sides, reverse=True)),  # type: ignore[arg-type]
        weight,
        stores,
    )
