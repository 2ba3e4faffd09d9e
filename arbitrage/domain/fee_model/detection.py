"""From evaluated routes to alerts: the rules screen the routes that meet the thresholds, and
each hit becomes an ``Alert`` with its money lines and stable id."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.fee_model.matrix import (
    V2_ONLY_COLUMNS,
    market_matrix,
)
from arbitrage.domain.fee_model.v1 import evaluate_routes
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.types import (
    ALERT_SCHEMA_VERSION,
    Alert,
    EnrichedProduct,
    alert_id,
)
from arbitrage.domain.route_filters import (
    PASS,
    REASONS,
    alert_signals,
    filtered_counts,
    screen_routes,
    storage_line,
)
from arbitrage.domain.rules_config import RulesConfig


@dataclass(frozen=True)
class Detection:
    """A batch's alerts and how many routes each rule removed (``route_filters.REASONS``).

    ``rows[i]`` is the product (its position in the batch) of ``alerts[i]``; ``routes`` and
    ``reason`` (every evaluated route's row, markets and reason code) answer why a route is no
    alert (``reasons_of_rows``): the alert lifecycle closes an open opportunity with it.
    """

    alerts: list[Alert]
    filtered: dict[str, int]
    rows: list[int] = field(default_factory=list)
    routes: pd.DataFrame | None = None
    reason: npt.NDArray[np.int8] | None = None

    def reasons_of_rows(self, wanted: Collection[int]) -> dict[int, dict[tuple[str, str], str]]:
        """For each wanted row: its evaluated routes that are no alert, and why. A route that
        is absent was not evaluated (a market without a price)."""
        found: dict[int, dict[tuple[str, str], str]] = {row: {} for row in wanted}
        if self.routes is None or self.reason is None or not wanted:
            return found
        mask = np.isin(self.routes["row"].to_numpy(), np.fromiter(wanted, dtype=np.int64))
        mask &= self.reason != PASS
        at = np.flatnonzero(mask)
        rows = self.routes["row"].to_numpy()[at]
        buy = self.routes["buy_market"].to_numpy()[at]
        sell = self.routes["sell_market"].to_numpy()[at]
        for row, b, s, code in zip(rows, buy, sell, self.reason[at], strict=True):
            found[int(row)][(b, s)] = REASONS[code]
        return found


def detect(
    products: Sequence[EnrichedProduct], config: FeeConfig, rules: RulesConfig, detected_at: str
) -> Detection:
    """The alerts for a batch under a rules file, best profit first within each product.

    The fee model evaluates every route at the current prices; the rules then screen the routes
    that meet its thresholds (``route_filters.screen_routes``: the spike guard evaluates its
    routes again, here, at the guarded sell price). Alerts carry the rules' signals and version.
    """
    if not products:
        return Detection([], {})
    matrix = market_matrix(products, config)
    routes = evaluate_routes(matrix, config)
    screened = screen_routes(
        products, matrix, routes, rules, lambda sub: evaluate_routes(sub, config)
    )
    hits = screened.hits.sort_values(
        ["row", "profit_eur_cents", "buy_market", "sell_market"],
        ascending=[True, False, True, True],
    )
    alerts: list[Alert] = []
    rows: list[int] = []
    for hit in hits.itertuples(index=False):
        alerts.append(_alert(products[hit.row], hit, config, detected_at, rules))
        rows.append(int(hit.row))
    return Detection(alerts, filtered_counts(screened.reason), rows, routes, screened.reason)


def detect_alerts(
    products: Sequence[EnrichedProduct],
    config: FeeConfig,
    detected_at: str,
    rules: RulesConfig | None = None,
) -> list[Alert]:
    """The alerts for a batch, best profit first within each product.

    Without ``rules``: the fee model alone, the alerts exactly as before the rules existed
    (no signals, no rules version in the id); with them, ``detect``'s alerts.
    """
    if rules is not None:
        return detect(products, config, rules, detected_at).alerts
    if not products:
        return []
    routes = evaluate_routes(market_matrix(products, config), config)
    hits = routes[routes["qualifies"]].sort_values(
        ["row", "profit_eur_cents", "buy_market", "sell_market"],
        ascending=[True, False, True, True],
    )
    alerts: list[Alert] = []
    for hit in hits.itertuples(index=False):
        product = products[hit.row]
        alerts.append(_alert(product, hit, config, detected_at))
    return alerts


def _alert(
    product: EnrichedProduct,
    hit: object,
    config: FeeConfig,
    detected_at: str,
    rules: RulesConfig | None = None,
) -> Alert:
    buy_market: str = hit.buy_market  # type: ignore[attr-defined]
    sell_market: str = hit.sell_market  # type: ignore[attr-defined]
    buy_currency = MARKETPLACES[buy_market].currency
    sell_currency = MARKETPLACES[sell_market].currency
    buy_price, sell_price = int(hit.buy_price), int(hit.sell_price)  # type: ignore[attr-defined]
    profit, buy_net = int(hit.profit_eur_cents), int(hit.buy_net)  # type: ignore[attr-defined]
    versions = (
        {} if rules is None else {"fee_version": config.version, "rules_version": rules.version}
    )
    alert: Alert = {
        "schema_version": ALERT_SCHEMA_VERSION,
        "alert_id": alert_id(
            product["asin"], buy_market, sell_market, buy_price, sell_price, **versions
        ),
        "asin": product["asin"],
        "title": product["title"],
        "buy_market": buy_market,
        "sell_market": sell_market,
        "buy_price": {"amount": buy_price, "currency": buy_currency},
        "sell_price": {"amount": sell_price, "currency": sell_currency},
        "fx_buy_eur_per_unit": product["markets"][buy_market]["fx_eur_per_unit"],
        "fx_sell_eur_per_unit": product["markets"][sell_market]["fx_eur_per_unit"],
        "buy_net": buy_net,
        "sell_net": int(hit.sell_net),  # type: ignore[attr-defined]
        "referral_fee": int(hit.referral_fee),  # type: ignore[attr-defined]
        "fba_fee": int(hit.fba_fee),  # type: ignore[attr-defined]
        "inbound_shipping": int(hit.inbound_shipping),  # type: ignore[attr-defined]
        "profit_eur_cents": profit,
        "roi": round(profit / buy_net, 4),
        "sales_rank": int(hit.sales_rank),  # type: ignore[attr-defined]
        "fx_rates_date": config.fx_date,
        "fee_model_version": config.version,
        "source_timestamp": product["source_timestamp"],
        "detected_at": detected_at,
        **_v2_lines(hit, config),  # type: ignore[typeddict-item]
    }
    if rules is not None:
        sell_side = product["markets"][sell_market]
        alert["rules_version"] = rules.version
        alert["signals"] = alert_signals(  # type: ignore[typeddict-item]
            sell_side.get("signals"),
            int(sell_side["sell_price"] or 0),
            int(hit.missing),  # type: ignore[attr-defined]
            rules,
            product["markets"][buy_market].get("signals"),
        )
        storage = storage_line(product, sell_market, profit, rules, detected_at)
        if storage is not None:
            alert["signals"]["storage"] = storage  # type: ignore[typeddict-item]
    return alert


def _v2_lines(hit: object, config: FeeConfig) -> dict[str, Any]:
    """The lines only v2 has (a v1 alert stays exactly as it was)."""
    if config.v2 is None:
        return {}
    lines: dict[str, Any] = {name: int(getattr(hit, name)) for name in V2_ONLY_COLUMNS}
    lines["fulfilment"] = config.v2.fulfilment
    return lines
