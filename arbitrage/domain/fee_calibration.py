"""The fee model beside Amazon's own estimate, route by route, and the report of where they part
(``arbitrage fees calibrate``; docs/fees.md, "Amazon's estimate as the check").

For each (product, buy store, sell store) route, the estimates asked (``estimates_for``):

- the sell store under FBA_CORE: referral, closing fee, DST, VAT on fees, and under Pan-European
  fulfilment the FBA fee;
- with EFN fulfilment (fees v2, ``fulfilment = "efn"``) also the sell store under FBA_EFN (the
  cross-border fee: the model's local FBA fee plus its EFN surcharge) and the buy store under
  FBA_CORE (the local fee of the stock's country, the model's FBA line): the EFN surcharge
  Amazon charges is the difference of the two.

Every difference is the model's line less Amazon's, in EUR cents at the fee file's FX rates:
positive where the model charges more (the alert was conservative), negative where it charges
less (the alert promised too much).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.fee_model import evaluate_route
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.types import EnrichedProduct
from arbitrage.domain.money import convert_to_eur_cents
from arbitrage.domain.sp_api_fees import (
    CLOSING,
    DST,
    FBA_CORE,
    FBA_EFN,
    FEE_VAT,
    FULFILMENT,
    REFERRAL,
    AmazonFees,
    EstimateRequest,
)

# The report's lines, in the order a seller reads an invoice.
LINES = ("referral_fee", "closing_fee", "fba_fee", "efn_fee", "dst_fee", "fee_vat", "total")
WORST_SHOWN = 5


@dataclass(frozen=True)
class Route:
    product: EnrichedProduct
    buy_market: str
    sell_market: str

    @property
    def asin(self) -> str:
        return self.product["asin"]


def uses_efn(config: FeeConfig) -> bool:
    return config.v2 is not None and config.v2.fulfilment == "efn"


def estimates_for(route: Route, config: FeeConfig) -> list[EstimateRequest]:
    """What to ask Amazon to check this route's fee lines (see the module's text)."""
    sell_price = route.product["markets"][route.sell_market]["sell_price"] or 0
    asked = [EstimateRequest(route.asin, route.sell_market, sell_price, FBA_CORE)]
    if uses_efn(config):
        # The buy store's listing price: what the product sells at where the stock is.
        buy_price = route.product["markets"][route.buy_market]["buy_price"] or 0
        asked.append(EstimateRequest(route.asin, route.sell_market, sell_price, FBA_EFN))
        asked.append(EstimateRequest(route.asin, route.buy_market, buy_price, FBA_CORE))
    return asked


def all_estimates(routes: Iterable[Route], config: FeeConfig) -> list[EstimateRequest]:
    """Each estimate once, in the routes' order."""
    return list(dict.fromkeys(r for route in routes for r in estimates_for(route, config)))


@dataclass(frozen=True)
class LineDifference:
    line: str
    model: int  # EUR cents
    amazon: int  # EUR cents
    store: str  # the sell store

    @property
    def difference(self) -> int:
        return self.model - self.amazon


@dataclass(frozen=True)
class RouteComparison:
    asin: str
    buy_market: str
    sell_market: str
    lines: tuple[LineDifference, ...] = ()
    error: str | None = None  # why the route could not be compared
    other_fee_types: tuple[str, ...] = ()


def _eur(fees: AmazonFees, line: str, config: FeeConfig) -> int:
    assert fees.currency is not None
    return convert_to_eur_cents(fees.lines_minor.get(line, 0), config.fx(fees.currency))


def compare_route(
    route: Route, answers: Mapping[str, AmazonFees], config: FeeConfig
) -> RouteComparison:
    """The model's lines for the route beside Amazon's (``answers`` by request identifier)."""
    base = RouteComparison(route.asin, route.buy_market, route.sell_market)
    model = evaluate_route(route.product, route.buy_market, route.sell_market, config)
    if model is None:
        return replace(base, error="not a route: a price is missing")
    asked = estimates_for(route, config)
    got = [answers.get(r.identifier) for r in asked]
    missing = [r.identifier for r, a in zip(asked, got, strict=True) if a is None]
    if missing:
        return replace(base, error=f"no answer for {', '.join(missing)}")
    failed = [f"{a.identifier}: {a.error}" for a in got if a is not None and not a.ok]
    if failed:
        return replace(base, error="; ".join(failed))
    sell = got[1] if uses_efn(config) else got[0]
    assert sell is not None
    amazon = {
        "referral_fee": _eur(sell, REFERRAL, config),
        "closing_fee": _eur(sell, CLOSING, config),
        "dst_fee": _eur(sell, DST, config),
        "fee_vat": _eur(sell, FEE_VAT, config),
    }
    model_lines = {
        "referral_fee": model.referral_fee,
        "closing_fee": model.closing_fee,
        "fba_fee": model.fba_fee,
        "dst_fee": model.dst_fee,
        "fee_vat": model.fee_vat,
    }
    if uses_efn(config):
        local = got[2]
        assert local is not None
        amazon["fba_fee"] = _eur(local, FULFILMENT, config)
        amazon["efn_fee"] = _eur(sell, FULFILMENT, config) - amazon["fba_fee"]
        model_lines["efn_fee"] = model.efn_fee
    else:
        amazon["fba_fee"] = _eur(sell, FULFILMENT, config)
    # The whole bill: Amazon's total of the sale's estimate (under EFN the cross-border one;
    # fee types the model lacks included) against the sum of the model's lines.
    assert sell.currency is not None
    amazon["total"] = convert_to_eur_cents(
        sum(sell.lines_minor.values()) if sell.total_minor is None else sell.total_minor,
        config.fx(sell.currency),
    )
    model_lines["total"] = sum(model_lines.values())
    others = tuple(t for a in got if a is not None for t in a.other_fee_types)
    lines = tuple(
        LineDifference(line, model_lines[line], amazon[line], route.sell_market)
        for line in LINES
        if line in model_lines
    )
    return replace(base, lines=lines, other_fee_types=others)


