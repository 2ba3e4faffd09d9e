"""Loading and checking the signal rules file (config/rules_v1.toml, rules_none.toml).

The rules decide which fee-model opportunities are alerts, from Keepa's statistics of the sell
market (docs/fees.md, "Rules", docs/decisions.md 32); ``arbitrage.domain.route_filters``
applies them. Every rule has ``enabled`` and ``on_missing`` ("skip" or "pass"): what a route
whose sell market has no statistics for that rule gets, chosen in the file and never by accident.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from arbitrage.domain.config_files import read_toml, refuse_unknown_keys
from arbitrage.domain.fee_config import REPO_ROOT
from arbitrage.domain.lifecycle import LifecycleRules
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.storage import (
    DEFAULT_STORAGE_FILE,
    StorageConfigError,
    StorageRates,
    load_storage_rates,
)

STORES = tuple(sorted(MARKETPLACES))

DEFAULT_RULES_FILE = REPO_ROOT / "config" / "rules_v1.toml"
NO_RULES_FILE = REPO_ROOT / "config" / "rules_none.toml"
# Named in error messages: the setting that points at another rules file (arbitrage/settings.py).
RULES_FILE_ENV = "ARBITRAGE_RULES_FILE"

OnMissing = Literal["skip", "pass"]
ON_MISSING = ("skip", "pass")
SALES_ESTIMATORS = ("drops30", "drops90")
AVERAGES = ("buy_box", "new", "amazon")
OOS_SERIES = ("new", "buy_box", "amazon")
RULE_SECTIONS = ("sales", "spike_guard", "amazon_buy_box", "fba_offers", "stock")
# The checks a seller makes before buying (docs/fees.md, "Risk rules"): optional sections, off
# when absent, so a rules file written before them means what it meant.
RISK_SECTIONS = (
    "hazmat",
    "pack_quantity",
    "return_rate",
    "variation_parent",
    "restrictions",
    "time_to_sell",
)
DEFAULT_RESTRICTIONS_FILE = REPO_ROOT / "config" / "restrictions.toml"
LIFECYCLE_SECTION = "lifecycle"


class RulesConfigError(ValueError):
    """The rules file is missing, malformed or names an unknown setting."""


@dataclass(frozen=True)
class SalesRule:
    enabled: bool = False
    estimator: Literal["drops30", "drops90"] = "drops30"
    min_monthly_sales: int = 0
    on_missing: OnMissing = "pass"
    # Amazon's own "bought in the past month" (Keepa's monthlySold) where a product has it,
    # the estimator where not; off in rules v1 (its alerts stay as they were).
    use_monthly_sold: bool = False


@dataclass(frozen=True)
class SpikeGuardRule:
    enabled: bool = False
    average: Literal["buy_box", "new", "amazon"] = "buy_box"
    on_missing: OnMissing = "pass"


@dataclass(frozen=True)
class AmazonBuyBoxRule:
    enabled: bool = False
    max_pct: int = 100
    on_missing: OnMissing = "pass"


@dataclass(frozen=True)
class FbaOffersRule:
    enabled: bool = False
    max_offers: int = 0
    on_missing: OnMissing = "pass"


@dataclass(frozen=True)
class StockRule:
    enabled: bool = False
    series: Literal["new", "buy_box", "amazon"] = "new"
    max_oos_pct90: int = 100
    on_missing: OnMissing = "pass"


@dataclass(frozen=True)
class RiskRule:
    """A risk rule: ``on_missing`` decides a route whose markets say nothing of it."""

    enabled: bool = False
    on_missing: OnMissing = "pass"


@dataclass(frozen=True)
class Restrictions:
    """What the seller may not sell (config/restrictions.toml): brands (compared case-folded)
    and root categories per store."""

    version: str = "none"
    brands: frozenset[str] = frozenset()
    categories: frozenset[tuple[str, int]] = frozenset()  # (store, root category id)

    def restricted(self, brand: str | None, store: str, root: int | None) -> bool:
        return (brand is not None and brand.casefold() in self.brands) or (
            root is not None and (store, root) in self.categories
        )


@dataclass(frozen=True)
class RestrictionsRule:
    enabled: bool = False
    on_missing: OnMissing = "pass"
    file: str = str(DEFAULT_RESTRICTIONS_FILE)
    restrictions: Restrictions = field(default_factory=Restrictions)


@dataclass(frozen=True)
class TimeToSellRule:
    """Skip a route whose planned quantity would take longer than ``max_days`` to sell
    (arbitrage/domain/storage.py); the alert shows the days, the storage and the profit after
    it, at the rates of ``file``."""

    enabled: bool = False
    on_missing: OnMissing = "pass"
    max_days: int = 0
    planned_quantity: int = 1
    file: str = str(DEFAULT_STORAGE_FILE)
    rates: StorageRates | None = None


@dataclass(frozen=True)
class RulesConfig:
    version: str
    sales: SalesRule
    spike_guard: SpikeGuardRule
    amazon_buy_box: AmazonBuyBoxRule
    fba_offers: FbaOffersRule
    stock: StockRule
    path: str
    # When an open opportunity's change is news and when its data is too old ([lifecycle];
    # arbitrage/domain/lifecycle.py). Optional in the file: the defaults there.
    lifecycle: LifecycleRules = field(default_factory=LifecycleRules)
    hazmat: RiskRule = field(default_factory=RiskRule)
    pack_quantity: RiskRule = field(default_factory=RiskRule)
    return_rate: RiskRule = field(default_factory=RiskRule)
    variation_parent: RiskRule = field(default_factory=RiskRule)
    restrictions: RestrictionsRule = field(default_factory=RestrictionsRule)
    time_to_sell: TimeToSellRule = field(default_factory=TimeToSellRule)

    @property
    def any_enabled(self) -> bool:
        return any(getattr(self, name).enabled for name in (*RULE_SECTIONS, *RISK_SECTIONS))

    @property
    def any_risk_enabled(self) -> bool:
        return any(getattr(self, name).enabled for name in RISK_SECTIONS)


# Every rule off: what config/rules_none.toml holds (a test keeps the two equal).
NO_RULES = RulesConfig(
    version="none",
    sales=SalesRule(),
    spike_guard=SpikeGuardRule(),
    amazon_buy_box=AmazonBuyBoxRule(),
    fba_offers=FbaOffersRule(),
    stock=StockRule(),
    path="(no rules)",
)


def load_rules_config(path: str | os.PathLike[str] = DEFAULT_RULES_FILE) -> RulesConfig:
    """Read and check a rules file (by default config/rules_v1.toml)."""
    rules_path = Path(path)
    data = read_toml(rules_path, "rules file", RULES_FILE_ENV, RulesConfigError)
    return _build(data, str(rules_path))


def _build(data: dict[str, Any], where: str) -> RulesConfig:
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise RulesConfigError(f'{where}: version must be a non-empty string such as "v1"')
    unknown = set(data) - {"version", LIFECYCLE_SECTION, *RULE_SECTIONS, *RISK_SECTIONS}
    if unknown:
        raise RulesConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; the rules are "
            f"{', '.join((*RULE_SECTIONS, *RISK_SECTIONS))}"
        )
    risks: dict[str, Any] = {}
    for name in RISK_SECTIONS:
        section = data.get(name, {"enabled": False})
        if not isinstance(section, dict):
            raise RulesConfigError(f"{where}: [{name}] must be a table")
        if name == "restrictions":
            risks[name] = _restrictions_rule(section, where)
        elif name == "time_to_sell":
            risks[name] = _time_to_sell_rule(section, where)
        else:
            risks[name] = _rule(RiskRule, section, where, name)
    sections = {}
    for name in RULE_SECTIONS:
        section = data.get(name)
        if not isinstance(section, dict):
            raise RulesConfigError(
                f"{where}: [{name}] is missing; every rule needs a section (enabled = false "
                "turns it off)"
            )
        sections[name] = section
    return RulesConfig(
        version=version.strip(),
        sales=_rule(
            SalesRule,
            sections["sales"],
            where,
            "sales",
            estimator=_choice(SALES_ESTIMATORS),
            min_monthly_sales=_count,
            optional={"use_monthly_sold": _flag},
        ),
        spike_guard=_rule(
            SpikeGuardRule, sections["spike_guard"], where, "spike_guard", average=_choice(AVERAGES)
        ),
        amazon_buy_box=_rule(
            AmazonBuyBoxRule, sections["amazon_buy_box"], where, "amazon_buy_box", max_pct=_pct
        ),
        fba_offers=_rule(
            FbaOffersRule, sections["fba_offers"], where, "fba_offers", max_offers=_count
        ),
        stock=_rule(
            StockRule,
            sections["stock"],
            where,
            "stock",
            series=_choice(OOS_SERIES),
            max_oos_pct90=_pct,
        ),
        path=where,
        lifecycle=_lifecycle(data.get(LIFECYCLE_SECTION, {}), where),
        **risks,
    )


def _restrictions_rule(section: dict[str, Any], where: str) -> RestrictionsRule:
    """[restrictions]: ``file`` (default config/restrictions.toml; relative to the repository)
    is read when the rule is enabled."""
    rule = _rule(RestrictionsRule, section, where, "restrictions", optional={"file": _file_name})
    if not rule.enabled:
        return rule
    path = _in_repo(rule.file)
    return RestrictionsRule(True, rule.on_missing, str(path), load_restrictions(path))


def _time_to_sell_rule(section: dict[str, Any], where: str) -> TimeToSellRule:
    """[time_to_sell]: ``max_days``, ``planned_quantity`` (units bought per purchase) and the
    storage rates' ``file`` (default config/storage.toml), read when enabled."""
    rule = _rule(
        TimeToSellRule,
        section,
        where,
        "time_to_sell",
        optional={"file": _file_name},
        max_days=_positive,
        planned_quantity=_positive,
    )
    if not rule.enabled:
        return rule
    path = _in_repo(rule.file)
    try:
        rates = load_storage_rates(path)
    except StorageConfigError as exc:
        raise RulesConfigError(str(exc)) from None
    return dataclasses.replace(rule, file=str(path), rates=rates)


