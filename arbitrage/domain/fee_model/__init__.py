"""Fee models v1 and v2 and arbitrage detection, vectorised over a batch (docs/fees.md).

All money is integer: each named quantity is ``amount × n / d`` with exact integers, rounded
once, half-even, to whole EUR cents (see ``arbitrage.domain.money``). The rooms:

- ``matrix``: a batch of enriched products as exact int64 arrays (``market_matrix``);
- ``routes``: what both evaluations share (factors, the block walk, the route plan, thresholds);
- ``v1``: ``evaluate_routes``, every route with its fee lines (a v2 config goes to ``v2``);
- ``v2``: referral schedules, closing fees, EFN/Pan-European, DST and fee VAT (decision 31);
- ``detection``: routes → rules → ``Alert`` s (``detect``, ``detect_alerts``);
- ``reference``: the same model written plainly with ``Fraction`` s for one route
  (``evaluate_route``); tests hold the two equal and the benchmark uses it as the baseline.
"""

from arbitrage.domain.fee_model.detection import Detection, detect, detect_alerts
from arbitrage.domain.fee_model.matrix import (
    FEE_COLUMNS,
    FEE_COLUMNS_V2,
    MARKET_CODES,
    ROUTES,
    V2_ONLY_COLUMNS,
    MarketMatrix,
    market_matrix,
    schedule_of,
    size_tiers_of,
)
from arbitrage.domain.fee_model.reference import RouteFees, evaluate_route
from arbitrage.domain.fee_model.routes import qualifies
from arbitrage.domain.fee_model.v1 import evaluate_routes

__all__ = [
    "FEE_COLUMNS",
    "FEE_COLUMNS_V2",
    "MARKET_CODES",
    "ROUTES",
    "V2_ONLY_COLUMNS",
    "Detection",
    "MarketMatrix",
    "RouteFees",
    "detect",
    "detect_alerts",
    "evaluate_route",
    "evaluate_routes",
    "market_matrix",
    "qualifies",
    "schedule_of",
    "size_tiers_of",
]
