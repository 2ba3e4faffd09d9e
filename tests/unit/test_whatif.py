"""The what-if comparison (arbitrage/domain/whatif.py): opened, closed, profit changed, on hand-made
alerts; each ASIN's latest product; the CSV."""

from __future__ import annotations

from typing import Any

from arbitrage.domain.whatif import Change, compare, latest_products, live_of, to_csv


def alert(asin: str, buy: str, sell: str, profit: int, at: str = "t1") -> dict[str, Any]:
    return {
        "asin": asin,
        "buy_market": buy,
        "sell_market": sell,
        "profit_eur_cents": profit,
        "alert_id": f"{asin}:{buy}:{sell}:{profit}",
        "source_timestamp": at,
    }


def test_opened_closed_changed_and_unchanged_opportunities() -> None:
    live = [alert("A", "DE", "FR", 1000), alert("A", "DE", "IT", 500), alert("B", "FR", "DE", 700)]
    whatif = [alert("A", "DE", "FR", 1000), alert("A", "DE", "IT", 420), alert("C", "ES", "DE", 90)]
    assert compare(live, whatif) == [
        Change("opened", "C", "ES", "DE", None, 90, None, "C:ES:DE:90"),
        Change("profit changed", "A", "DE", "IT", 500, 420, "A:DE:IT:500", "A:DE:IT:420"),
        Change("closed", "B", "FR", "DE", 700, None, "B:FR:DE:700", None),
    ]


def test_changes_are_ordered_by_kind_then_the_largest_move_first() -> None:
    live = [alert("A", "DE", "FR", 1000), alert("B", "DE", "FR", 1000)]
    whatif = [alert("A", "DE", "FR", 990), alert("B", "DE", "FR", 1500)]
    assert [c.asin for c in compare(live, whatif)] == ["B", "A"]  # +500 before -10
    assert [c.delta_eur_cents for c in compare(live, whatif)] == [500, -10]


def test_same_inputs_same_answer_no_changes() -> None:
    alerts = [alert("A", "DE", "FR", 1000), alert("B", "IT", "ES", 1)]
    assert compare(alerts, alerts) == []


def product(asin: str, at_ms: int) -> Any:
    return {"asin": asin, "source_timestamp_ms": at_ms, "source_timestamp": f"t{at_ms}"}


def test_each_asin_counts_with_its_latest_product_and_only_its_open_opportunities() -> None:
    products = [product("A", 1), product("A", 3), product("B", 2), product("A", 2)]
    latest = latest_products(products)
    assert sorted((p["asin"], p["source_timestamp_ms"]) for p in latest) == [("A", 3), ("B", 2)]
    live = [{**alert("A", "DE", "FR", 10), "status": "closed"}]
    live += [{**alert("A", "IT", "FR", 12), "status": "open"}]
    live += [{**alert("B", "DE", "FR", 5), "status": "open"}, alert("B", "IT", "FR", 7)]
    live += [{**alert("C", "DE", "FR", 5), "status": "open"}]
    assert [(a["asin"], a["profit_eur_cents"]) for a in live_of(live, latest)] == [
        ("A", 12),
        ("B", 5),
    ]


def test_csv_has_one_row_per_change_with_empty_cells_for_missing_sides() -> None:
    changes = compare([alert("B", "FR", "DE", 700)], [alert("C", "ES", "DE", 90)])
    assert to_csv(changes).splitlines() == [
        "change,asin,buy_market,sell_market,live_profit_eur_cents,whatif_profit_eur_cents,"
        "delta_eur_cents,live_alert_id,whatif_alert_id",
        "opened,C,ES,DE,,90,90,,C:ES:DE:90",
        "closed,B,FR,DE,700,,-700,B:FR:DE:700,",
    ]
