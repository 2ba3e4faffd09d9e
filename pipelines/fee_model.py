"""Fee model v1 and arbitrage detection, vectorised over a batch (docs/design.md, Fee model).

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
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from pipelines.fee_config import FeeConfig
from pipelines.markets import MARKETPLACES
from pipelines.messages.types import ALERT_SCHEMA_VERSION, Alert, EnrichedProduct, alert_id
from pipelines.money import INT64_SAFE, round_fraction, round_half_even_array

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


# The fee inputs of one market of an enriched product, in MarketMatrix field order.
_FEE_FIELDS = ("buy_price", "sell_price", "referral_pct_x100", "fba_fee_resolved", "sales_rank")
_PRICE_FIELDS = frozenset({"buy_price", "sell_price"})
_FEE_INPUTS = pa.struct([(name, pa.int64()) for name in _FEE_FIELDS])
# What a market the product is not listed on contributes: no prices (null → 0), rank unknown.
_ABSENT_MARKET: dict[str, int | None] = {
    "buy_price": None,
    "sell_price": None,
    "referral_pct_x100": 0,
    "fba_fee_resolved": 0,
    "sales_rank": -1,
}


def market_matrix(products: Sequence[EnrichedProduct], config: FeeConfig) -> MarketMatrix:
    """Lay enriched products out as arrays, with no per-record Python beyond list building.

    The market dicts are listed row by row (product, then market in MARKET_CODES order) and
    Arrow reads the five fee inputs out of each dict in C, into exact int64 columns. Each dict
    is visited once, in memory order: the data of a million products is far larger than the
    CPU caches, and reading one field per pass over all of them (or filling Python lists cell
    by cell) cost two to three times as much. A missing price (None) becomes 0, "not
    buyable/sellable there"; a market the product lacks reads as ``_ABSENT_MARKET``.
    """
    rows, width = len(products), len(MARKET_CODES)
    sides = [
        market.get(code, _ABSENT_MARKET)
        for market in map(itemgetter("markets"), products)
        for code in MARKET_CODES
    ]
    # Arrow refuses an int beyond int64 rather than wrapping it; the types of the fee inputs
    # are checked before (parse_enriched_product).
    inputs = pa.array(sides, type=_FEE_INPUTS)
    grids: dict[str, npt.NDArray[np.int64]] = {}
    for position, name in enumerate(_FEE_FIELDS):
        column = inputs.field(position)
        if column.null_count:
            if name not in _PRICE_FIELDS:
                raise ValueError(f"a market of the batch has no {name}")
            column = column.fill_null(0)
        grids[name] = column.to_numpy(zero_copy_only=False).reshape(rows, width)
    weight = pa.array(
        [package["weight_g"] for package in map(itemgetter("package"), products)],
        type=pa.int64(),
    ).fill_null(config.default_weight_g)
    return MarketMatrix(
        list(map(itemgetter("asin"), products)),
        grids["buy_price"],
        grids["sell_price"],
        grids["referral_pct_x100"],
        grids["fba_fee_resolved"],
        grids["sales_rank"],
        weight.to_numpy(zero_copy_only=False),
    )


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


# The integer columns of evaluate_routes, in frame order (asin and the markets go between).
_INT_COLUMNS = (
    "row",
    "buy_price",
    "sell_price",
    *FEE_COLUMNS,
    "profit_eur_cents",
    "sales_rank",
)
# Rows of one route computed together in evaluate_routes (see there).
_SLICE_ROWS = 16_384
# What pandas makes of a column of Python strings: the pyarrow-backed string dtype by default
# since pandas 3, object before.
_STR_DTYPE = pd.Series(np.array(["DE"], dtype=object)).dtype
_ARROW_STRINGS = isinstance(_STR_DTYPE, pd.StringDtype) and _STR_DTYPE.storage == "pyarrow"


def _take_strings(strings: Sequence[str], index: npt.NDArray[Any]) -> Any:
    """``strings[index]`` as the column pandas infers from Python strings.

    Built in Arrow when pandas keeps strings in Arrow: converting millions of Python string
    objects was the largest single cost of evaluate_routes. ASINs and market codes all have
    one length, so their bytes are gathered as fixed-size rows, several times faster than
    Arrow's variable-width ``take``.
    """
    if not _ARROW_STRINGS:
        return np.asarray(strings, dtype=object)[index]
    values = pa.array(strings, type=pa.large_string())
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[: len(values) + 1]
    widths = np.diff(offsets)
    if values.null_count or not len(values) or widths[0] <= 0 or (widths != widths[0]).any():
        return pd.array(values.take(index), dtype=_STR_DTYPE)
    width = int(widths[0])
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[: len(values) * width]
    gathered = data.reshape(-1, width)[index]
    offsets = np.arange(0, (len(index) + 1) * width, width, dtype=np.int64)
    taken = pa.LargeStringArray.from_buffers(
        len(index), pa.py_buffer(offsets), pa.py_buffer(gathered)
    )
    return pd.array(taken, dtype=_STR_DTYPE)


def evaluate_routes(matrix: MarketMatrix, config: FeeConfig) -> pd.DataFrame:
    """Every (product, buy market, sell market) with a buy and a sell price, with all fee lines.

    Columns: row, asin, buy_market, sell_market, buy_price, sell_price, the FEE_COLUMNS,
    profit_eur_cents, sales_rank, qualifies. Money columns are int64 EUR cents (prices in the
    market's minor units). Rows come route by route (ROUTES order), products ascending.
    """
    factors = _factors(config)
    inbound = np.maximum(
        config.inbound_min_eur_cents,
        round_half_even_array(matrix.weight_g * config.inbound_per_kg_eur_cents, 1000),
    )

    # Per-market columns made contiguous once: gathers from 1-D arrays are much faster than
    # fancy indexing (rows, market) into the 2-D ones, 20 routes over.
    def columns(grid: npt.NDArray[np.int64]) -> list[npt.NDArray[np.int64]]:
        return [np.ascontiguousarray(grid[:, market]) for market in range(grid.shape[1])]

    buy_at, sell_at = columns(matrix.buy), columns(matrix.sell)
    referral_at, fba_at = columns(matrix.referral_pct_x100), columns(matrix.fba_fee)
    rank_at = columns(matrix.sales_rank)
    buyable = [column > 0 for column in buy_at]
    sellable = [column > 0 for column in sell_at]
    selected = []
    for b, s in ROUTES:
        rows = np.flatnonzero(buyable[b] & sellable[s])
        if rows.size:
            selected.append((b, s, rows))
    if not selected:
        return _empty_routes()
    total = sum(rows.size for _, _, rows in selected)
    # One (column × route row) int64 array filled in place, route by route: pandas takes it as
    # the frame's integer block as is, with no per-route frames, concat or consolidation copy.
    block = np.empty((len(_INT_COLUMNS), total), dtype=np.int64)
    at = {name: index for index, name in enumerate(_INT_COLUMNS)}
    buy_code = np.empty(total, dtype=np.int8)
    sell_code = np.empty(total, dtype=np.int8)
    flags = np.empty(total, dtype=bool)
    start = 0
    for b, s, rows in selected:
        fb, fs = factors[b], factors[s]
        route_start = start
        # A route is computed in slices: the temporaries stay small enough to be reused from
        # the heap instead of being freshly mapped (and page-faulted) for every operation,
        # which profiling showed to be most of the time on a million products.
        for first in range(0, rows.size, _SLICE_ROWS):
            part = rows[first : first + _SLICE_ROWS]
            end = start + part.size
            out = block[:, start:end]
            buy = buy_at[b][part]
            sell = sell_at[s][part]
            out[at["row"]] = part
            out[at["buy_price"]] = buy
            out[at["sell_price"]] = sell
            out[at["buy_net"]] = round_half_even_array(buy * fb.net_num, fb.net_den)
            out[at["sell_net"]] = round_half_even_array(sell * fs.net_num, fs.net_den)
            out[at["referral_fee"]] = round_half_even_array(
                sell * fs.fx_num * referral_at[s][part], fs.fx_den * 10_000
            )
            out[at["fba_fee"]] = round_half_even_array(fba_at[s][part] * fs.fx_num, fs.fx_den)
            out[at["inbound_shipping"]] = inbound[part]
            out[at["profit_eur_cents"]] = (
                out[at["sell_net"]]
                - out[at["referral_fee"]]
                - out[at["fba_fee"]]
                - out[at["inbound_shipping"]]
                - out[at["buy_net"]]
            )
            out[at["sales_rank"]] = rank_at[s][part]
            flags[start:end] = _qualifying(
                out[at["profit_eur_cents"]], out[at["buy_net"]], out[at["sales_rank"]], config
            )
            start = end
        buy_code[route_start:start] = b
        sell_code[route_start:start] = s
    routes = pd.DataFrame(block.T, columns=list(_INT_COLUMNS), copy=False)
    routes.insert(1, "asin", _take_strings(matrix.asins, block[at["row"]]))
    routes.insert(2, "buy_market", _take_strings(MARKET_CODES, buy_code))
    routes.insert(3, "sell_market", _take_strings(MARKET_CODES, sell_code))
    routes["qualifies"] = flags
    return routes


def qualifies(routes: pd.DataFrame, config: FeeConfig) -> pd.Series:
    """The alert thresholds; ROI compared exactly as profit × den ≥ num × buy_net."""
    return _qualifying(routes["profit_eur_cents"], routes["buy_net"], routes["sales_rank"], config)


def _qualifying(profit: Any, buy_net: Any, rank: Any, config: FeeConfig) -> Any:
    """The thresholds on Series or arrays alike (evaluate_routes applies them per slice)."""
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
    """The fee model for one route, written as the formulas read; None if not buyable/sellable."""
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
