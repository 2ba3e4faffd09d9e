"""Fee model v1 (DESIGN §6) and arbitrage detection, vectorised over a batch of products.

All money is integer: each named quantity is ``amount × n / d`` with exact integers, rounded
once, half-even, to whole EUR cents (see ``pipelines.money``). ``evaluate_route`` is the same
model written plainly for one (product, buy market, sell market) with ``Fraction``s; tests
hold the two equal and the benchmark uses it as the per-row baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import permutations

import numpy as np
import numpy.typing as npt
import pandas as pd

from pipelines.fee_config import FeeConfig
from pipelines.markets import MARKETPLACES
from pipelines.money import INT64_SAFE, round_fraction, round_half_even_array
from pipelines.schemas import ALERT_SCHEMA_VERSION, Alert, EnrichedProduct, alert_id

MARKET_CODES: tuple[str, ...] = tuple(sorted(MARKETPLACES))
ROUTES: tuple[tuple[int, int], ...] = tuple(permutations(range(len(MARKET_CODES)), 2))

FEE_COLUMNS = ("buy_net", "sell_net", "referral_fee", "fba_fee", "inbound_shipping")


@dataclass(frozen=True)
class MarketMatrix:
    """A batch of products as one row each, with an (n, markets) int64 array per fee input.

    0 in ``buy``/``sell`` means "not buyable/sellable there"; -1 in ``sales_rank`` unknown.
    """

    asins: list[str]
    buy: npt.NDArray[np.int64]
    sell: npt.NDArray[np.int64]
    referral_pct_x100: npt.NDArray[np.int64]
    fba_fee: npt.NDArray[np.int64]
    sales_rank: npt.NDArray[np.int64]
    weight_g: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.asins)


def market_matrix(products: Sequence[EnrichedProduct], config: FeeConfig) -> MarketMatrix:
    """Lay enriched products out as arrays; the only per-record Python loop of the fee model."""
    rows, width = len(products), len(MARKET_CODES)
    buy = np.zeros((rows, width), dtype=np.int64)
    sell = np.zeros((rows, width), dtype=np.int64)
    referral = np.zeros((rows, width), dtype=np.int64)
    fba = np.zeros((rows, width), dtype=np.int64)
    rank = np.full((rows, width), -1, dtype=np.int64)
    weight = np.empty(rows, dtype=np.int64)
    column = {code: index for index, code in enumerate(MARKET_CODES)}
    for row, product in enumerate(products):
        package_weight = product["package"]["weight_g"]
        weight[row] = config.default_weight_g if package_weight is None else package_weight
        for code, market in product["markets"].items():
            col = column[code]
            buy[row, col] = market["buy_price"] or 0
            sell[row, col] = market["sell_price"] or 0
            referral[row, col] = market["referral_pct_x100"]
            fba[row, col] = market["fba_fee_resolved"]
            rank[row, col] = market["sales_rank"]
    return MarketMatrix([p["asin"] for p in products], buy, sell, referral, fba, rank, weight)


@dataclass(frozen=True)
class _MarketFactors:
    """Per-market exact factors as (numerator, denominator) integer pairs."""

    net_num: int  # fx / (1 + vat): gross minor units → net EUR cents
    net_den: int
    fx_num: int  # fx: minor units → EUR cents
    fx_den: int


def _factors(config: FeeConfig) -> list[_MarketFactors]:
    factors = []
    for code in MARKET_CODES:
        fx = config.fx(MARKETPLACES[code].currency)
        net = fx / (1 + config.vat_pct[code] / 100)
        factors.append(_MarketFactors(net.numerator, net.denominator, fx.numerator, fx.denominator))
        # Largest intermediate: price (≤ 1e7) × fx numerator × 10 000 (referral in 0.01 %).
        if 10_000_000 * max(net.numerator, fx.numerator) * 10_000 >= INT64_SAFE:
            raise ValueError(f"FX/VAT for {code} need too many digits for exact int64 arithmetic")
    return factors


def evaluate_routes(matrix: MarketMatrix, config: FeeConfig) -> pd.DataFrame:
    """Every (product, buy market, sell market) with a buy and a sell price, with all fee lines.

    Columns: row, asin, buy_market, sell_market, buy_price, sell_price, the FEE_COLUMNS,
    profit_eur_cents, sales_rank, qualifies. Money columns are int64 EUR cents (prices in the
    market's minor units).
    """
    factors = _factors(config)
    inbound = np.maximum(
        config.inbound_min_eur_cents,
        round_half_even_array(matrix.weight_g * config.inbound_per_kg_eur_cents, 1000),
    )
    frames = []
    for b, s in ROUTES:
        rows = np.flatnonzero((matrix.buy[:, b] > 0) & (matrix.sell[:, s] > 0))
        if rows.size == 0:
            continue
        fb, fs = factors[b], factors[s]
        buy = matrix.buy[rows, b]
        sell = matrix.sell[rows, s]
        buy_net = round_half_even_array(buy * fb.net_num, fb.net_den)
        sell_net = round_half_even_array(sell * fs.net_num, fs.net_den)
        referral = round_half_even_array(
            sell * fs.fx_num * matrix.referral_pct_x100[rows, s], fs.fx_den * 10_000
        )
        fba = round_half_even_array(matrix.fba_fee[rows, s] * fs.fx_num, fs.fx_den)
        ship = inbound[rows]
        frames.append(
            pd.DataFrame(
                {
                    "row": rows,
                    "buy_market": MARKET_CODES[b],
                    "sell_market": MARKET_CODES[s],
                    "buy_price": buy,
                    "sell_price": sell,
                    "buy_net": buy_net,
                    "sell_net": sell_net,
                    "referral_fee": referral,
                    "fba_fee": fba,
                    "inbound_shipping": ship,
                    "profit_eur_cents": sell_net - referral - fba - ship - buy_net,
                    "sales_rank": matrix.sales_rank[rows, s],
                }
            )
        )
    if not frames:
        return _empty_routes()
    routes = pd.concat(frames, ignore_index=True)
    routes.insert(1, "asin", np.asarray(matrix.asins, dtype=object)[routes["row"].to_numpy()])
    routes["qualifies"] = qualifies(routes, config)
    return routes


def qualifies(routes: pd.DataFrame, config: FeeConfig) -> pd.Series:
    """DESIGN §6 thresholds; ROI compared exactly as profit × den ≥ num × buy_net."""
    profit = routes["profit_eur_cents"]
    buy_net = routes["buy_net"]
    rank = routes["sales_rank"]
    return (
        (buy_net > 0)
        & (profit >= config.min_profit_eur_cents)
        & (profit * config.min_roi.denominator >= buy_net * config.min_roi.numerator)
        & (rank > 0)
        & (rank <= config.max_sales_rank)
    )


def _empty_routes() -> pd.DataFrame:
    columns = ["row", "asin", "buy_market", "sell_market", "buy_price", "sell_price", *FEE_COLUMNS]
    frame = pd.DataFrame({name: pd.Series(dtype="int64") for name in columns})
    frame["asin"] = frame["asin"].astype(object)
    frame["buy_market"] = frame["buy_market"].astype(object)
    frame["sell_market"] = frame["sell_market"].astype(object)
    frame["profit_eur_cents"] = pd.Series(dtype="int64")
    frame["sales_rank"] = pd.Series(dtype="int64")
    frame["qualifies"] = pd.Series(dtype=bool)
    return frame


def detect_alerts(
    products: Sequence[EnrichedProduct], config: FeeConfig, detected_at: str
) -> list[Alert]:
    """The alerts for a batch, best profit first within each product."""
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


def _alert(product: EnrichedProduct, hit: object, config: FeeConfig, detected_at: str) -> Alert:
    buy_market: str = hit.buy_market  # type: ignore[attr-defined]
    sell_market: str = hit.sell_market  # type: ignore[attr-defined]
    buy_currency = MARKETPLACES[buy_market].currency
    sell_currency = MARKETPLACES[sell_market].currency
    buy_price, sell_price = int(hit.buy_price), int(hit.sell_price)  # type: ignore[attr-defined]
    profit, buy_net = int(hit.profit_eur_cents), int(hit.buy_net)  # type: ignore[attr-defined]
    return {
        "schema_version": ALERT_SCHEMA_VERSION,
        "alert_id": alert_id(product["asin"], buy_market, sell_market, buy_price, sell_price),
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
    }


# --------------------------------------------------------------------------- plain reference


@dataclass(frozen=True)
class RouteFees:
    buy_net: int
    sell_net: int
    referral_fee: int
    fba_fee: int
    inbound_shipping: int
    profit_eur_cents: int
    qualifies: bool


def evaluate_route(
    product: EnrichedProduct, buy_market: str, sell_market: str, config: FeeConfig
) -> RouteFees | None:
    """DESIGN §6 for one route, written as the formulas read; None if not buyable/sellable."""
    if buy_market == sell_market:
        return None
    buy_side = product["markets"].get(buy_market)
    sell_side = product["markets"].get(sell_market)
    if (
        buy_side is None
        or sell_side is None
        or not buy_side["buy_price"]
        or not sell_side["sell_price"]
    ):
        return None
    fx_buy = config.fx(MARKETPLACES[buy_market].currency)
    fx_sell = config.fx(MARKETPLACES[sell_market].currency)
    sell_eur = sell_side["sell_price"] * fx_sell
    buy_net = round_fraction(
        buy_side["buy_price"] * fx_buy / (1 + config.vat_pct[buy_market] / 100)
    )
    sell_net = round_fraction(sell_eur / (1 + config.vat_pct[sell_market] / 100))
    referral_fee = round_fraction(sell_eur * Fraction(sell_side["referral_pct_x100"], 100) / 100)
    fba_fee = round_fraction(sell_side["fba_fee_resolved"] * fx_sell)
    weight_g = product["package"]["weight_g"]
    weight_kg = Fraction(config.default_weight_g if weight_g is None else weight_g, 1000)
    inbound = max(
        config.inbound_min_eur_cents, round_fraction(config.inbound_per_kg_eur_cents * weight_kg)
    )
    profit = sell_net - referral_fee - fba_fee - inbound - buy_net
    rank = sell_side["sales_rank"]
    ok = (
        buy_net > 0
        and profit >= config.min_profit_eur_cents
        and Fraction(profit, buy_net) >= config.min_roi
        and 0 < rank <= config.max_sales_rank
    )
    return RouteFees(buy_net, sell_net, referral_fee, fba_fee, inbound, profit, ok)