def _positive(value: Any, at: str) -> int:
    if type(value) is not int or value <= 0:
        raise RulesConfigError(f"{at} must be a whole number above 0, got {value!r}")
    return value


def _in_repo(file: str) -> Path:
    """A rule's ``file``: absolute as given, else relative to the repository."""
    path = Path(file)
    return path if path.is_absolute() else REPO_ROOT / path


def _file_name(value: Any, at: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RulesConfigError(f"{at} must be a file name, got {value!r}")
    return value.strip()


def load_restrictions(path: str | os.PathLike[str]) -> Restrictions:
    """config/restrictions.toml: ``version``, ``brands`` (a list of names) and ``[[category]]``
    tables of ``store``, ``root`` (the store's root category id) and ``why``."""
    where = str(path)
    data = read_toml(Path(path), "restrictions file", RULES_FILE_ENV, RulesConfigError)
    refuse_unknown_keys(data, {"version", "brands", "category"}, where, RulesConfigError)
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise RulesConfigError(f"{where}: version must be a non-empty string")
    brands = data.get("brands", [])
    if not isinstance(brands, list) or not all(isinstance(b, str) and b.strip() for b in brands):
        raise RulesConfigError(f"{where}: brands must be a list of brand names")
    categories = set()
    for number, entry in enumerate(data.get("category", []), 1):
        at = f"{where} [[category]] #{number}"
        if not isinstance(entry, dict) or set(entry) - {"store", "root", "why"}:
            raise RulesConfigError(f"{at}: a table of store, root and why")
        store, root, why = entry.get("store"), entry.get("root"), entry.get("why")
        if store not in STORES:
            raise RulesConfigError(f"{at}: store must be one of {', '.join(STORES)}")
        if type(root) is not int or root <= 0:
            raise RulesConfigError(f"{at}: root must be the store's root category id")
        if not isinstance(why, str) or not why.strip():
            raise RulesConfigError(f"{at}: why must say why the seller may not sell it")
        categories.add((store, root))
    return Restrictions(
        version.strip(), frozenset(b.strip().casefold() for b in brands), frozenset(categories)
    )


def _lifecycle(section: Any, where: str) -> LifecycleRules:
    at = f"{where}: {LIFECYCLE_SECTION}"
    if not isinstance(section, dict):
        raise RulesConfigError(f"{at} must be a table ([{LIFECYCLE_SECTION}])")
    allowed = {"update_min_change_cents", "max_data_age_hours"}
    unknown = set(section) - allowed
    if unknown:
        raise RulesConfigError(
            f"{at} has unknown key(s) {', '.join(sorted(unknown))}; allowed: "
            f"{', '.join(sorted(allowed))}"
        )
    defaults = LifecycleRules()
    change = section.get("update_min_change_cents", defaults.update_min_change_cents)
    hours = section.get("max_data_age_hours", defaults.max_data_age_s // 3600)
    for key, value in (("update_min_change_cents", change), ("max_data_age_hours", hours)):
        if _count(value, f"{at}.{key}") == 0:
            raise RulesConfigError(f"{at}.{key} must be at least 1, got 0")
    return LifecycleRules(update_min_change_cents=change, max_data_age_s=hours * 3600)


def _choice(options: tuple[str, ...]) -> Any:
    def check(value: Any, at: str) -> str:
        if value not in options:
            raise RulesConfigError(
                f"{at} must be one of {', '.join(repr(o) for o in options)}, got {value!r}"
            )
        return str(value)

    return check


def _count(value: Any, at: str) -> int:
    if type(value) is not int or value < 0:
        raise RulesConfigError(f"{at} must be a non-negative whole number, got {value!r}")
    return value


def _flag(value: Any, at: str) -> bool:
    if type(value) is not bool:
        raise RulesConfigError(f"{at} must be true or false, got {value!r}")
    return value


def _pct(value: Any, at: str) -> int:
    if type(value) is not int or not 0 <= value <= 100:
        raise RulesConfigError(f"{at} must be a whole percentage from 0 to 100, got {value!r}")
    return value


def _rule(
    kind: type[Any],
    section: dict[str, Any],
    where: str,
    name: str,
    optional: dict[str, Any] | None = None,
    **checks: Any,
) -> Any:
    """One rule's section: ``enabled`` and, when enabled, every setting and ``on_missing``;
    an ``optional`` setting may be left out (the rule's default then)."""
    at = f"{where}: {name}"
    optional = optional or {}
    extra = {
        key: check(section[key], f"{at}.{key}") for key, check in optional.items() if key in section
    }
    allowed = {"enabled", "on_missing", *checks, *optional}
    unknown = set(section) - allowed
    if unknown:
        raise RulesConfigError(
            f"{at} has unknown key(s) {', '.join(sorted(unknown))}; allowed: "
            f"{', '.join(sorted(allowed))}"
        )
    enabled = section.get("enabled")
    if type(enabled) is not bool:
        raise RulesConfigError(f"{at}.enabled must be true or false, got {enabled!r}")
    if not enabled:
        # An off rule may keep its settings (to switch back on), but they must still be valid.
        values = {
            key: check(section[key], f"{at}.{key}")
            for key, check in checks.items()
            if key in section
        }
        if "on_missing" in section:
            values["on_missing"] = _choice(ON_MISSING)(section["on_missing"], f"{at}.on_missing")
        return kind(enabled=False, **values, **extra)
    missing = [key for key in (*checks, "on_missing") if key not in section]
    if missing:
        raise RulesConfigError(f"{at} is enabled but lacks {', '.join(missing)}")
    values = {key: check(section[key], f"{at}.{key}") for key, check in checks.items()}
    on_missing = _choice(ON_MISSING)(section["on_missing"], f"{at}.on_missing")
    return kind(enabled=True, on_missing=on_missing, **values, **extra)
