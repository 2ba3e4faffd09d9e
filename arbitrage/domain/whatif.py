"""What-if: the opportunities a window of enriched products gives under other fees or rules,
compared with what the live pipeline raised for the same products. Pure: no Kafka, no
Elasticsearch (arbitrage/cli/whatif.py reads them and prints this module's answer).

The comparison is per opportunity (ASIN, buy market, sell market) on each ASIN's latest product
in the window: the what-if alerts of that product against the opportunities the live pipeline
holds open (its lifecycle's current state).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from arbitrage.domain.lifecycle import is_open
from arbitrage.domain.messages.types import EnrichedProduct

ChangeKind = Literal["opened", "closed", "profit changed"]
# Printed in this order: what a seller would gain first, then what they would lose.
KIND_ORDER: dict[ChangeKind, int] = {"opened": 0, "profit changed": 1, "closed": 2}
CSV_COLUMNS = (
    "change",
    "asin",
    "buy_market",
    "sell_market",
    "live_profit_eur_cents",
    "whatif_profit_eur_cents",
    "delta_eur_cents",
    "live_alert_id",
    "whatif_alert_id",
)

OpportunityKey = tuple[str, str, str]  # (ASIN, buy market, sell market)


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    asin: str
    buy_market: str
    sell_market: str
    live_profit_eur_cents: int | None
    whatif_profit_eur_cents: int | None
    live_alert_id: str | None
    whatif_alert_id: str | None

    @property
    def delta_eur_cents(self) -> int:
        return (self.whatif_profit_eur_cents or 0) - (self.live_profit_eur_cents or 0)


def latest_products(products: Iterable[EnrichedProduct]) -> list[EnrichedProduct]:
    """Each ASIN's newest product (by its Keepa pull time; on a tie, the one read last)."""
    newest: dict[str, EnrichedProduct] = {}
    for product in products:
        held = newest.get(product["asin"])
        if held is None or product["source_timestamp_ms"] >= held["source_timestamp_ms"]:
            newest[product["asin"]] = product
    return list(newest.values())


def live_of(
    alerts: Iterable[Mapping[str, Any]], products: Sequence[EnrichedProduct]
) -> list[Mapping[str, Any]]:
    """The live opportunities of these products: the open ones (arbitrage/domain/lifecycle.py: what
    the live pipeline holds open now). Documents from before the lifecycle have no status."""
    asins = {p["asin"] for p in products}
    return [a for a in alerts if is_open(a) and a["asin"] in asins]


def _by_opportunity(alerts: Iterable[Mapping[str, Any]]) -> dict[OpportunityKey, Mapping[str, Any]]:
    best: dict[OpportunityKey, Mapping[str, Any]] = {}
    for alert in alerts:
        key = (alert["asin"], alert["buy_market"], alert["sell_market"])
        # One alert per opportunity and product state; should the index hold two (alerts of an
        # older fee model version for the same product), the more profitable one stands.
        if key not in best or alert["profit_eur_cents"] > best[key]["profit_eur_cents"]:
            best[key] = alert
    return best


def compare(live: Iterable[Mapping[str, Any]], whatif: Iterable[Mapping[str, Any]]) -> list[Change]:
    """Opened (only what-if), closed (only live), profit changed (both, other profit); an
    opportunity with the same profit is no change. Ordered by kind, then largest move first."""
    before, after = _by_opportunity(live), _by_opportunity(whatif)
    changes = []
    for key in before.keys() | after.keys():
        was, now = before.get(key), after.get(key)
        if was is not None and now is not None:
            if was["profit_eur_cents"] == now["profit_eur_cents"]:
                continue
            kind: ChangeKind = "profit changed"
        else:
            kind = "opened" if was is None else "closed"
        changes.append(
            Change(
                kind,
                *key,
                live_profit_eur_cents=was["profit_eur_cents"] if was else None,
                whatif_profit_eur_cents=now["profit_eur_cents"] if now else None,
                live_alert_id=was["alert_id"] if was else None,
                whatif_alert_id=now["alert_id"] if now else None,
            )
        )
    return sorted(
        changes,
        key=lambda c: (KIND_ORDER[c.kind], -abs(c.delta_eur_cents), c.asin, c.buy_market),
    )


def to_csv(changes: Sequence[Change]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in changes:
        writer.writerow(
            [
                c.kind,
                c.asin,
                c.buy_market,
                c.sell_market,
                "" if c.live_profit_eur_cents is None else c.live_profit_eur_cents,
                "" if c.whatif_profit_eur_cents is None else c.whatif_profit_eur_cents,
                c.delta_eur_cents,
                c.live_alert_id or "",
                c.whatif_alert_id or "",
            ]
        )
    return out.getvalue()
