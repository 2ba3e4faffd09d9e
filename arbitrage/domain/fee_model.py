"""Fee models v1 and v2 and arbitrage detection, vectorised over a batch (README, Fee model).

All money is integer: each named quantity is ``amount × n / d`` with exact integers, rounded
once, half-even, to whole EUR cents (see ``arbitrage.domain.money``). ``evaluate_route`` is the same
model written plainly for one (product, buy market, sell market) with ``Fraction``s; tests
hold the two equal and the benchmark uses it as the per-row baseline.

A v1 fee file (``FeeConfig.v2 is None``) is evaluated by the v1 code exactly as before; a v2
file adds referral schedules, closing fees, EFN or Pan-European fulfilment, the digital
services fee and VAT on Amazon's fees (docs/decisions.md 30), in ``_evaluate_routes_v2``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import permutations
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from arbitrage.domain.fee_config import FeeConfig, FeesV2
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.types import (
    ALERT_SCHEMA_VERSION,
    MAX_PRICE_MINOR,
    Alert,
    EnrichedProduct,
    alert_id,
)
from arbitrage.domain.money import INT64_SAFE, round_fraction, round_half_even_array
from arbitrage.domain.route_filters import (
    PASS,
    REASONS,
    alert_signals,
    filtered_counts,
    screen_routes,
)
from arbitrage.domain.rules_config import RulesConfig

MARKET_CODES: tuple[str, ...] = tuple(sorted(MARKETPLACES))
ROUTES: tuple[tuple[int, int], ...] = tuple(permutations(range(len(MARKET_CODES)), 2))

FEE_COLUMNS = ("buy_net", "sell_net", "referral_fee", "fba_fee", "inbound_shipping")
# v2's lines, in frame order: the v1 lines plus closing fee, EFN surcharge, digital services
# fee and the VAT an unregistered seller pays on Amazon's fees.
FEE_COLUMNS_V2 = (
    "buy_net",
    "sell_net",
    "referral_fee",
    "closing_fee",
    "fba_fee",
    "efn_fee",
    "dst_fee",
    "fee_vat",
    "inbound_shipping",
)
V2_ONLY_COLUMNS = ("closing_fee", "efn_fee", "dst_fee", "fee_vat")


@dataclass(frozen=True)
class MarketMatrix:
    """A batch of products as one row each, with an (n, markets) int64 array per fee input.

    0 in ``buy``/``sell`` means "not buyable/sellable there"; -1 in ``sales_rank`` unknown.
    The last three are filled for a v2 config only: the referral schedule of each (product,
    market) (-1: none), the product's size tier and its evaluation time (the pull, epoch ms).
    """

    asins: list[str]
    buy: npt.NDArray[np.int64]
    sell: npt.NDArray[np.int64]
    referral_pct_x100: npt.NDArray[np.int64]
    fba_fee: npt.NDArray[np.int64]
    sales_rank: npt.NDArray[np.int64]
    weight_g: npt.NDArray[np.int64]
    schedule: npt.NDArray[np.int64] | None = None
    size_tier: npt.NDArray[np.int64] | None = None
    timestamp_ms: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.asins)


# The fee inputs of one market of an enriched product, in MarketMatrix field order.
_FEE_FIELDS = ("buy_price", "sell_price", "referral_pct_x100", "fba_fee_resolved", "sales_rank")
# What a market the product is not listed on (or a missing price, null) reads as: no prices
# (0: not buyable/sellable there), no fees, rank unknown.
_ABSENT = {
    "buy_price": 0,
    "sell_price": 0,
    "referral_pct_x100": 0,
    "fba_fee_resolved": 0,
    "sales_rank": -1,
}
_PRICE_FIELDS = frozenset({"buy_price", "sell_price"})
_INT = pa.int64()


def _product_inputs(v2: bool) -> pa.StructType:
    """The Arrow type of what market_matrix reads from an enriched product (v2 reads more).

    Fields in the order enrichment writes them (and unpickling or decoding allocates their
    values): reading memory in order let the CPU prefetch it, 30 % faster on a million.
    """
    in_order = ("sales_rank", "root_category", "buy_price", "sell_price", "referral_pct_x100")
    market = [(name, _INT) for name in (*in_order, "fba_fee_resolved")]
    if not v2:
        market.remove(("root_category", _INT))
    package = ["weight_g", *(("length_mm", "width_mm", "height_mm") if v2 else ())]
    fields = [
        ("package", pa.struct([(name, _INT) for name in package])),
        ("markets", pa.struct([(code, pa.struct(market)) for code in MARKET_CODES])),
    ]
    if v2:
        fields = [
            ("category", pa.struct([("root_id", _INT)])),
            *fields,
            ("source_timestamp_ms", _INT),
        ]
    return pa.struct(fields)


_PRODUCT_INPUTS = _product_inputs(v2=False)
_PRODUCT_INPUTS_V2 = _product_inputs(v2=True)


def _field(array: pa.StructArray, name: str) -> pa.Array:
    return array.field(array.type.get_field_index(name))


def _ints(column: pa.Array, null: int) -> npt.NDArray[np.int64]:
    return column.fill_null(null).to_numpy(zero_copy_only=False)


def market_matrix(products: Sequence[EnrichedProduct], config: FeeConfig) -> MarketMatrix:
    """Lay enriched products out as arrays, with no per-record Python beyond list building.

    Arrow reads every fee input of a product (each market's, the package's, for v2 also the
    category and the pull time) out of its dicts in C, in one pass over the products, into
    exact int64 columns. Each product is visited once, in memory order: the data of a million
    products is far larger than the CPU caches, and a pass per input (or Python lists filled
    cell by cell) cost up to three times as much. A missing price (None) becomes 0, "not
    buyable/sellable there"; a market the product lacks reads as ``_ABSENT``.
    """
    v2 = config.v2
    # Arrow refuses an int beyond int64 rather than wrapping it; the types of the fee inputs
    # are checked before (parse_enriched_product).
    inputs = pa.array(products, type=_PRODUCT_INPUTS if v2 is None else _PRODUCT_INPUTS_V2)
    markets, package = _field(inputs, "markets"), _field(inputs, "package")
    grids: dict[str, list[npt.NDArray[np.int64]]] = {name: [] for name in _FEE_FIELDS}
    categories = []
    for code in MARKET_CODES:
        market = _field(markets, code)
        # flatten: a field of an absent market is null too.
        fields = dict(zip(market.type.names, market.flatten(), strict=True))
        for name in _FEE_FIELDS:
            column = fields[name]
            if name not in _PRICE_FIELDS and column.null_count > market.null_count:
                raise ValueError(f"a market of the batch has no {name}")
            grids[name].append(_ints(column, _ABSENT[name]))
        if v2 is not None:
            categories.append(_ints(fields["root_category"], -1))
    weight_g = _ints(_field(package, "weight_g"), config.default_weight_g)
    matrix = MarketMatrix(
        list(map(itemgetter("asin"), products)),
        *(np.stack(grids[name], axis=1) for name in _FEE_FIELDS),
        weight_g,
    )
    if v2 is None:
        return matrix
    product_root = _ints(_field(_field(inputs, "category"), "root_id"), -1)
    sides = ("length_mm", "width_mm", "height_mm")
    sides_mm = np.stack([_ints(_field(package, side), -1) for side in sides], axis=1)
    return dataclasses.replace(
        matrix,
        schedule=schedule_of(np.stack(categories, axis=1), product_root, v2),
        size_tier=size_tiers_of(weight_g, sides_mm, v2),
        timestamp_ms=_field(inputs, "source_timestamp_ms").to_numpy(zero_copy_only=False),
    )


def schedule_of(
    market_root: npt.NDArray[np.int64], product_root: npt.NDArray[np.int64], v2: FeesV2
) -> npt.NDArray[np.int64]:
    """Each (product, market)'s referral schedule index, -1 where none applies.

    ``FeesV2.category_key`` then ``schedule_for`` on arrays: a market's root category (column
    of ``market_root``, -1 unknown) is looked up in that market's table, an unknown one falls
    back to the product's root category in the union of the tables.
    """
    fallback = _schedule_lookup(v2.any_store_keys, v2, product_root)
    columns = [
        np.where(
            market_root[:, index] >= 0,
            _schedule_lookup(v2.category_keys[code], v2, market_root[:, index]),
            fallback,
        )
        for index, code in enumerate(MARKET_CODES)
    ]
    return np.stack(columns, axis=1)


def _schedule_lookup(
    table: dict[int, str], v2: FeesV2, roots: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Root category ids → schedule index through one id → key table (-1: none)."""
    pairs = sorted(
        (root, index) for root, key in table.items() if (index := v2.schedule_for(key)) >= 0
    )
    if not pairs:
        return np.full(roots.shape, -1, dtype=np.int64)
    ids = np.array([root for root, _ in pairs], dtype=np.int64)
    indexes = np.array([index for _, index in pairs], dtype=np.int64)
    position = np.minimum(np.searchsorted(ids, roots), len(ids) - 1)
    return np.where(ids[position] == roots, indexes[position], -1)


