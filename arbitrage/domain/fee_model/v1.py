"""``evaluate_routes``: every route of a batch with its fee lines, vectorised; fee model v1
here, a v2 config handed to ``v2.evaluate_routes_v2``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.fee_model.matrix import (
    FEE_COLUMNS,
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
from arbitrage.domain.fee_model.v2 import evaluate_routes_v2

# The integer columns of evaluate_routes, in frame order (asin and the markets go between).
_INT_COLUMNS = (
    "row",
    "buy_price",
    "sell_price",
    *FEE_COLUMNS,
    "profit_eur_cents",
    "sales_rank",
)


def evaluate_routes(matrix: MarketMatrix, config: FeeConfig) -> pd.DataFrame:
    """Every (product, buy market, sell market) with a buy and a sell price, with all fee lines.

    Columns: row, asin, buy_market, sell_market, buy_price, sell_price, the FEE_COLUMNS,
    profit_eur_cents, sales_rank, qualifies. Money columns are int64 EUR cents (prices in the
    market's minor units). Rows come route by route (ROUTES order), products ascending. A v2
    config has the FEE_COLUMNS_V2 lines instead (``evaluate_routes_v2``).
    """
    if config.v2 is not None:
        return evaluate_routes_v2(matrix, config, config.v2)
    factors = market_factors(config)
    plan = RoutePlan.of(matrix, _INT_COLUMNS)
    if plan is None:
        return empty_routes()
    at = {name: index for index, name in enumerate(_INT_COLUMNS)}
    for first in range(0, len(matrix), BLOCK_ROWS):
        last = min(len(matrix), first + BLOCK_ROWS)
        # Every line of a route depends on one market (or only on the product), so each is
        # computed once per market for the block and the routes only gather it.
        buy, sell = by_market(matrix.buy, first, last), by_market(matrix.sell, first, last)
        rank = by_market(matrix.sales_rank, first, last)
        referral = by_market(matrix.referral_pct_x100, first, last)
        fba = by_market(matrix.fba_fee, first, last)
        buy_net = round_rows(buy, [f.net_num for f in factors], [f.net_den for f in factors])
        sell_net = round_rows(sell, [f.net_num for f in factors], [f.net_den for f in factors])
        referral_fee = round_rows(
            sell * referral,
            [f.fx_num for f in factors],
            [f.fx_den * 10_000 for f in factors],
        )
        fba_fee = round_rows(fba, [f.fx_num for f in factors], [f.fx_den for f in factors])
        inbound = inbound_eur_cents(matrix.weight_g[first:last], config)
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
            flags[:] = qualifying(profit, out[at["buy_net"]], out[at["sales_rank"]], config)
    return plan.frame(matrix)
