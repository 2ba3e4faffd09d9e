"""Loading and checking the fee model's configuration file (config/fees_v1.toml, fees_v2.toml).

A v1 file gives a ``FeeConfig`` with ``v2=None``; a v2 file (``version = "v2"``) has the same
sections plus the seller, each store's category keys (root category id → key), referral
schedules and category defaults by key, size tiers, EFN surcharges and the digital services
fee, read into ``FeesV2`` (docs/fees.md, "Fee model v2"; docs/decisions.md 31).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from arbitrage.domain.config_files import read_toml
from arbitrage.domain.markets import MARKETPLACES

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FEES_FILE = REPO_ROOT / "config" / "fees_v1.toml"
# Named in error messages: the setting that points at another fee file (arbitrage/settings.py).
FEES_FILE_ENV = "ARBITRAGE_FEES_FILE"


class FeeConfigError(ValueError):
    """The fee configuration file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class WeightTier:
    max_weight_g: int
    fee_minor: dict[str, int]  # currency → minor units


@dataclass(frozen=True)
class FeeConfig:
    version: str
    fx_date: str
    eur_per_unit: dict[str, Fraction]
    vat_pct: dict[str, Fraction]
    referral_fallback_pct_x100: int
    referral_category_pct_x100: dict[int, int]
    fba_weight_tiers: tuple[WeightTier, ...]
    inbound_min_eur_cents: int
    inbound_per_kg_eur_cents: int
    default_weight_g: int
    min_profit_eur_cents: int
    min_roi: Fraction
    max_sales_rank: int
    path: str
    # The v2 rules; None for a v1 file, which the fee model then evaluates exactly as before.
    v2: FeesV2 | None = None

    def fx(self, currency: str) -> Fraction:
        try:
            return self.eur_per_unit[currency]
        except KeyError:
            raise FeeConfigError(
                f"no FX rate for {currency} in {self.path}; add it under [fx] eur_per_unit"
            ) from None

    def fba_tier_fee(self, weight_g: int | None, currency: str) -> int:
        weight = self.default_weight_g if weight_g is None else weight_g
        for tier in self.fba_weight_tiers:
            if weight <= tier.max_weight_g:
                return tier.fee_minor[currency]
        return self.fba_weight_tiers[-1].fee_minor[currency]

    def referral_default_pct_x100(
        self,
        market_root: int | None,
        product_root: int | None = None,
        market: str | None = None,
    ) -> tuple[int, str]:
        """Referral percentage in hundredths of a percent, and where it came from.

        The market's root category, else the product's: v1 looks the id up as it is (amazon.de
        ids); v2 through the market's category key (``FeesV2.category_key``).
        """
        if self.v2 is not None:
            key = self.v2.category_key(market, market_root, product_root)
            if key is not None and key in self.v2.category_default_pct_x100:
                return self.v2.category_default_pct_x100[key], "category_default"
            return self.referral_fallback_pct_x100, "fallback"
        root_category = market_root if market_root is not None else product_root
        if root_category is not None and root_category in self.referral_category_pct_x100:
            return self.referral_category_pct_x100[root_category], "category_default"
        return self.referral_fallback_pct_x100, "fallback"


FEE_TYPES = ("selling", "fba")
FULFILMENT_MODES = ("efn", "pan_eu")
REFERRAL_BASES = ("total", "portion")


@dataclass(frozen=True)
class ReferralSchedule:
    """Referral rule of one category group (config [[referral_schedule]]).

    ``pct_x100`` has one rate per band; ``up_to_minor[market]`` the bands' upper bounds
    (inclusive, minor units of the market's currency), one fewer than rates.
    """

    name: str
    categories: tuple[str, ...]  # category keys ([categories] of the fee file)
    basis: Literal["total", "portion"]
    pct_x100: tuple[int, ...]
    up_to_minor: dict[str, tuple[int, ...]]
    min_fee_minor: dict[str, int]
    closing_fee_minor: dict[str, int]


@dataclass(frozen=True)
class SizeTier:
    name: str
    max_weight_g: int
    max_sides_mm: tuple[int, int, int]  # longest, median, shortest