def size_tiers_of(
    weight_g: npt.NDArray[np.int64], sides_mm: npt.NDArray[np.int64], v2: FeesV2
) -> npt.NDArray[np.int64]:
    """Each package's size tier (``FeesV2.size_tier`` on arrays); a side < 0 is unknown."""
    unknown = (sides_mm < 0).any(axis=1)
    fallback = np.array(v2.size_tiers[v2.unknown_dimensions_tier].max_sides_mm, dtype=np.int64)
    sides = np.sort(sides_mm, axis=1)[:, ::-1]
    sides = np.where(unknown[:, None], fallback[None, :], sides)
    tier = np.full(len(weight_g), len(v2.size_tiers) - 1, dtype=np.int64)
    # Walk from the largest tier down, so the first (smallest) tier that fits is kept.
    for index in range(len(v2.size_tiers) - 1, -1, -1):
        limit = v2.size_tiers[index]
        fits = (weight_g <= limit.max_weight_g) & (
            sides <= np.array(limit.max_sides_mm, dtype=np.int64)
        ).all(axis=1)
        tier[fits] = index
    return tier


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
# What pandas makes of a column of Python strings: the pyarrow-backed string dtype by default
# since pandas 3, object before.
_STR_DTYPE = pd.Series(np.array(["DE"], dtype=object)).dtype
_ARROW_STRINGS = isinstance(_STR_DTYPE, pd.StringDtype) and _STR_DTYPE.storage == "pyarrow"


