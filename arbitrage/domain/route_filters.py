"""The signal rules applied to the fee model's routes, vectorised (docs/fees.md, "Rules";
decision 32).

The fee model (``arbitrage.domain.fee_model.evaluate_routes``) gives every (product, buy market,
sell market) with its money lines and whether it meets the fee thresholds. ``screen_routes`` then
gives each route a reason code (``REASONS``): 0 for an alert, ``below_thresholds`` where the fee
model already said no, else the first rule the route fails, in the order sales,
amazon_buy_box, fba_offers, stock, spike_guard. The rules read the sell market's signals of
those routes only (``gather_signals``: the fields ``signal_fields`` names, as int64 columns
through Arrow, -1 = Keepa has no data): a few per cent of all routes, so reading them costs far
less than a signal column for every (product, market) in ``market_matrix`` would.

The spike guard changes money, so it never patches a profit: the routes it applies to are
evaluated again by the fee model itself, from a matrix whose sell price is the lower of the
current one and the configured 90-day average, and take those lines. A route that meets the
thresholds at its current price but not at the guarded one is a ``price_spike``. A route the
fee model turned down at the current price is never evaluated again, so no rule can add an
alert; and where the lower price gives a higher profit (a cent of rounding, or a v2 referral
band edge), the route keeps its current-price lines, so the guard never raises a profit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.types import EnrichedProduct
from arbitrage.domain.money import round_fraction, round_half_even_array
from arbitrage.domain.rules_config import RulesConfig
from arbitrage.domain.storage import storage_cost, time_to_sell

if TYPE_CHECKING:
    from arbitrage.domain.fee_model import MarketMatrix

MARKET_CODES: tuple[str, ...] = tuple(sorted(MARKETPLACES))

# Reason codes of screen_routes, in the int8 "reason" column; 0 = the route is an alert.
REASONS: tuple[str, ...] = (
    "",
    "below_thresholds",
    "no_sales_data",
    "low_sales",
    "no_buy_box_data",
    "amazon_buy_box",
    "no_fba_offer_data",
    "fba_offers",
    "no_stock_data",
    "out_of_stock",
    "no_average_price",
    "price_spike",
    # The risk rules (appended: the codes above keep their numbers).
    "no_hazmat_data",
    "hazmat",
    "no_pack_data",
    "pack_mismatch",
    "no_return_data",
    "high_returns",
    "no_listing_type",
    "variation_parent",
    "no_brand_data",
    "restricted",
    "no_time_to_sell_data",
    "slow_to_sell",
)
PASS, BELOW_THRESHOLDS = 0, 1
_CODE = {name: code for code, name in enumerate(REASONS)}
# What the rules removed: every reason but an alert's and the fee model's own.
RULE_REASONS: tuple[str, ...] = REASONS[2:]

# Bits of the "missing" column: a rule passed the route although its signal was missing
# (on_missing = "pass"); the alert names them in signals.missing.
MISSING_BITS: tuple[tuple[str, int], ...] = (
    ("sales", 1),
    ("average_price", 2),
    ("amazon_buy_box", 4),
    ("fba_offers", 8),
    ("stock", 16),
    ("hazmat", 32),
    ("pack_quantity", 64),
    ("return_rate", 128),
    ("variation_parent", 256),
    ("restrictions", 512),
    ("time_to_sell", 1024),
)
_MISSING_BIT = dict(MISSING_BITS)

# The money columns a guarded evaluation replaces (every integer column but row and rank).
_GUARDED_KEEP = ("row", "asin", "buy_market", "sell_market", "sales_rank")


def sales_field(rules: RulesConfig) -> str:
    return "sales_rank_drops30" if rules.sales.estimator == "drops30" else "sales_rank_drops90"


def average_field(rules: RulesConfig) -> str:
    return f"{rules.spike_guard.average}_avg90"


def stock_field(rules: RulesConfig) -> str:
    return f"{rules.stock.series}_oos_pct90"


def signal_fields(rules: RulesConfig) -> tuple[str, ...]:
    """The signals the enabled rules read (none for rules_none)."""
    wanted = []
    if rules.sales.enabled:
        wanted.append(sales_field(rules))
        if rules.sales.use_monthly_sold:
            wanted.append("monthly_sold")
    if rules.amazon_buy_box.enabled:
        wanted.append("buy_box_amazon_pct")
    if rules.fba_offers.enabled:
        wanted.append("offer_count_fba")
    if rules.stock.enabled:
        wanted.append(stock_field(rules))
    if rules.spike_guard.enabled:
        wanted.append(average_field(rules))
    return tuple(wanted)


def monthly_sales(drops: Any, rules: RulesConfig) -> Any:
    """Estimated sales a month from rank drops: drops30 as is, or drops90 / 3 rounded
    half-even; arrays (-1 = unknown stays -1) or one int (None stays None)."""
    if rules.sales.estimator == "drops30":
        return drops
    if drops is None:
        return None
    if isinstance(drops, np.ndarray):
        return np.where(drops < 0, -1, round_half_even_array(np.maximum(drops, 0), 3))
    return round_fraction(Fraction(int(drops), 3))


# What an alert's sales figure came from (signals.sales_estimator): Amazon's own figure.
AMAZON_MONTHLY_SOLD = "monthly_sold"


def sales_per_month(monthly_sold: Any, drops: Any, rules: RulesConfig) -> Any:
    """Sales a month: Amazon's "bought in the past month" where the product has it and the
    rules use it, else the rank-drop estimate; arrays (-1 = unknown) or one value (None)."""
    estimate = monthly_sales(drops, rules)
    if not rules.sales.use_monthly_sold:
        return estimate
    if isinstance(estimate, np.ndarray):
        return np.where(monthly_sold > 0, monthly_sold, estimate)
    return monthly_sold if monthly_sold is not None else estimate


def sales_source(monthly_sold: Any, rules: RulesConfig) -> str:
    """The name of what ``sales_per_month`` used for one product."""
    if rules.sales.use_monthly_sold and monthly_sold is not None:
        return AMAZON_MONTHLY_SOLD
    return rules.sales.estimator


@dataclass(frozen=True)
class Screened:
    """What the rules made of a batch's routes.

    ``reason`` and ``missing`` run along the routes frame (int8 codes into REASONS, and
    MISSING_BITS); ``hits`` are the alert routes (reason 0) with their final money lines (the
    guarded ones where the spike guard lowered the sell price) and their ``missing`` bits.
    """

    reason: npt.NDArray[np.int8]
    missing: npt.NDArray[np.int8]
    hits: pd.DataFrame


def gather_signals(
    products: Sequence[EnrichedProduct],
    rows: npt.NDArray[np.int64],
    markets: npt.NDArray[np.int64],
    names: Sequence[str],
) -> dict[str, npt.NDArray[np.int64]]:
    """The signals ``names`` of market ``markets[i]`` of product ``rows[i]``, as int64 columns;
    -1 where Keepa has no data (the field is null, or the market has no signals object)."""
    if not names:
        return {}
    sides = [
        products[row]["markets"][MARKET_CODES[market]].get("signals")
        for row, market in zip(rows.tolist(), markets.tolist(), strict=True)
    ]
    array = pa.array(sides, type=pa.struct([(name, pa.int64()) for name in names]))
    # flatten() folds the parent's nulls (no signals object) into each child.
    return {
        name: child.fill_null(-1).to_numpy(zero_copy_only=False)
        for name, child in zip(names, array.flatten(), strict=True)
    }


def screen_routes(
    products: Sequence[EnrichedProduct],
    matrix: MarketMatrix,
    routes: pd.DataFrame,
    rules: RulesConfig,
    evaluate: Callable[[MarketMatrix], pd.DataFrame],
) -> Screened:
    """Apply the rules to the fee model's routes of ``products`` (``matrix`` is theirs;
    ``evaluate`` is the fee model's ``evaluate_routes`` for the same fee configuration, called
    again for the routes the spike guard lowers)."""
    qualifies = routes["qualifies"].to_numpy()
    reason = np.where(qualifies, PASS, BELOW_THRESHOLDS).astype(np.int8)
    missing = np.zeros(len(routes), dtype=np.int16)
    # Only routes that meet the fee thresholds are screened: few, so the gathers are cheap.
    at = np.flatnonzero(qualifies)
    if not rules.any_enabled or not at.size:
        return Screened(reason, missing, routes.iloc[at].assign(missing=missing[at]))
    rows = routes["row"].to_numpy()[at]
    # Strings of the candidates only: converting the whole Arrow column would cost more.
    sell = _market_index(routes["sell_market"].take(at).to_numpy())
    signals = gather_signals(products, rows, sell, signal_fields(rules))
    signal = signals.__getitem__

    code = np.zeros(at.size, dtype=np.int8)
    flags = np.zeros(at.size, dtype=np.int16)

    def apply(
        rule: Any, value: npt.NDArray[np.int64], fails: Any, no_data: str, failed: str, bit: int
    ) -> None:
        open_ = code == PASS
        unknown = value < 0
        if rule.on_missing == "skip":
            code[open_ & unknown] = _CODE[no_data]
        else:
            flags[open_ & unknown] |= bit
        code[open_ & ~unknown & fails(value)] = _CODE[failed]

    if rules.sales.enabled:
        sold = signal("monthly_sold") if rules.sales.use_monthly_sold else None
        estimate = sales_per_month(sold, signal(sales_field(rules)), rules)
        minimum = rules.sales.min_monthly_sales
        apply(rules.sales, estimate, lambda v: v < minimum, "no_sales_data", "low_sales", 1)
    if rules.amazon_buy_box.enabled:
        share, limit = signal("buy_box_amazon_pct"), rules.amazon_buy_box.max_pct
        apply(
            rules.amazon_buy_box,
            share,
            lambda v: v > limit,
            "no_buy_box_data",
            "amazon_buy_box",
            4,
        )
    if rules.fba_offers.enabled:
        offers, most = signal("offer_count_fba"), rules.fba_offers.max_offers
        apply(rules.fba_offers, offers, lambda v: v > most, "no_fba_offer_data", "fba_offers", 8)
    if rules.stock.enabled:
        oos, ceiling = signal(stock_field(rules)), rules.stock.max_oos_pct90
        apply(rules.stock, oos, lambda v: v > ceiling, "no_stock_data", "out_of_stock", 16)
    if rules.any_risk_enabled:
        buy = _market_index(routes["buy_market"].take(at).to_numpy())
        _screen_risks(products, rows, buy, sell, rules, code, flags)
    guarded: pd.DataFrame | None = None
    if rules.spike_guard.enabled:
        average = signal(average_field(rules))
        open_ = code == PASS
        unknown = average < 0
        if rules.spike_guard.on_missing == "skip":
            code[open_ & unknown] = _CODE["no_average_price"]
        else:
            flags[open_ & unknown] |= 2
        current = routes["sell_price"].to_numpy()[at]
        lowered = (code == PASS) & ~unknown & (average < current)
        if lowered.any():
            guarded = _guarded_lines(matrix, routes, at[lowered], average[lowered], evaluate)
            spiked = ~guarded["qualifies"].to_numpy()
            code[np.flatnonzero(lowered)[spiked]] = _CODE["price_spike"]
    reason[at] = code
    missing[at] = flags
    kept = at[code == PASS]
    hits = routes.iloc[kept]
    columns: dict[str, Any] = {name: hits[name] for name in hits.columns}
    columns["missing"] = missing[kept]
    if guarded is not None:
        # The alerts the guard lowered take the guarded lines. The frame is built anew from
        # its columns: setting them in place (.loc, assign) split pandas' blocks at a cost
        # larger than the rest of the screening.
        take = guarded[guarded["qualifies"].to_numpy()]
        where = hits.index.get_indexer(take.index)
        for name in take.columns:
            if name not in _GUARDED_KEEP:
                values = hits[name].to_numpy().copy()
                values[where] = take[name].to_numpy()
                columns[name] = values
    return Screened(reason, missing, pd.DataFrame(columns, index=hits.index))


def _screen_risks(
    products: Sequence[EnrichedProduct],
    rows: npt.NDArray[np.int64],
    buy: npt.NDArray[np.int64],
    sell: npt.NDArray[np.int64],
    rules: RulesConfig,
    code: npt.NDArray[np.int8],
    flags: npt.NDArray[np.int16],
) -> None:
    """The risk rules, route by route over the candidates still open (few: a loop is cheaper
    than gathering ten columns): each fails on what either store's listing says, in the order
    of RISK_SECTIONS, and a fact neither store gives is missing data (``on_missing``)."""
    enabled = [check for check in _RISK_CHECKS if getattr(rules, check[0]).enabled]
    for i in np.flatnonzero(code == PASS):
        product = products[rows[i]]
        buy_code, sell_code = MARKET_CODES[buy[i]], MARKET_CODES[sell[i]]
        listing = _Listing(
            product,
            product["markets"][buy_code].get("signals") or {},
            product["markets"][sell_code].get("signals") or {},
            sell_code,
        )
        for name, failed, no_data, check in enabled:
            outcome = check(listing, rules)
            if outcome is True:
                code[i] = _CODE[failed]
                break
            if outcome is None:
                if getattr(rules, name).on_missing == "skip":
                    code[i] = _CODE[no_data]
                    break
                flags[i] |= _MISSING_BIT[name]


@dataclass(frozen=True)
class _Listing:
    """One candidate route's product and both stores' listing facts."""

    product: EnrichedProduct
    buy: Mapping[str, Any]
    sell: Mapping[str, Any]
    sell_code: str


def _any_true(both: tuple[Mapping[str, Any], ...], name: str) -> bool | None:
    """True if either store says so, False if both say not, None if either says nothing."""
    values = [facts.get(name) for facts in both]
    if True in values:
        return True
    return None if None in values else False


def _pack_differs(listing: _Listing, _: RulesConfig) -> bool | None:
    """The classic multipack trap: a different number of items per package in the two
    stores under one ASIN."""
    bought, sold = listing.buy.get("package_quantity"), listing.sell.get("package_quantity")
    return None if bought is None or sold is None else bought != sold


def _returns_high(listing: _Listing, _: RulesConfig) -> bool | None:
    """A high return rate where it is sold (Keepa: null is unknown or average)."""
    return listing.sell.get("return_rate_high")


def _restricted(listing: _Listing, rules: RulesConfig) -> bool | None:
    """The seller may not sell the brand, or the sell store's root category; None when the
    brand is unknown and the category is not restricted."""
    brand = listing.sell.get("brand") or listing.buy.get("brand")
    root = listing.product["markets"][listing.sell_code].get("root_category")
    if rules.restrictions.restrictions.restricted(brand, listing.sell_code, root):
        return True
    return None if brand is None else False


def _slow(listing: _Listing, rules: RulesConfig) -> bool | None:
    """The planned quantity takes longer than ``max_days`` to sell; None without sales."""
    selling = seller_time_to_sell(listing.sell, rules)
    return None if selling is None else selling[1] > rules.time_to_sell.max_days


# The risk rules in the order they are tried: (section, reason, reason without data, check).
_RISK_CHECKS: tuple[tuple[str, str, str, Callable[[_Listing, RulesConfig], bool | None]], ...] = (
    (
        "hazmat",
        "hazmat",
        "no_hazmat_data",
        lambda listing, _: _any_true((listing.buy, listing.sell), "hazmat"),
    ),
    ("pack_quantity", "pack_mismatch", "no_pack_data", _pack_differs),
    ("return_rate", "high_returns", "no_return_data", _returns_high),
    (
        "variation_parent",
        "variation_parent",
        "no_listing_type",
        lambda listing, _: _any_true((listing.buy, listing.sell), "variation_parent"),
    ),
    ("restrictions", "restricted", "no_brand_data", _restricted),
    ("time_to_sell", "slow_to_sell", "no_time_to_sell_data", _slow),
)


def seller_time_to_sell(
    sell: Mapping[str, Any], rules: RulesConfig
) -> tuple[Fraction, Fraction] | None:
    """(the seller's units a month, days to sell the planned quantity) from the sell market's
    signals: its monthly sales (Amazon's figure or the estimator, as ``sales_per_month``) and
    FBA offers."""
    sales = sales_per_month(sell.get("monthly_sold"), sell.get(sales_field(rules)), rules)
    return time_to_sell(sales, sell.get("offer_count_fba"), rules.time_to_sell.planned_quantity)


def storage_line(
    product: EnrichedProduct,
    sell_code: str,
    profit_eur_cents: int,
    rules: RulesConfig,
    detected_at: str,
) -> dict[str, Any] | None:
    """What an alert shows of storage and time to sell (``[time_to_sell]`` on): days, the
    storage per unit while the planned quantity sells, and the profit after it."""
    rule = rules.time_to_sell
    if not rule.enabled or rule.rates is None:
        return None
    market = product["markets"][sell_code]
    selling = seller_time_to_sell(market.get("signals") or {}, rules)
    if selling is None:
        return {"days_to_sell": None, "planned_quantity": rule.planned_quantity}
    per_month, days = selling
    month = int(detected_at[5:7])
    cost = storage_cost(
        rule.rates,
        sell_code,
        dict(product["package"]),
        month,
        days,
        Fraction(market["fx_eur_per_unit"]),
    )
    return {
        "days_to_sell": math.ceil(days),
        "planned_quantity": rule.planned_quantity,
        "units_per_month": round(float(per_month), 2),
        "storage_minor": None if cost is None else cost[0],
        "storage_eur_cents": None if cost is None else cost[1],
        "profit_after_storage_eur_cents": None if cost is None else profit_eur_cents - cost[1],
        "season": "oct_dec" if month >= 10 else "jan_sep",
        "rates": rule.rates.version,
    }


def _market_index(codes: Any) -> npt.NDArray[np.int64]:
    """Market codes → their index in MARKET_CODES."""
    index = np.empty(len(codes), dtype=np.int64)
    for position, market in enumerate(MARKET_CODES):
        index[np.asarray(codes == market)] = position
    return index


def _guarded_lines(
    matrix: MarketMatrix,
    routes: pd.DataFrame,
    positions: npt.NDArray[np.int64],
    average: npt.NDArray[np.int64],
    evaluate: Callable[[MarketMatrix], pd.DataFrame],
) -> pd.DataFrame:
    """The fee model's lines of the routes at ``positions`` with the sell price lowered to
    ``average``, indexed like ``routes``; a route whose guarded profit is above its current
    one keeps its current lines (the guard never raises a profit)."""
    chosen = routes.iloc[positions]
    products, local = np.unique(chosen["row"].to_numpy(), return_inverse=True)
    sell_index = _market_index(chosen["sell_market"].to_numpy())
    buy_index = _market_index(chosen["buy_market"].to_numpy())
    sub = _sub_matrix(matrix, products)
    # Each product's other sell markets stay unsellable in the sub-matrix: only the chosen
    # routes come back, and a product's sell market has one guarded price whatever the buy
    # market, so setting it for any of its routes sets it for all.
    sell = np.zeros_like(sub.sell)
    sell[local, sell_index] = average
    # Buy prices only where a chosen route buys, so no unchosen route is evaluated either.
    buy = np.zeros_like(sub.buy)
    buy[local, buy_index] = sub.buy[local, buy_index]
    again = evaluate(dataclasses.replace(sub, sell=sell, buy=buy))
    key = pd.MultiIndex.from_arrays(
        [local, chosen["buy_market"].to_numpy(), chosen["sell_market"].to_numpy()]
    )
    again = again.set_index(["row", "buy_market", "sell_market"], drop=False)
    lines = again.reindex(key)
    # Unchosen (product, buy, sell) pairs a product shares can come back too; reindex drops them.
    if lines["profit_eur_cents"].isna().any():
        raise AssertionError("the guarded evaluation lost a route")  # evaluate_routes' contract
    lines.index = chosen.index
    lines["row"] = chosen["row"].to_numpy()
    higher = lines["profit_eur_cents"].to_numpy() > chosen["profit_eur_cents"].to_numpy()
    if higher.any():
        for column in lines.columns:
            lines[column] = np.where(higher, chosen[column].to_numpy(), lines[column].to_numpy())
    return lines


def _sub_matrix(matrix: MarketMatrix, products: npt.NDArray[np.int64]) -> MarketMatrix:
    """The matrix of some products (their rows, in order)."""
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(matrix):
        value = getattr(matrix, field.name)
        if field.name == "asins":
            fields["asins"] = [value[i] for i in products]
        elif value is not None:
            fields[field.name] = value[products]
    return dataclasses.replace(matrix, **fields)


def filtered_counts(reason: npt.NDArray[np.int8]) -> dict[str, int]:
    """Routes the rules removed, per reason (only reasons with any)."""
    counts = np.bincount(reason, minlength=len(REASONS))
    return {
        name: int(counts[code]) for code, name in enumerate(REASONS) if code > 1 and counts[code]
    }


def missing_names(bits: int) -> list[str]:
    return [name for name, bit in MISSING_BITS if bits & bit]


def alert_signals(
    sell_signals: Mapping[str, Any] | None,
    current_sell_price: int,
    missing_bits: int,
    rules: RulesConfig,
    buy_signals: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What an alert carries: the sell market's signals the rules read (null = no data), and
    what both stores' listings say (the risk facts a seller checks before buying)."""
    values: Mapping[str, Any] = sell_signals or {}
    bought: Mapping[str, Any] = buy_signals or {}
    return {
        "monthly_sales": sales_per_month(
            values.get("monthly_sold"), values.get(sales_field(rules)), rules
        ),
        "sales_estimator": sales_source(values.get("monthly_sold"), rules),
        "sell_price_current": current_sell_price,
        "sell_avg90": values.get(average_field(rules)),
        "sell_avg90_kind": rules.spike_guard.average,
        "amazon_buy_box_pct": values.get("buy_box_amazon_pct"),
        "fba_offers": values.get("offer_count_fba"),
        "oos_pct90": values.get(stock_field(rules)),
        "missing": missing_names(missing_bits),
        "listing": {
            "hazmat": _any_true((bought, values), "hazmat"),
            "variation_parent": _any_true((bought, values), "variation_parent"),
            "package_quantity_buy": bought.get("package_quantity"),
            "package_quantity_sell": values.get("package_quantity"),
            "return_rate_high": values.get("return_rate_high"),
            "brand": values.get("brand") or bought.get("brand"),
        },
    }