@dataclass(frozen=True)
class FeesV2:
    """The v2 rules, resolved for the configured seller."""

    seller_country: str
    fulfilment: Literal["efn", "pan_eu"]
    vat_registered: bool
    seller_vat_pct: Fraction
    referral_min_fee_minor: dict[str, int]  # products without a schedule
    schedules: tuple[ReferralSchedule, ...]
    # market → {root category id → category key}; any_store: the union of the tables (an id
    # never has two keys), for a product root whose store is not known.
    category_keys: dict[str, dict[int, str]]
    any_store_keys: dict[int, str]
    category_default_pct_x100: dict[str, int]  # category key → pct × 100
    size_tiers: tuple[SizeTier, ...]
    unknown_dimensions_tier: int  # index into size_tiers
    efn_surcharge_minor: dict[str, tuple[int, ...]]  # destination → per size tier
    # (store, fee type) → ((first day in force as UTC epoch ms, pct × 100), ...) ascending, for
    # this seller's country; no entry: no digital services fee.
    dst: dict[tuple[str, str], tuple[tuple[int, int], ...]]

    def category_key(
        self, market: str | None, market_root: int | None, product_root: int | None
    ) -> str | None:
        """The category key of a sale: the market's root category in the market's table, else
        the product's root category in any table; None where neither is mapped."""
        if market_root is not None:
            table = self.any_store_keys if market is None else self.category_keys[market]
            return table.get(market_root)
        return None if product_root is None else self.any_store_keys.get(product_root)

    def schedule_for(self, key: str | None) -> int:
        """Index of the schedule of a category key, -1 if it has none."""
        for index, schedule in enumerate(self.schedules):
            if key in schedule.categories:
                return index
        return -1

    def dst_pct_x100(self, store: str, fee_type: str, at_ms: int) -> int:
        """The digital services fee rate in force at ``at_ms`` (0 before any or without one)."""
        rate = 0
        for start_ms, pct in self.dst.get((store, fee_type), ()):
            if start_ms <= at_ms:
                rate = pct
        return rate

    def size_tier(self, weight_g: int, sides_mm: tuple[int | None, int | None, int | None]) -> int:
        """Index of the first tier the package fits (unknown sides: see unknown_dimensions_tier)."""
        if any(side is None for side in sides_mm):
            sides = self.size_tiers[self.unknown_dimensions_tier].max_sides_mm
        else:
            sides = tuple(
                sorted((int(side) for side in sides_mm if side is not None), reverse=True)
            )  # type: ignore[assignment]
        for index, tier in enumerate(self.size_tiers):
            if weight_g <= tier.max_weight_g and all(
                side <= limit for side, limit in zip(sides, tier.max_sides_mm, strict=True)
            ):
                return index
        return len(self.size_tiers) - 1


def _decimal(value: Any, where: str, max_places: int) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise FeeConfigError(f"{where} must be a decimal number, got {value!r}") from None
    if not number.is_finite() or number < 0:
        raise FeeConfigError(f"{where} must be a non-negative number, got {value!r}")
    exponent = number.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > max_places:
        raise FeeConfigError(f"{where} has more than {max_places} decimal places: {value!r}")
    return number


def pct_to_x100(value: Any, where: str) -> int:
    """A percentage such as "8.5" → 850 (hundredths of a percent), exactly."""
    number = _decimal(value, where, 2)
    if number > 100:
        raise FeeConfigError(f"{where} is a percentage and must be ≤ 100, got {value!r}")
    return int(number * 100)


def _int(section: dict[str, Any], key: str, where: str) -> int:
    value = section.get(key)
    if type(value) is not int or value < 0:
        raise FeeConfigError(f"{where}.{key} must be a non-negative integer, got {value!r}")
    return value


def load_fee_config(path: str | os.PathLike[str] = DEFAULT_FEES_FILE) -> FeeConfig:
    """Read and check a fee file (by default the bundled v1)."""
    fees_path = Path(path)
    data = read_toml(fees_path, "fee configuration", FEES_FILE_ENV, FeeConfigError)
    try:
        return _build(data, str(fees_path))
    except KeyError as exc:
        raise FeeConfigError(f"fee configuration {fees_path} lacks the key {exc}") from None