@dataclass(frozen=True)
class WorstCase:
    asin: str
    route: str  # "DE→FR"
    difference: int
    model: int
    amazon: int


@dataclass(frozen=True)
class LineSummary:
    line: str
    compared: int
    mean_difference: float  # EUR cents, signed (model − Amazon)
    mean_absolute: float
    worst: int  # the signed difference of largest size
    exact: int  # routes where the model is right to the cent
    worst_cases: tuple[WorstCase, ...]
    by_store: Mapping[str, tuple[int, float, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class CalibrationReport:
    routes_asked: int
    routes_compared: int
    lines: tuple[LineSummary, ...]
    not_compared: tuple[tuple[str, str, str], ...]  # (ASIN, route, why)
    other_fee_types: Mapping[str, int]
    comparisons: tuple[RouteComparison, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "routes_asked": self.routes_asked,
            "routes_compared": self.routes_compared,
            "unit": "EUR cents; difference = model - Amazon",
            "lines": [
                {
                    "line": s.line,
                    "compared": s.compared,
                    "exact": s.exact,
                    "mean_difference": s.mean_difference,
                    "mean_absolute_difference": s.mean_absolute,
                    "worst_difference": s.worst,
                    "worst": [vars(w) for w in s.worst_cases],
                    "by_store": {
                        store: {"compared": n, "mean_difference": mean, "worst_difference": worst}
                        for store, (n, mean, worst) in sorted(s.by_store.items())
                    },
                }
                for s in self.lines
            ],
            "not_compared": [
                {"asin": asin, "route": route, "why": why} for asin, route, why in self.not_compared
            ],
            "other_fee_types": dict(self.other_fee_types),
            # Every route's lines, to follow a difference to its product: [model, Amazon].
            "routes": [
                {
                    "asin": c.asin,
                    "route": f"{c.buy_market}→{c.sell_market}",
                    "lines": {d.line: [d.model, d.amazon] for d in c.lines},
                }
                for c in self.comparisons
                if c.error is None
            ],
        }


def _mean(values: Sequence[int]) -> float:
    return round(float(Fraction(sum(values), len(values))), 2) if values else 0.0


def _worst(values: Iterable[int]) -> int:
    return max(values, key=lambda v: (abs(v), v), default=0)


def summarise(comparisons: Sequence[RouteComparison]) -> CalibrationReport:
    """Per line: routes compared, mean and worst difference, the ASINs behind the worst."""
    by_line: dict[str, list[tuple[RouteComparison, LineDifference]]] = defaultdict(list)
    for comparison in comparisons:
        for difference in comparison.lines:
            by_line[difference.line].append((comparison, difference))
    summaries = []
    for line in LINES:
        rows = by_line.get(line)
        if not rows:
            continue
        differences = [d.difference for _, d in rows]
        ranked = sorted(rows, key=lambda r: (-abs(r[1].difference), r[0].asin, r[0].sell_market))
        stores: dict[str, list[int]] = defaultdict(list)
        for _, d in rows:
            stores[d.store].append(d.difference)
        summaries.append(
            LineSummary(
                line=line,
                compared=len(rows),
                mean_difference=_mean(differences),
                mean_absolute=_mean([abs(d) for d in differences]),
                worst=_worst(differences),
                exact=sum(1 for d in differences if d == 0),
                worst_cases=tuple(
                    WorstCase(
                        c.asin, f"{c.buy_market}→{c.sell_market}", d.difference, d.model, d.amazon
                    )
                    for c, d in ranked[:WORST_SHOWN]
                    if d.difference != 0
                ),
                by_store={s: (len(v), _mean(v), _worst(v)) for s, v in stores.items()},
            )
        )
    others = Counter(t for c in comparisons for t in c.other_fee_types)
    return CalibrationReport(
        routes_asked=len(comparisons),
        routes_compared=sum(1 for c in comparisons if c.error is None),
        lines=tuple(summaries),
        not_compared=tuple(
            (c.asin, f"{c.buy_market}→{c.sell_market}", c.error)
            for c in comparisons
            if c.error is not None
        ),
        other_fee_types=dict(others),
        comparisons=tuple(comparisons),
    )


def best_route(product: EnrichedProduct, config: FeeConfig) -> Route | None:
    """The product's most profitable route under the model (a sample's product without an
    open opportunity is checked where it would be sold)."""
    best: tuple[int, Route] | None = None
    for buy in MARKETPLACES:
        for sell in MARKETPLACES:
            fees = evaluate_route(product, buy, sell, config)
            if fees is not None and (best is None or fees.profit_eur_cents > best[0]):
                best = (fees.profit_eur_cents, Route(product, buy, sell))
    return None if best is None else best[1]


def calibrate(
    routes: Sequence[Route], answers: Mapping[str, AmazonFees], config: FeeConfig
) -> CalibrationReport:
    """Every route compared with Amazon's answers (by request identifier), summarised."""
    return summarise([compare_route(route, answers, config) for route in routes])