def _take_strings(strings: Sequence[str], *indexes: npt.NDArray[Any]) -> list[Any]:
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


def evaluate_routes(matrix: MarketMatrix, config: FeeConfig) -> pd.DataFrame:
    """Every (product, buy market, sell market) with a buy and a sell price, with all fee lines.

    Columns: row, asin, buy_market, sell_market, buy_price, sell_price, the FEE_COLUMNS,
    profit_eur_cents, sales_rank, qualifies. Money columns are int64 EUR cents (prices in the
    market's minor units). Rows come route by route (ROUTES order), products ascending. A v2
    config has the FEE_COLUMNS_V2 lines instead (``_evaluate_routes_v2``).
    """
    if config.v2 is not None:
        return _evaluate_routes_v2(matrix, config, config.v2)
    factors = _factors(config)
    plan = _RoutePlan.of(matrix, _INT_COLUMNS)
    if plan is None:
        return _empty_routes()
    at = {name: index for index, name in enumerate(_INT_COLUMNS)}
    for first in range(0, len(matrix), _BLOCK_ROWS):
        last = min(len(matrix), first + _BLOCK_ROWS)
        # Every line of a route depends on one market (or only on the product), so each is
        # computed once per market for the block and the routes only gather it.
        buy, sell = _by_market(matrix.buy, first, last), _by_market(matrix.sell, first, last)
        rank = _by_market(matrix.sales_rank, first, last)
        referral = _by_market(matrix.referral_pct_x100, first, last)
        fba = _by_market(matrix.fba_fee, first, last)
        buy_net = _round_rows(buy, [f.net_num for f in factors], [f.net_den for f in factors])
        sell_net = _round_rows(sell, [f.net_num for f in factors], [f.net_den for f in factors])
        referral_fee = _round_rows(
            sell * referral,
            [f.fx_num for f in factors],
            [f.fx_den * 10_000 for f in factors],
        )
        fba_fee = _round_rows(fba, [f.fx_num for f in factors], [f.fx_den for f in factors])
        inbound = _inbound(matrix.weight_g[first:last], config)
        # What a sale leaves before the buy: profit = sell_side[s] - buy_net[b], exactly.
        sell_side = sell_net - referral_fee - fba_fee - inbound
        for _, b, s, rows, out, flags in plan.routes_of(first, buy > 0, sell > 0):
            for name, source in (
                ("buy_price", buy[b]),
                ("sell_price", sell[s]),
                ("buy_net", buy_net[b]),
                ("sell_net", sell_net[s]),
                ("referral_fee", referral_fee[s]),
                ("fba_fee", fba_fee[s]),
                ("inbound_shipping", inbound),
                ("sales_rank", rank[s]),
                ("profit_eur_cents", sell_side[s]),
            ):
                np.take(source, rows, out=out[at[name]])
            profit = out[at["profit_eur_cents"]]
            profit -= out[at["buy_net"]]
            flags[:] = _qualifying(profit, out[at["buy_net"]], out[at["sales_rank"]], config)
    return plan.frame(matrix)


# Products evaluated together in evaluate_routes: each market's lines are computed once per
# block and every route of the block gathers from them while they are still in the CPU caches.
# Small enough that the temporaries are reused from the heap rather than freshly mapped (and
# page-faulted) for every operation, which profiling showed to cost several times the work.
_BLOCK_ROWS = 8_192