def _build(data: dict[str, Any], where: str) -> FeeConfig:
    fx = data["fx"]
    eur_per_unit = {
        currency: Fraction(_decimal(rate, f"fx.eur_per_unit.{currency}", 6))
        for currency, rate in fx["eur_per_unit"].items()
    }
    if eur_per_unit.get("EUR") != 1:
        raise FeeConfigError(f'{where}: fx.eur_per_unit.EUR must be "1" (EUR is the base currency)')
    needed_currencies = {m.currency for m in MARKETPLACES.values()}
    missing_fx = needed_currencies - set(eur_per_unit)
    if missing_fx:
        raise FeeConfigError(f"{where}: fx.eur_per_unit lacks {', '.join(sorted(missing_fx))}")
    vat = {
        code: Fraction(_decimal(pct, f"vat_pct.{code}", 2)) for code, pct in data["vat_pct"].items()
    }
    missing_vat = set(MARKETPLACES) - set(vat)
    if missing_vat:
        raise FeeConfigError(f"{where}: vat_pct lacks {', '.join(sorted(missing_vat))}")
    referral = data["referral"]
    is_v2 = str(data.get("version", "v1")) == "v2"
    tiers = []
    for index, tier in enumerate(data["fba"]["weight_tiers"]):
        fees = {c: _int(tier, c, f"fba.weight_tiers[{index}]") for c in sorted(needed_currencies)}
        tiers.append(WeightTier(_int(tier, "max_weight_g", f"fba.weight_tiers[{index}]"), fees))
    if not tiers or [t.max_weight_g for t in tiers] != sorted({t.max_weight_g for t in tiers}):
        raise FeeConfigError(
            f"{where}: fba.weight_tiers must be non-empty and ascending by max_weight_g"
        )
    inbound = data["inbound"]
    thresholds = data["thresholds"]
    return FeeConfig(
        version=str(data.get("version", "v1")),
        fx_date=str(fx["date"]),
        eur_per_unit=eur_per_unit,
        vat_pct=vat,
        referral_fallback_pct_x100=pct_to_x100(referral["fallback_pct"], "referral.fallback_pct"),
        # v1: by amazon.de root id; v2 keys its defaults by category key (FeesV2).
        referral_category_pct_x100={}
        if is_v2
        else {
            int(category): pct_to_x100(pct, f"referral.category_default_pct.{category}")
            for category, pct in referral.get("category_default_pct", {}).items()
        },
        fba_weight_tiers=tuple(tiers),
        inbound_min_eur_cents=_int(inbound, "min_eur_cents", "inbound"),
        inbound_per_kg_eur_cents=_int(inbound, "per_kg_eur_cents", "inbound"),
        default_weight_g=_int(inbound, "default_weight_g", "inbound"),
        min_profit_eur_cents=_int(thresholds, "min_profit_eur_cents", "thresholds"),
        min_roi=Fraction(_decimal(thresholds["min_roi"], "thresholds.min_roi", 4)),
        max_sales_rank=_int(thresholds, "max_sales_rank", "thresholds"),
        path=where,
        v2=_build_v2(data, where, vat) if is_v2 else None,
    )


def _markets_ints(value: Any, where: str) -> dict[str, int]:
    """{market code: non-negative int} with every marketplace present."""
    if not isinstance(value, dict) or set(value) != set(MARKETPLACES):
        raise FeeConfigError(f"{where} must name exactly the markets {', '.join(MARKETPLACES)}")
    return {code: _int(value, code, where) for code in MARKETPLACES}


def _epoch_ms_of_day(text: Any, where: str) -> int:
    try:
        day = date.fromisoformat(str(text))
    except ValueError:
        raise FeeConfigError(f"{where} must be a date YYYY-MM-DD, got {text!r}") from None
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(midnight.timestamp()) * 1000


