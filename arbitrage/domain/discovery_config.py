"""Loading and checking the discovery file (config/discovery.toml, or ARBITRAGE_DISCOVERY_FILE):
the Product Finder selections, deal selections and best-seller categories that find the ASINs
worth watching (docs/discovery.md). Every mistake is refused with a sentence naming it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from arbitrage.domain import cron
from arbitrage.domain.config_files import read_toml, refuse_unknown_keys
from arbitrage.domain.fee_config import REPO_ROOT
from arbitrage.domain.keepa_discovery import (
    BEST_SELLERS_COST,
    DEAL_PAGE_COST,
    FINDER_ASINS_PER_TOKEN,
    FINDER_BASE_COST,
    finder_page_limits,
)
from arbitrage.domain.markets import MARKETPLACES

DEFAULT_DISCOVERY_FILE = REPO_ROOT / "config" / "discovery.toml"
DISCOVERY_FILE_ENV = "ARBITRAGE_DISCOVERY_FILE"
# The seller's own list (KEEPA_ASINS_FILE) as a source: always on, never aged out.
OWN_LIST = "asins_file"

SourceKind = Literal["finder", "deals", "best_sellers"]
KINDS: tuple[SourceKind, ...] = ("finder", "deals", "best_sellers")
# Keepa's deal priceTypes and dateRange values.
DEAL_PRICE_TYPES = {"amazon": 0, "new": 1, "buy_box": 18}
DEAL_DATE_RANGES = {"day": 0, "week": 1, "month": 2, "quarter": 3}
# Keepa's deal sortType: newest deal first, highest absolute or percentage drop, lowest rank.
DEAL_SORTS = {"newest": 1, "delta": 2, "rank": 3, "percent": 4}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


class DiscoveryConfigError(ValueError):
    """The discovery file is missing, malformed or names an unknown setting."""


@dataclass(frozen=True)
class DiscoverySource:
    """One source: a Keepa request (paged) in one market, on its schedule."""

    name: str
    kind: SourceKind
    market: str
    schedule: str  # cron, UTC
    max_age_hours: int
    why: str
    pages: int = 1
    per_page: int = 0  # finder only
    selection: Mapping[str, Any] = field(default_factory=dict)  # finder: Keepa's fields
    price_type: int = 1  # deals: Keepa's priceTypes value
    drop_pct: tuple[int, int] = (0, 100)  # deals
    date_range: int = 0  # deals: Keepa's dateRange value
    sort_type: int = 1  # deals: Keepa's sortType value
    category: int = 0  # best sellers

    @property
    def most_tokens(self) -> int:
        """The most one run of this source can cost (what a plan reserves)."""
        if self.kind == "finder":
            per_page = FINDER_BASE_COST + -(-self.per_page // FINDER_ASINS_PER_TOKEN)
            return self.pages * per_page
        if self.kind == "deals":
            return self.pages * DEAL_PAGE_COST
        return BEST_SELLERS_COST

    def finder_selection(self, page: int) -> dict[str, Any]:
        return {**self.selection, "page": page, "perPage": self.per_page}

    def deal_request(self, page: int) -> dict[str, Any]:
        return {
            "page": page,
            "domainId": MARKETPLACES[self.market].keepa_domain_id,
            "priceTypes": [self.price_type],
            "deltaPercentRange": list(self.drop_pct),
            "dateRange": self.date_range,
            "sortType": self.sort_type,
        }


@dataclass(frozen=True)
class DiscoveryConfig:
    path: str
    version: str
    sources: tuple[DiscoverySource, ...] = ()

    def source(self, name: str) -> DiscoverySource:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)


def load_discovery_config(
    path: str | os.PathLike[str] = DEFAULT_DISCOVERY_FILE,
) -> DiscoveryConfig:
    path = Path(path)
    data = read_toml(path, "discovery file", DISCOVERY_FILE_ENV, DiscoveryConfigError)
    return parse_discovery_config(data, str(path))


def parse_discovery_config(data: Mapping[str, Any], where: str) -> DiscoveryConfig:
    _known(data, {"version", "defaults", *KINDS}, where)
    version = data.get("version")
    if not isinstance(version, str) or not version.strip():
        raise DiscoveryConfigError(f"{where}: version must be a non-empty string")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise DiscoveryConfigError(f"{where}: [defaults] must be a table")
    _known(defaults, {"max_age_hours", "schedule"}, f"{where} [defaults]")
    sources: list[DiscoverySource] = []
    for kind in KINDS:
        entries = data.get(kind, [])
        if not isinstance(entries, list):
            raise DiscoveryConfigError(f"{where}: [[{kind}]] must be an array of tables")
        for number, raw in enumerate(entries, 1):
            sources.append(_source(kind, raw, defaults, f"{where} [[{kind}]] #{number}"))
    names = [s.name for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1} | ({OWN_LIST} & set(names)))
    if twice:
        raise DiscoveryConfigError(
            f"{where}: source names must be unique and not {OWN_LIST!r}: {', '.join(twice)}"
        )
    return DiscoveryConfig(where, version.strip(), tuple(sources))


_COMMON = {"name", "market", "schedule", "max_age_hours", "why", "pages"}
_KEYS: dict[str, set[str]] = {
    "finder": _COMMON | {"per_page", "selection"},
    "deals": _COMMON | {"price_type", "min_drop_pct", "max_drop_pct", "date_range", "sort"},
    "best_sellers": _COMMON | {"category"},
}


def _source(kind: SourceKind, raw: Any, defaults: Mapping[str, Any], where: str) -> DiscoverySource:
    if not isinstance(raw, Mapping):
        raise DiscoveryConfigError(f"{where} must be a table")
    _known(raw, _KEYS[kind], where)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DiscoveryConfigError(
            f"{where}: name must be 1-40 characters of a-z, 0-9, '-', '_' (got {name!r})"
        )
    where = f"{where} ({name})"
    market = raw.get("market")
    if market not in MARKETPLACES:
        raise DiscoveryConfigError(
            f"{where}: market must be one of {', '.join(sorted(MARKETPLACES))} (got {market!r})"
        )
    schedule = raw.get("schedule", defaults.get("schedule", "0 * * * *"))
    if not isinstance(schedule, str) or not _is_cron(schedule):
        raise DiscoveryConfigError(
            f"{where}: schedule must be a five-field cron (got {schedule!r})"
        )
    common: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "market": market,
        "schedule": schedule,
        "max_age_hours": _int(raw, "max_age_hours", defaults.get("max_age_hours", 48), where),
        "why": _text(raw, "why", where),
        "pages": _int(raw, "pages", 1, where),
    }
    if kind == "finder":
        per_page = _int(raw, "per_page", 100, where)
        selection = raw.get("selection")
        if not isinstance(selection, Mapping) or not selection:
            raise DiscoveryConfigError(f"{where}: [finder.selection] must be a non-empty table")
        if {"page", "perPage"} & set(selection):
            raise DiscoveryConfigError(
                f"{where}: page and perPage are set by pages and per_page, not in the selection"
            )
        try:
            finder_page_limits(common["pages"] - 1, per_page)
        except ValueError as exc:
            raise DiscoveryConfigError(f"{where}: {exc}") from None
        return DiscoverySource(**common, per_page=per_page, selection=dict(selection))
    if kind == "deals":
        price_type = raw.get("price_type", "new")
        if price_type not in DEAL_PRICE_TYPES:
            raise DiscoveryConfigError(
                f"{where}: price_type must be one of {', '.join(DEAL_PRICE_TYPES)}"
            )
        low = _int(raw, "min_drop_pct", 0, where, minimum=0)
        high = _int(raw, "max_drop_pct", 100, where, minimum=0)
        if not low <= high <= 100:
            raise DiscoveryConfigError(
                f"{where}: 0 ≤ min_drop_pct ≤ max_drop_pct ≤ 100 (got {low}, {high})"
            )
        date_range = raw.get("date_range", "day")
        if date_range not in DEAL_DATE_RANGES:
            raise DiscoveryConfigError(
                f"{where}: date_range must be one of {', '.join(DEAL_DATE_RANGES)}"
            )
        sort = raw.get("sort", "newest")
        if sort not in DEAL_SORTS:
            raise DiscoveryConfigError(f"{where}: sort must be one of {', '.join(DEAL_SORTS)}")
        return DiscoverySource(
            **common,
            price_type=DEAL_PRICE_TYPES[price_type],
            drop_pct=(low, high),
            date_range=DEAL_DATE_RANGES[date_range],
            sort_type=DEAL_SORTS[sort],
        )
    return DiscoverySource(**common, category=_int(raw, "category", 0, where))


def _is_cron(text: str) -> bool:
    try:
        cron.parse(text)
    except cron.CronError:
        return False
    return True


def _known(raw: Mapping[str, Any], keys: set[str], where: str) -> None:
    refuse_unknown_keys(raw, keys, where, DiscoveryConfigError, "setting(s)")


def _int(raw: Mapping[str, Any], key: str, default: Any, where: str, minimum: int = 1) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DiscoveryConfigError(f"{where}: {key} must be an integer ≥ {minimum} (got {value!r})")
    return value


def _text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise DiscoveryConfigError(f"{where}: {key} must be text")
    return value.strip()
