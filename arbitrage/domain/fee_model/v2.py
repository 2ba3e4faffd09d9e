"""Fee model v2, vectorised: referral schedules, closing fees, EFN or Pan-European
fulfilment, the digital services fee and VAT on Amazon's fees (docs/decisions.md 31)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from arbitrage.domain.fee_config import FeeConfig, FeesV2
from arbitrage.domain.fee_model.matrix import (
    FEE_COLUMNS_V2,
    MARKET_CODES,
    MarketMatrix,
)
from arbitrage.domain.fee_model.routes import (
    BLOCK_ROWS,
    RoutePlan,
    by_market,
    empty_routes,
    inbound_eur_cents,
    market_factors,
    qualifying,
    round_rows,
)
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.types import (
    MAX_PRICE_MINOR,
)
from arbitrage.domain.money import INT64_SAFE, round_half_even_array

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


def evaluate_routes_v2(matrix: MarketMatrix, config: FeeConfig, v2: FeesV2) -> pd.DataFrame:
    """evaluate_routes for a v2 config: the same routes, FEE_COLUMNS_V2 lines.

    Per route and product, in EUR cents, each rounded once (docs/fees.md):
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
    factors = market_factors(config)
    efn = v2.fulfilment == "efn"
    plan = RoutePlan.of(matrix, _INT_COLUMNS_V2)
    if plan is None:
        return empty_routes(FEE_COLUMNS_V2)
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
    for first in range(0, len(matrix), BLOCK_ROWS):
        last = min(len(matrix), first + BLOCK_ROWS)
        buy, sell = by_market(matrix.buy, first, last), by_market(matrix.sell, first, last)
        rank = by_market(matrix.sales_rank, first, last)
        flat = by_market(matrix.referral_pct_x100, first, last)
        fba = by_market(matrix.fba_fee, first, last)
        schedule = by_market(matrix.schedule, first, last)
        schedule[schedule < 0] = no_schedule
        tier = matrix.size_tier[first:last]
        buy_net = round_rows(buy, [f.net_num for f in factors], [f.net_den for f in factors])
        sell_net = round_rows(sell, [f.net_num for f in factors], [f.net_den for f in factors])
        # The quantities in the sell (or fulfilment) market's minor units, then in EUR cents.
        referral = np.stack(
            [_referral_x10000(sell[m], schedule[m], flat[m], tables[m]) for m in range(len(fx))]
        )
        closing = np.stack([tables[m].closing_fee[schedule[m]] for m in range(len(fx))])
        extra = (
            np.stack([surcharge[m][tier] for m in range(len(fx))]) if efn else np.zeros_like(sell)
        )
        referral_fee = round_rows(referral, fx_num, [d * 10_000 for d in fx_den])
        closing_fee = round_rows(closing, fx_num, fx_den)
        fba_fee = round_rows(fba, fx_num, fx_den)
        efn_fee = round_rows(extra, fx_num, fx_den)
        inbound = inbound_eur_cents(matrix.weight_g[first:last], config)
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
            flags[:] = qualifying(profit, out[at["buy_net"]], out[at["sales_rank"]], config)
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