def _build_v2(data: dict[str, Any], where: str, vat: dict[str, Fraction]) -> FeesV2:
    seller = data["seller"]
    country = str(seller["country"])
    if country not in vat:
        raise FeeConfigError(f"{where}: vat_pct has no rate for the seller's country {country!r}")
    fulfilment = seller["fulfilment"]
    if fulfilment not in FULFILMENT_MODES:
        raise FeeConfigError(
            f"{where}: seller.fulfilment must be one of {', '.join(FULFILMENT_MODES)}, "
            f"got {fulfilment!r}"
        )
    registered = seller["vat_registered"]
    if type(registered) is not bool:
        raise FeeConfigError(f"{where}: seller.vat_registered must be true or false")
    referral = data["referral"]
    category_keys, any_store_keys = _category_tables(data.get("categories", {}), where)
    known_keys = set(any_store_keys.values())
    schedules = []
    seen: set[str] = set()
    for index, entry in enumerate(data.get("referral_schedule", [])):
        at = f"referral_schedule[{index}]"
        basis = entry["basis"]
        if basis not in REFERRAL_BASES:
            raise FeeConfigError(f"{where}: {at}.basis must be 'total' or 'portion'")
        pct = tuple(pct_to_x100(p, f"{at}.pct") for p in entry["pct"])
        up_to: dict[str, tuple[int, ...]] = {}
        raw_up_to = entry["up_to"]
        if set(raw_up_to) != set(MARKETPLACES):
            raise FeeConfigError(f"{where}: {at}.up_to must name every market")
        for code in MARKETPLACES:
            bounds = tuple(raw_up_to[code])
            if (
                len(bounds) != len(pct) - 1
                or any(type(b) is not int or b <= 0 for b in bounds)
                or list(bounds) != sorted(set(bounds))
            ):
                raise FeeConfigError(
                    f"{where}: {at}.up_to.{code} must be {len(pct) - 1} ascending positive "
                    "amounts in minor units (one fewer than pct)"
                )
            up_to[code] = bounds
        categories = tuple(str(c) for c in entry["categories"])
        unknown = [c for c in categories if c not in known_keys]
        if unknown:
            raise FeeConfigError(
                f"{where}: {at}.categories names {', '.join(unknown)}, which no [categories] "
                "table maps a root category to"
            )
        if seen & set(categories):
            raise FeeConfigError(f"{where}: {at} repeats a category of an earlier schedule")
        seen |= set(categories)
        schedules.append(
            ReferralSchedule(
                name=str(entry["name"]),
                categories=categories,
                basis=basis,
                pct_x100=pct,
                up_to_minor=up_to,
                min_fee_minor=_markets_ints(entry["min_fee"], f"{at}.min_fee"),
                closing_fee_minor=_markets_ints(
                    entry.get("closing_fee", dict.fromkeys(MARKETPLACES, 0)), f"{at}.closing_fee"
                ),
            )
        )
    sizes = data["size_tiers"]
    tiers = []
    for index, tier in enumerate(sizes["tiers"]):
        sides = tier["max_sides_mm"]
        if len(sides) != 3 or list(sides) != sorted(sides, reverse=True):
            raise FeeConfigError(
                f"{where}: size_tiers.tiers[{index}].max_sides_mm must be 3 sides, longest first"
            )
        tiers.append(
            SizeTier(
                str(tier["name"]),
                _int(tier, "max_weight_g", f"size_tiers.tiers[{index}]"),
                (int(sides[0]), int(sides[1]), int(sides[2])),
            )
        )
    names = [t.name for t in tiers]
    if not tiers or sizes["unknown_dimensions_tier"] not in names:
        raise FeeConfigError(f"{where}: size_tiers.unknown_dimensions_tier must name a tier")
    surcharge = {}
    for code in MARKETPLACES:
        fees = data["efn"]["surcharge"].get(code)
        if (
            fees is None
            or len(fees) != len(tiers)
            or any(type(f) is not int or f < 0 for f in fees)
        ):
            raise FeeConfigError(
                f"{where}: efn.surcharge.{code} must list {len(tiers)} amounts, one per size tier"
            )
        surcharge[code] = tuple(fees)
    return FeesV2(
        seller_country=country,
        fulfilment=fulfilment,
        vat_registered=registered,
        seller_vat_pct=vat[country],
        referral_min_fee_minor=_markets_ints(referral["min_fee"], "referral.min_fee"),
        schedules=tuple(schedules),
        category_keys=category_keys,
        any_store_keys=any_store_keys,
        category_default_pct_x100=_category_defaults(
            referral.get("category_default_pct", {}), known_keys, where
        ),
        size_tiers=tuple(tiers),
        unknown_dimensions_tier=names.index(sizes["unknown_dimensions_tier"]),
        efn_surcharge_minor=surcharge,
        dst=_dst_for_seller(data.get("dst", {}).get("rates", []), country, where),
    )