def _by_market(grid: npt.NDArray[np.int64], first: int, last: int) -> npt.NDArray[np.int64]:
    """Rows first..last of an (n, markets) grid as a contiguous (markets, rows) array."""
    return np.ascontiguousarray(grid[first:last].T)


def _round_rows(
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


def _inbound(weight_g: npt.NDArray[np.int64], config: FeeConfig) -> npt.NDArray[np.int64]:
    return np.maximum(
        config.inbound_min_eur_cents,
        round_half_even_array(weight_g * config.inbound_per_kg_eur_cents, 1000),
    )


class _RoutePlan:
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
    def of(cls, matrix: MarketMatrix, columns: Sequence[str]) -> _RoutePlan | None:
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
        (asins,) = _take_strings(matrix.asins, self.block[self.row])
        buy_market, sell_market = _take_strings(MARKET_CODES, self.buy_code, self.sell_code)
        routes.insert(1, "asin", asins)
        routes.insert(2, "buy_market", buy_market)
        routes.insert(3, "sell_market", sell_market)
        routes["qualifies"] = self.flags
        return routes


# --------------------------------------------------------------------------- v2, vectorised

# Pads a referral schedule's band bounds: above any price (≤ MAX_PRICE_MINOR), and small enough
# that no difference of two of them overflows.
_NO_BOUND = 2**40


@dataclass(frozen=True)
class _StoreReferral:
    """One store's referral schedules as arrays; row K (the last) is "no schedule"."""

    pct_x100: npt.NDArray[np.int64]  # (K + 1, bands)
    lower: npt.NDArray[np.int64]  # (K + 1, bands): each band's lower bound (exclusive)
    upper: npt.NDArray[np.int64]  # (K + 1, bands - 1): the bounds "up to"
    width: npt.NDArray[np.int64]  # (K + 1, bands): upper - lower, the last band unbounded
    total_basis: npt.NDArray[np.bool_]  # (K + 1,)
    min_fee_x10000: npt.NDArray[np.int64]  # (K + 1,) minimum fee × 10 000
    closing_fee: npt.NDArray[np.int64]  # (K + 1,)


def _store_referral(code: str, v2: FeesV2) -> _StoreReferral:
    bands = max([len(s.pct_x100) for s in v2.schedules] + [1])
    pct = np.zeros((len(v2.schedules) + 1, bands), dtype=np.int64)
    upper = np.full((len(v2.schedules) + 1, max(bands - 1, 1)), _NO_BOUND, dtype=np.int64)
    for k, schedule in enumerate(v2.schedules):
        rates = list(schedule.pct_x100)
        pct[k] = rates + [rates[-1]] * (bands - len(rates))
        bounds = schedule.up_to_minor[code]
        upper[k, : len(bounds)] = bounds
    upper = upper[:, : bands - 1]
    lower = np.concatenate([np.zeros((len(pct), 1), dtype=np.int64), upper], axis=1)
    padded = np.concatenate([upper, np.full((len(pct), 1), _NO_BOUND, dtype=np.int64)], axis=1)
    return _StoreReferral(
        pct,
        lower,
        upper,
        padded - lower,
        np.array([s.basis == "total" for s in v2.schedules] + [True]),
        np.array(
            [s.min_fee_minor[code] for s in v2.schedules] + [v2.referral_min_fee_minor[code]],
            dtype=np.int64,
        )
        * 10_000,
        np.array([s.closing_fee_minor[code] for s in v2.schedules] + [0], dtype=np.int64),
    )


def _referral_x10000(
    sell: npt.NDArray[np.int64],
    schedule: npt.NDArray[np.int64],
    flat_pct_x100: npt.NDArray[np.int64],
    table: _StoreReferral,
) -> npt.NDArray[np.int64]:
    """Referral fee × 10 000 in the sell currency's minor units, exactly, minimum applied.

    ``schedule`` indexes the table's rows (K: none, the enriched flat percentage applies).
    """
    pct = table.pct_x100[schedule]
    band = (sell[:, None] > table.upper[schedule]).sum(axis=1)
    whole = np.take_along_axis(pct, band[:, None], axis=1)[:, 0] * sell
    portions = (pct * np.clip(sell[:, None] - table.lower[schedule], 0, table.width[schedule])).sum(
        axis=1
    )
    flat = schedule == len(table.total_basis) - 1
    referral = np.where(table.total_basis[schedule], whole, portions)
    referral = np.where(flat, flat_pct_x100 * sell, referral)
    return np.maximum(referral, table.min_fee_x10000[schedule])


@dataclass(frozen=True)
class _Levies:
    """Integer coefficients of the digital services fee and the fee VAT, per DST period.

    For period j: dst = (Σ quantity_i × dst_coef[i][j]) / dst_den[j] in EUR cents, where the
    quantities are (referral × 10 000, closing fee, FBA fee, EFN surcharge); the same for VAT.
    The coefficients are Python ints (object arrays) when the rates have so many digits that
    an int64 sum could overflow: slower, still exact.
    """

    starts_ms: npt.NDArray[np.int64]
    dst_coef: list[npt.NDArray[np.int64]]
    dst_den: npt.NDArray[np.int64]
    vat_coef: list[npt.NDArray[np.int64]]
    vat_den: npt.NDArray[np.int64]


def _lcm_of(values: Sequence[Fraction]) -> int:
    return math.lcm(*(value.denominator for value in values))


def _levies(
    store: str, fx_sell: Fraction, fx_fulfil: Fraction, v2: FeesV2, bounds: Sequence[int]
) -> _Levies:
    """The DST and fee-VAT coefficients of one route; ``bounds`` are the four quantities'
    largest values, to tell whether int64 sums are safe."""
    selling = v2.dst.get((store, "selling"), ())
    fba = v2.dst.get((store, "fba"), ())
    starts = sorted({-(2**62)} | {start for start, _ in (*selling, *fba)})
    vat = Fraction(0) if v2.vat_registered else v2.seller_vat_pct / 100
    per_unit = (fx_sell / 10_000, fx_sell, fx_fulfil, fx_sell)
    dst_coef: list[list[int]] = [[], [], [], []]
    vat_coef: list[list[int]] = [[], [], [], []]
    dst_den: list[int] = []
    vat_den: list[int] = []
    wide = False
    for start in starts:
        ds = Fraction(v2.dst_pct_x100(store, "selling", start), 10_000)
        df = Fraction(v2.dst_pct_x100(store, "fba", start), 10_000)
        rates = (ds, ds, df, df)
        dst = [unit * rate for unit, rate in zip(per_unit, rates, strict=True)]
        fee_vat = [unit * (1 + rate) * vat for unit, rate in zip(per_unit, rates, strict=True)]
        for coefficients, out, dens in ((dst, dst_coef, dst_den), (fee_vat, vat_coef, vat_den)):
            denominator = _lcm_of(coefficients)
            integers = [int(c * denominator) for c in coefficients]
            if sum(b * c for b, c in zip(bounds, integers, strict=True)) >= INT64_SAFE:
                wide = True
            for i, value in enumerate(integers):
                out[i].append(value)
            dens.append(denominator)
    kind = object if wide else np.int64
    return _Levies(
        np.array(starts, dtype=np.int64),
        [np.array(c, dtype=kind) for c in dst_coef],
        np.array(dst_den, dtype=kind),
        [np.array(c, dtype=kind) for c in vat_coef],
        np.array(vat_den, dtype=kind),
    )


_INT_COLUMNS_V2 = (
    "row",
    "buy_price",
    "sell_price",
    *FEE_COLUMNS_V2,
    "profit_eur_cents",
    "sales_rank",
)


def _evaluate_routes_v2(matrix: MarketMatrix, config: FeeConfig, v2: FeesV2) -> pd.DataFrame:
    """evaluate_routes for a v2 config: the same routes, FEE_COLUMNS_V2 lines.

    Per route and product, in EUR cents, each rounded once (README, Fee model):
    referral = max(schedule(sell), minimum) × fx; closing = closing fee × fx; fba = the local fee
    (Pan-European: the sell market's; EFN: the buy market's) × its fx; efn = EFN surcharge of
    the size tier to the sell market × fx (0 for Pan-European); dst = selling fees × DST
    (selling) + (fba + efn) × DST (fba) at the evaluation date; fee_vat = (all of them incl.
    dst) × the seller country's VAT when not VAT-registered, else 0.

    Every line but dst and fee_vat depends on one market, so each is computed once per market
    for a block of products and the routes gather it; dst and fee_vat too, unless under EFN
    they levy the buy market's FBA fee (then that one term is added per route).
    """
    if matrix.schedule is None or matrix.size_tier is None or matrix.timestamp_ms is None:
        raise ValueError("a v2 fee config needs a market_matrix built with the same config")
    factors = _factors(config)
    efn = v2.fulfilment == "efn"
    plan = _RoutePlan.of(matrix, _INT_COLUMNS_V2)
    if plan is None:
        return _empty_routes(FEE_COLUMNS_V2)
    at = {name: index for index, name in enumerate(_INT_COLUMNS_V2)}
    tables = [_store_referral(code, v2) for code in MARKET_CODES]
    no_schedule = len(v2.schedules)  # the tables' last row
    surcharge = [np.array(v2.efn_surcharge_minor[code], dtype=np.int64) for code in MARKET_CODES]
    max_referral = max(
        MAX_PRICE_MINOR * 10_000,
        max(int(t.min_fee_x10000.max()) for t in tables),
    )
    max_closing = max(int(t.closing_fee.max()) for t in tables)
    max_surcharge = max(int(x.max()) for x in surcharge) if efn else 0
    fx = [config.fx(MARKETPLACES[code].currency) for code in MARKET_CODES]
    # The levies of each route, shared by the routes with the same store and fulfilment FX.
    levies: dict[tuple[int, Fraction], _RouteLevies] = {}
    route_levies = []
    for b, s in plan.routes:
        if max_referral * factors[s].fx_num >= INT64_SAFE:
            raise ValueError(f"FX for {MARKET_CODES[s]} needs too many digits for exact int64")
        fulfil = b if efn else s
        key = (s, fx[fulfil])
        if key not in levies:
            levies[key] = _RouteLevies(
                s,
                _levies(
                    MARKET_CODES[s],
                    fx[s],
                    fx[fulfil],
                    v2,
                    (max_referral, max_closing, MAX_PRICE_MINOR, max_surcharge),
                ),
                per_route_fba=efn,
            )
        route_levies.append(levies[key])
    fx_num = [f.fx_num for f in factors]
    fx_den = [f.fx_den for f in factors]
    for first in range(0, len(matrix), _BLOCK_ROWS):
        last = min(len(matrix), first + _BLOCK_ROWS)
        buy, sell = _by_market(matrix.buy, first, last), _by_market(matrix.sell, first, last)
        rank = _by_market(matrix.sales_rank, first, last)
        flat = _by_market(matrix.referral_pct_x100, first, last)
        fba = _by_market(matrix.fba_fee, first, last)
        schedule = _by_market(matrix.schedule, first, last)
        schedule[schedule < 0] = no_schedule
        tier = matrix.size_tier[first:last]
        buy_net = _round_rows(buy, [f.net_num for f in factors], [f.net_den for f in factors])
        sell_net = _round_rows(sell, [f.net_num for f in factors], [f.net_den for f in factors])
        # The quantities in the sell (or fulfilment) market's minor units, then in EUR cents.
        referral = np.stack(
            [_referral_x10000(sell[m], schedule[m], flat[m], tables[m]) for m in range(len(fx))]
        )
        closing = np.stack([tables[m].closing_fee[schedule[m]] for m in range(len(fx))])
        extra = (
            np.stack([surcharge[m][tier] for m in range(len(fx))]) if efn else np.zeros_like(sell)
        )
        referral_fee = _round_rows(referral, fx_num, [d * 10_000 for d in fx_den])
        closing_fee = _round_rows(closing, fx_num, fx_den)
        fba_fee = _round_rows(fba, fx_num, fx_den)
        efn_fee = _round_rows(extra, fx_num, fx_den)
        inbound = _inbound(matrix.weight_g[first:last], config)
        # What a sale leaves before the buy and the fulfilment: profit = sell_side[s] -
        # buy_net[b] - fba - dst - fee_vat, exactly.
        sell_side = sell_net - referral_fee - closing_fee - efn_fee - inbound
        quantities = (referral, closing, fba, extra)
        timestamps = matrix.timestamp_ms[first:last]
        for route_levy in levies.values():
            route_levy.prepare(quantities, timestamps)
        for index, b, s, rows, out, flags in plan.routes_of(first, buy > 0, sell > 0):
            route_levy = route_levies[index]
            fulfil = b if efn else s
            for name, source in (
                ("buy_price", buy[b]),
                ("sell_price", sell[s]),
                ("buy_net", buy_net[b]),
                ("sell_net", sell_net[s]),
                ("referral_fee", referral_fee[s]),
                ("closing_fee", closing_fee[s]),
                ("fba_fee", fba_fee[fulfil]),
                ("efn_fee", efn_fee[s]),
                ("inbound_shipping", inbound),
                ("sales_rank", rank[s]),
                ("profit_eur_cents", sell_side[s]),
            ):
                np.take(source, rows, out=out[at[name]])
            profit = out[at["profit_eur_cents"]]
            profit -= out[at["buy_net"]]
            profit -= out[at["fba_fee"]]
            for name, line in (("dst_fee", route_levy.dst), ("fee_vat", route_levy.vat)):
                if line.fill(rows, fba[fulfil], out[at[name]]):
                    profit -= out[at[name]]
            flags[:] = _qualifying(profit, out[at["buy_net"]], out[at["sales_rank"]], config)
    return plan.frame(matrix)


class _LevyLine:
    """dst or fee_vat of the routes of one store and fulfilment FX (``_Levies``):
    Σ quantity_i × coef_i[period] / den[period], rounded once, period by evaluation date."""

    def __init__(
        self,
        coefficients: Sequence[npt.NDArray[Any]],
        denominators: npt.NDArray[Any],
        per_route_fba: bool,
    ) -> None:
        self.coefficients = coefficients
        self.denominators = denominators
        # A rate of zero everywhere (no DST in this store, a VAT-registered seller): 0, as
        # the formula gives, without computing it.
        self.zero = all((c == 0).all() for c in coefficients)
        # Under EFN the FBA fee levied is the buy market's: that term differs route by route.
        self.per_route = per_route_fba and not (coefficients[2] == 0).all()
        self.fee: npt.NDArray[np.int64] | None = None
        self.partial: npt.NDArray[Any] | None = None
        self.fba_coefficient: Any = None
        self.denominator: Any = None

    def prepare(
        self,
        quantities: Sequence[npt.NDArray[np.int64]],
        store: int,
        period: npt.NDArray[np.intp],
    ) -> None:
        """Compute the block's per-market part (the quantities are (markets, rows))."""
        if self.zero:
            return
        terms = (0, 1, 3) if self.per_route else (0, 1, 2, 3)
        numerator = sum(
            quantities[i][store] * _of_period(self.coefficients[i], period) for i in terms
        )
        denominator = _of_period(self.denominators, period)
        if self.per_route:
            self.partial = numerator  # type: ignore[assignment]
            self.fba_coefficient = _of_period(self.coefficients[2], period)
            self.denominator = denominator
        else:
            self.fee = round_half_even_array(numerator, denominator)  # type: ignore[arg-type]

    def fill(
        self,
        rows: npt.NDArray[np.intp],
        fba: npt.NDArray[np.int64],
        out: npt.NDArray[np.int64],
    ) -> bool:
        """Write the line of a route's ``rows`` into ``out`` (``fba``: the FBA fees of the
        fulfilment market); False when it is zero."""
        if self.zero:
            out[:] = 0
            return False
        if not self.per_route:
            np.take(self.fee, rows, out=out)  # type: ignore[arg-type]
            return True
        assert self.partial is not None
        coefficient, denominator = self.fba_coefficient, self.denominator
        numerator = self.partial[rows] + fba[rows] * (
            coefficient[rows] if isinstance(coefficient, np.ndarray) else coefficient
        )
        out[:] = round_half_even_array(
            numerator,
            denominator[rows] if isinstance(denominator, np.ndarray) else denominator,
        )
        return True


def _of_period(values: npt.NDArray[Any], period: npt.NDArray[np.intp]) -> Any:
    """values[period], or the one value when every period has it (an int64 scalar keeps the
    arithmetic int64 and the division by one divisor fast; wide object values stay arrays)."""
    if values.dtype != object and (values == values[0]).all():
        return int(values[0])
    return values[period]


class _RouteLevies:
    """The DST and fee-VAT lines shared by the routes of one store and fulfilment FX."""

    def __init__(self, store: int, levies: _Levies, per_route_fba: bool) -> None:
        self.store = store
        self.starts_ms = levies.starts_ms
        self.dst = _LevyLine(levies.dst_coef, levies.dst_den, per_route_fba)
        self.vat = _LevyLine(levies.vat_coef, levies.vat_den, per_route_fba)

    def prepare(
        self, quantities: Sequence[npt.NDArray[np.int64]], timestamps: npt.NDArray[np.int64]
    ) -> None:
        if self.dst.zero and self.vat.zero:
            return
        period = np.searchsorted(self.starts_ms, timestamps, "right") - 1
        self.dst.prepare(quantities, self.store, period)
        self.vat.prepare(quantities, self.store, period)


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


def _empty_routes(fee_columns: Sequence[str] = FEE_COLUMNS) -> pd.DataFrame:
    columns = ["row", "asin", "buy_market", "sell_market", "buy_price", "sell_price", *fee_columns]
    frame = pd.DataFrame({name: pd.Series(dtype="int64") for name in columns})
    frame["asin"] = frame["asin"].astype(object)
    frame["buy_market"] = frame["buy_market"].astype(object)
    frame["sell_market"] = frame["sell_market"].astype(object)
    frame["profit_eur_cents"] = pd.Series(dtype="int64")
    frame["sales_rank"] = pd.Series(dtype="int64")
    frame["qualifies"] = pd.Series(dtype=bool)
    return frame


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
        )
    return alert


