"""What the v1 and v2 evaluations share: the exact per-market factors, the block-by-block
walk over products, the route plan that fills one integer block in place, the thresholds and
the string columns of the frame."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.fee_model.matrix import (
    FEE_COLUMNS,
    MARKET_CODES,
    ROUTES,
    MarketMatrix,
)
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.money import INT64_SAFE, round_half_even_array


@dataclass(frozen=True)
class MarketFactors:
    """Per-market exact factors as (numerator, denominator) integer pairs."""

    net_num: int  # fx / (1 + vat): gross minor units → net EUR cents
    net_den: int
    fx_num: int  # fx: minor units → EUR cents
    fx_den: int


def market_factors(config: FeeConfig) -> list[MarketFactors]:
    factors = []
    for code in MARKET_CODES:
        fx = config.fx(MARKETPLACES[code].currency)
        net = fx / (1 + config.vat_pct[code] / 100)
        factors.append(MarketFactors(net.numerator, net.denominator, fx.numerator, fx.denominator))
        # Largest intermediate: price (≤ 1e7) × fx numerator × 10 000 (referral in 0.01 %).
        if 10_000_000 * max(net.numerator, fx.numerator) * 10_000 >= INT64_SAFE:
            raise ValueError(f"FX/VAT for {code} need too many digits for exact int64 arithmetic")
    return factors


# What pandas makes of a column of Python strings: the pyarrow-backed string dtype by default
# since pandas 3, object before.
_STR_DTYPE = pd.Series(np.array(["DE"], dtype=object)).dtype
_ARROW_STRINGS = isinstance(_STR_DTYPE, pd.StringDtype) and _STR_DTYPE.storage == "pyarrow"


def take_strings(strings: Sequence[str], *indexes: npt.NDArray[Any]) -> list[Any]:
    """``strings[index]`` for each index, as the column pandas infers from Python strings.

    Built in Arrow when pandas keeps strings in Arrow: converting millions of Python string
    objects was the largest single cost of evaluate_routes. ASINs and market codes all have
    one length, so their bytes are gathered as fixed-size items, several times faster than
    Arrow's variable-width ``take``, and columns of one length share one (immutable) offsets
    buffer: a million products' routes need ~150 MB of it per column.
    """
    if not _ARROW_STRINGS:
        return [np.asarray(strings, dtype=object)[index] for index in indexes]
    values = pa.array(strings, type=pa.large_string())
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[: len(values) + 1]
    widths = np.diff(offsets)
    if values.null_count or not len(values) or widths[0] <= 0 or (widths != widths[0]).any():
        return [pd.array(values.take(index), dtype=_STR_DTYPE) for index in indexes]
    width = int(widths[0])
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[: len(values) * width]
    items = data.view(f"V{width}")
    shared: dict[int, pa.Buffer] = {}
    columns = []
    for index in indexes:
        if len(index) not in shared:
            shared[len(index)] = pa.py_buffer(
                np.arange(0, (len(index) + 1) * width, width, dtype=np.int64)
            )
        gathered = np.take(items, index).view(np.uint8)
        taken = pa.LargeStringArray.from_buffers(
            len(index), shared[len(index)], pa.py_buffer(gathered)
        )
        columns.append(pd.array(taken, dtype=_STR_DTYPE))
    return columns


# Products evaluated together in evaluate_routes: each market's lines are computed once per
# block and every route of the block gathers from them while they are still in the CPU caches.
# Small enough that the temporaries are reused from the heap rather than freshly mapped (and
# page-faulted) for every operation, which profiling showed to cost several times the work.
BLOCK_ROWS = 8_192


def by_market(grid: npt.NDArray[np.int64], first: int, last: int) -> npt.NDArray[np.int64]:
    """Rows first..last of an (n, markets) grid as a contiguous (markets, rows) array."""
    return np.ascontiguousarray(grid[first:last].T)


def round_rows(
    values: npt.NDArray[np.int64], numerators: Sequence[int], denominators: Sequence[int]
) -> npt.NDArray[np.int64]:
    """Row m of ``values`` × numerators[m] / denominators[m], rounded half-even (exact).

    Row by row, so each division has one scalar divisor (several times faster than a column
    of divisors) and a divisor of 1 (EUR) divides nothing.
    """
    out = np.empty_like(values)
    for market, (numerator, denominator) in enumerate(zip(numerators, denominators, strict=True)):
        scaled = values[market] * numerator
        out[market] = scaled if denominator == 1 else round_half_even_array(scaled, denominator)
    return out


def inbound_eur_cents(weight_g: npt.NDArray[np.int64], config: FeeConfig) -> npt.NDArray[np.int64]:
    return np.maximum(
        config.inbound_min_eur_cents,
        round_half_even_array(weight_g * config.inbound_per_kg_eur_cents, 1000),
    )


class RoutePlan:
    """Where each route's rows go in evaluate_routes' integer block, and the frame at the end.

    The block is one (column × route row) int64 array filled in place: pandas takes it as the
    frame's integer block as is, with no per-route frames, concat or consolidation copy.
    Rows stay route by route (ROUTES order), products ascending, though they are computed
    block of products by block of products.
    """

    def __init__(self, columns: Sequence[str], counts: Sequence[tuple[int, int, int]]) -> None:
        self.columns = tuple(columns)
        total = sum(count for _, _, count in counts)
        self.block = np.empty((len(self.columns), total), dtype=np.int64)
        self.buy_code = np.empty(total, dtype=np.int8)
        self.sell_code = np.empty(total, dtype=np.int8)
        self.flags = np.empty(total, dtype=bool)
        self.row = self.columns.index("row")
        self.routes = [(b, s) for b, s, _ in counts]
        self.next: list[int] = []  # where each route's next rows go
        start = 0
        for b, s, count in counts:
            self.next.append(start)
            self.buy_code[start : start + count] = b
            self.sell_code[start : start + count] = s
            start += count

    @classmethod
    def of(cls, matrix: MarketMatrix, columns: Sequence[str]) -> RoutePlan | None:
        """The plan of the routes with rows (None if there are none)."""
        buyable, sellable = matrix.buy > 0, matrix.sell > 0
        counts = []
        for b, s in ROUTES:
            count = int(np.count_nonzero(buyable[:, b] & sellable[:, s]))
            if count:
                counts.append((b, s, count))
        return cls(columns, counts) if counts else None

    def routes_of(
        self, first: int, buyable: npt.NDArray[np.bool_], sellable: npt.NDArray[np.bool_]
    ) -> Iterator[
        tuple[int, int, int, npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.bool_]]
    ]:
        """Per route with rows in the block of products from ``first`` (``buyable`` and
        ``sellable`` by market, then row of the block): (route index, b, s, the block's rows of
        the route, their columns in the integer block (row filled), their flags to fill)."""
        for index, (b, s) in enumerate(self.routes):
            rows = np.flatnonzero(buyable[b] & sellable[s])
            if not rows.size:
                continue
            start = self.next[index]
            end = self.next[index] = start + rows.size
            out = self.block[:, start:end]
            np.add(rows, first, out=out[self.row])
            yield index, b, s, rows, out, self.flags[start:end]

    def frame(self, matrix: MarketMatrix) -> pd.DataFrame:
        routes = pd.DataFrame(self.block.T, columns=list(self.columns), copy=False)
        (asins,) = take_strings(matrix.asins, self.block[self.row])
        buy_market, sell_market = take_strings(MARKET_CODES, self.buy_code, self.sell_code)
        routes.insert(1, "asin", asins)
        routes.insert(2, "buy_market", buy_market)
        routes.insert(3, "sell_market", sell_market)
        routes["qualifies"] = self.flags
        return routes


def qualifies(routes: pd.DataFrame, config: FeeConfig) -> pd.Series:
    """The alert thresholds; ROI compared exactly as profit × den ≥ num × buy_net."""
    return qualifying(routes["profit_eur_cents"], routes["buy_net"], routes["sales_rank"], config)


def qualifying(profit: Any, buy_net: Any, rank: Any, config: FeeConfig) -> Any:
    """The thresholds on Series or arrays alike (evaluate_routes applies them per slice)."""
    return (
        (buy_net > 0)
        & (profit >= config.min_profit_eur_cents)
        & (profit * config.min_roi.denominator >= buy_net * config.min_roi.numerator)
        & (rank > 0)
        & (rank <= config.max_sales_rank)
    )


def empty_routes(fee_columns: Sequence[str] = FEE_COLUMNS) -> pd.DataFrame:
    columns = ["row", "asin", "buy_market", "sell_market", "buy_price", "sell_price", *fee_columns]
    frame = pd.DataFrame({name: pd.Series(dtype="int64") for name in columns})
    frame["asin"] = frame["asin"].astype(object)
    frame["buy_market"] = frame["buy_market"].astype(object)
    frame["sell_market"] = frame["sell_market"].astype(object)
    frame["profit_eur_cents"] = pd.Series(dtype="int64")
    frame["sales_rank"] = pd.Series(dtype="int64")
    frame["qualifies"] = pd.Series(dtype=bool)
    return frame