def _category_tables(
    tables: dict[str, Any], where: str
) -> tuple[dict[str, dict[int, str]], dict[int, str]]:
    """[categories.<market>] roots → (market → {root id → key}, the union of the tables)."""
    if not isinstance(tables, dict) or set(tables) != set(MARKETPLACES):
        raise FeeConfigError(
            f"{where}: [categories] needs a table for each market: {', '.join(MARKETPLACES)}"
        )
    per_market: dict[str, dict[int, str]] = {}
    any_store: dict[int, str] = {}
    for code in MARKETPLACES:
        table = tables[code]
        at = f"categories.{code}"
        if not str(table.get("source", "")).strip():
            raise FeeConfigError(f"{where}: {at} must name its source")
        roots: dict[int, str] = {}
        for text, key in dict(table.get("roots", {})).items():
            if not text.isdigit() or int(text) <= 0:
                raise FeeConfigError(f"{where}: {at}.roots: {text!r} is not a category id")
            if not isinstance(key, str) or not key.strip():
                raise FeeConfigError(f"{where}: {at}.roots.{text} must be a category key")
            root = int(text)
            if any_store.setdefault(root, key) != key:
                raise FeeConfigError(
                    f"{where}: category id {root} has two keys, {any_store[root]!r} and "
                    f"{key!r} (categories.{code}); Amazon's ids are per store, but one id may "
                    "name one category only"
                )
            roots[root] = key
        per_market[code] = roots
    return per_market, any_store


def _category_defaults(pcts: dict[str, Any], known_keys: set[str], where: str) -> dict[str, int]:
    defaults = {}
    for key, pct in pcts.items():
        if key not in known_keys:
            raise FeeConfigError(
                f"{where}: referral.category_default_pct.{key} is no category key of [categories]"
            )
        defaults[key] = pct_to_x100(pct, f"referral.category_default_pct.{key}")
    return defaults


def _dst_for_seller(
    rows: list[dict[str, Any]], country: str, where: str
) -> dict[tuple[str, str], tuple[tuple[int, int], ...]]:
    """The seller's digital services fee timelines: its own country's rows for a (store, fee
    type) where there are any, else the "*" rows."""
    own: dict[tuple[str, str], list[tuple[int, int]]] = {}
    other: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for index, row in enumerate(rows):
        at = f"dst.rates[{index}]"
        store, fee_type = row["store"], row["fee"]
        if store not in MARKETPLACES or fee_type not in FEE_TYPES:
            raise FeeConfigError(
                f"{where}: {at} needs a store among the markets and fee selling or fba"
            )
        entry = (_epoch_ms_of_day(row["from"], f"{at}.from"), pct_to_x100(row["pct"], f"{at}.pct"))
        if row["seller"] == country:
            own.setdefault((store, fee_type), []).append(entry)
        elif row["seller"] == "*":
            other.setdefault((store, fee_type), []).append(entry)
    timelines = {**other, **own}
    resolved = {}
    for key, entries in timelines.items():
        starts = [start for start, _ in entries]
        if len(set(starts)) != len(starts):
            raise FeeConfigError(f"{where}: dst has two rates from one date for {key}")
        resolved[key] = tuple(sorted(entries))
    return resolved