def _v2_lines(hit: object, config: FeeConfig) -> dict[str, Any]:
    """The lines only v2 has (a v1 alert stays exactly as it was)."""
    if config.v2 is None:
        return {}
    lines: dict[str, Any] = {name: int(getattr(hit, name)) for name in V2_ONLY_COLUMNS}
    lines["fulfilment"] = config.v2.fulfilment
    return lines


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
    # v2 only (0 under v1)
    closing_fee: int = 0
    efn_fee: int = 0
    dst_fee: int = 0
    fee_vat: int = 0


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
    if config.v2 is not None:
        return _evaluate_route_v2(product, buy_market, sell_market, config, config.v2)
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


def _evaluate_route_v2(
    product: EnrichedProduct, buy_market: str, sell_market: str, config: FeeConfig, v2: FeesV2
) -> RouteFees:
    """Fee model v2 for one route, as the README's rules read (the caller checked prices)."""
    buy_side, sell_side = product["markets"][buy_market], product["markets"][sell_market]
    fx_buy = config.fx(MARKETPLACES[buy_market].currency)
    fx_sell = config.fx(MARKETPLACES[sell_market].currency)
    buy, sell = buy_side["buy_price"] or 0, sell_side["sell_price"] or 0
    buy_net = round_fraction(buy * fx_buy / (1 + config.vat_pct[buy_market] / 100))
    sell_net = round_fraction(sell * fx_sell / (1 + config.vat_pct[sell_market] / 100))
    # Referral (sell currency): the category's schedule, else the enriched flat percentage;
    # never below the per-item minimum. Closing fee where the category has one.
    key = v2.category_key(
        sell_market, sell_side["root_category"], product["category"].get("root_id")
    )
    index = v2.schedule_for(key)
    if index < 0:
        referral = Fraction(sell_side["referral_pct_x100"], 10_000) * sell
        minimum, closing = v2.referral_min_fee_minor[sell_market], 0
    else:
        schedule = v2.schedules[index]
        rates = [Fraction(p, 10_000) for p in schedule.pct_x100]
        bounds = schedule.up_to_minor[sell_market]
        if schedule.basis == "total":
            band = sum(1 for bound in bounds if sell > bound)
            referral = rates[band] * sell
        else:
            lows, highs = (0, *bounds), (*bounds, None)
            referral = sum(
                (
                    rate * max(0, (sell if high is None else min(sell, high)) - low)
                    for rate, low, high in zip(rates, lows, highs, strict=True)
                ),
                Fraction(0),
            )
        minimum = schedule.min_fee_minor[sell_market]
        closing = schedule.closing_fee_minor[sell_market]
    referral = max(referral, Fraction(minimum))
    # Fulfilment: Pan-European → the sell market's local fee; EFN → the buy market's local fee
    # plus the surcharge of the product's size tier to the sell market.
    if v2.fulfilment == "efn":
        fba_eur = buy_side["fba_fee_resolved"] * fx_buy
        package = product["package"]
        weight = package["weight_g"]
        tier = v2.size_tier(
            config.default_weight_g if weight is None else weight,
            (package["length_mm"], package["width_mm"], package["height_mm"]),
        )
        efn_eur = v2.efn_surcharge_minor[sell_market][tier] * fx_sell
    else:
        fba_eur = sell_side["fba_fee_resolved"] * fx_sell
        efn_eur = Fraction(0)
    selling_eur = (referral + closing) * fx_sell
    fulfilment_eur = fba_eur + efn_eur
    at_ms = product["source_timestamp_ms"]
    dst_selling = Fraction(v2.dst_pct_x100(sell_market, "selling", at_ms), 10_000)
    dst_fba = Fraction(v2.dst_pct_x100(sell_market, "fba", at_ms), 10_000)
    dst_eur = selling_eur * dst_selling + fulfilment_eur * dst_fba
    vat = Fraction(0) if v2.vat_registered else v2.seller_vat_pct / 100
    fee_vat = round_fraction((selling_eur + fulfilment_eur + dst_eur) * vat)
    weight_g = product["package"]["weight_g"]
    weight_kg = Fraction(config.default_weight_g if weight_g is None else weight_g, 1000)
    inbound = max(
        config.inbound_min_eur_cents, round_fraction(config.inbound_per_kg_eur_cents * weight_kg)
    )
    lines = {
        "referral_fee": round_fraction(referral * fx_sell),
        "closing_fee": round_fraction(closing * fx_sell),
        "fba_fee": round_fraction(fba_eur),
        "efn_fee": round_fraction(efn_eur),
        "dst_fee": round_fraction(dst_eur),
        "fee_vat": fee_vat,
    }
    profit = sell_net - sum(lines.values()) - inbound - buy_net
    rank = sell_side["sales_rank"]
    ok = (
        buy_net > 0
        and profit >= config.min_profit_eur_cents
        and Fraction(profit, buy_net) >= config.min_roi
        and 0 < rank <= config.max_sales_rank
    )
    return RouteFees(
        buy_net=buy_net,
        sell_net=sell_net,
        inbound_shipping=inbound,
        profit_eur_cents=profit,
        qualifies=ok,
        **lines,
    )
