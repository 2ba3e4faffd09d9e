"""Loading and checking the fee model's configuration file (config/fees_v1.toml)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

from pipelines.markets import MARKETPLACES

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FEES_FILE = REPO_ROOT / "config" / "fees_v1.toml"
# Named in error messages: the setting that points at another fee file (resources/settings.py).
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

    def referral_default_pct_x100(self, root_category: int | None) -> tuple[int, str]:
        """Referral percentage in hundredths of a percent, and where it came from."""
        if root_category is not None and root_category in self.referral_category_pct_x100:
            return self.referral_category_pct_x100[root_category], "category_default"
        return self.referral_fallback_pct_x100, "fallback"


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
    try:
        data = tomllib.loads(fees_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FeeConfigError(
            f"fee configuration {fees_path} does not exist; set {FEES_FILE_ENV} to a valid file"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise FeeConfigError(f"fee configuration {fees_path} is not valid TOML: {exc}") from None
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
        referral_category_pct_x100={
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
    )
