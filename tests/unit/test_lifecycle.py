"""The alert lifecycle (arbitrage/domain/lifecycle.py): opened, updated, closed, episodes, versions,
replays and reruns."""

from __future__ import annotations

import random
from typing import Any

from arbitrage.domain.lifecycle import (
    CLOSED,
    NO_PRICE,
    OPENED,
    STALE,
    UPDATED,
    LifecycleRules,
    ProductRoutes,
    apply_batch,
    close_stale,
    committed_view,
)

RULES = LifecycleRules(update_min_change_cents=100, max_data_age_s=3600)
HOUR_MS = 3_600_000
T0 = 1_795_000_000_000


def alert(profit: int, asin: str = "B000000001", route: tuple[str, str] = ("DE", "FR")) -> dict:
    return {
        "asin": asin,
        "buy_market": route[0],
        "sell_market": route[1],
        "fee_model_version": "v2",
        "rules_version": "v1",
        "profit_eur_cents": profit,
        "detected_at": "2026-11-29T10:00:00.000Z",
    }


def seen(
    at_ms: int,
    profits: dict[tuple[str, str], int | None],
    asin: str = "B000000001",
    reason: str = "below_thresholds",
) -> ProductRoutes:
    """A record of ``asin`` at ``at_ms``: an alert on each route with a profit, else ``reason``."""
    alerts = {r: alert(p, asin, r) for r, p in profits.items() if p is not None}
    return ProductRoutes(asin, at_ms, alerts, lambda route: reason)


def states_of(changed: dict[str, dict[str, Any]]) -> dict[str, dict[tuple[str, str], Any]]:
    states: dict[str, dict[tuple[str, str], Any]] = {}
    for state in changed.values():
        states.setdefault(state["asin"], {})[(state["buy_market"], state["sell_market"])] = state
    return states


def run(records: list[ProductRoutes], states: Any = None, watermark: int = -1) -> Any:
    return apply_batch(records, states or {}, RULES, watermark)


def test_an_opportunity_opens_updates_on_a_real_move_closes_and_reopens_as_a_new_episode() -> None:
    route = ("DE", "FR")
    batch = run(
        [
            seen(T0, {route: 1_000}),
            seen(T0 + 1, {route: 1_099}),  # moved 99 cents < 100: a confirmation, no event
            seen(T0 + 2, {route: 1_100}),  # 100 cents from the last event: updated
            seen(T0 + 3, {route: None}),  # no longer an alert: closed with the route's reason
            seen(T0 + 4, {route: None}),  # closed stays closed, silently
            seen(T0 + 5, {route: 2_000}),  # reappears: a new episode, a new alert id
        ]
    )
    kinds = [(e["event"], e["version"], e["episode"]) for e in batch.events]
    assert kinds == [(OPENED, 1, 1), (UPDATED, 2, 1), (CLOSED, 3, 1), (OPENED, 4, 2)]
    opened, updated, closed, reopened = batch.events
    base = "B000000001-DE-FR-fees_v2-rules_v1"
    assert opened["opportunity_id"] == base
    assert opened["alert_id"] == updated["alert_id"] == closed["alert_id"] == base + "-e1"
    assert reopened["alert_id"] == base + "-e2"
    assert [e["event_id"] for e in batch.events] == [f"{base}-v{v}" for v in (1, 2, 3, 4)]
    assert updated["previous_profit_eur_cents"] == 1_000
    assert updated["profit_eur_cents"] == 1_100
    # The close repeats the last announced lines and says why.
    assert closed["profit_eur_cents"] == 1_100
    assert closed["close_reason"] == "below_thresholds"
    assert "close_reason" not in reopened and "previous_profit_eur_cents" not in reopened
    # Events never carry the stage's bookkeeping.
    assert all("confirmed_source_ms" not in e for e in batch.events)
    (state,) = batch.changed.values()
    assert state["status"] == "open" and state["version"] == 4
    assert state["confirmed_source_ms"] == T0 + 5


def test_a_route_that_loses_a_price_closes_as_no_price() -> None:
    route = ("DE", "FR")
    first = run([seen(T0, {route: 1_000})])
    gone = ProductRoutes("B000000001", T0 + 1, {}, lambda route: "")
    second = run([gone], states_of(first.changed))
    assert [(e["event"], e["close_reason"]) for e in second.events] == [(CLOSED, NO_PRICE)]


def test_the_same_records_again_make_no_event() -> None:
    """A replay (backfill) or a duplicate: no data newer than the state's, nothing happens."""
    route, other = ("DE", "FR"), ("IT", "FR")
    records = [
        seen(T0, {route: 1_000, other: 500}),
        seen(T0 + 1, {route: 3_000, other: None}),
    ]
    first = run(records)
    assert len(first.events) == 4
    again = run(records, states_of(first.changed), first.watermark_ms)
    assert again.events == [] and again.changed == {}


def test_stale_data_never_opens_and_the_sweep_closes_what_went_stale() -> None:
    route = ("DE", "FR")
    fresh = seen(T0 + 2 * HOUR_MS, {route: 1_000}, asin="B000000002")
    late = seen(T0, {route: 1_000})  # two hours behind the partition's newest data
    batch = run([fresh, late])
    assert [e["asin"] for e in batch.events] == ["B000000002"]
    # Nothing confirms B000000002 for more than the allowed age: the sweep closes it.
    state = batch.changed["B000000002-DE-FR-fees_v2-rules_v1"]
    assert close_stale([state], RULES, T0 + 3 * HOUR_MS).events == []  # exactly 1 h: not yet
    swept = close_stale([state], RULES, T0 + 3 * HOUR_MS + 1)
    assert [(e["event"], e["close_reason"]) for e in swept.events] == [(CLOSED, STALE)]
    # A stale close is no data about the opportunity: its data time stays.
    (closed,) = swept.changed.values()
    assert closed["confirmed_source_ms"] == T0 + 2 * HOUR_MS


def test_an_open_opportunity_confirmed_only_by_stale_data_closes() -> None:
    route = ("DE", "FR")
    opened = run([seen(T0, {route: 1_000})])
    # The partition has moved two hours on; this ASIN's record is late data: closed as stale.
    late = run([seen(T0 + 1, {route: 1_000})], states_of(opened.changed), T0 + 2 * HOUR_MS)
    assert [(e["event"], e["close_reason"]) for e in late.events] == [(CLOSED, STALE)]


def test_ids_name_the_fee_model_and_the_rules() -> None:
    (event,) = run([seen(T0, {("DE", "FR"): 1_000})]).events
    assert "fees_v2" in event["alert_id"] and "rules_v1" in event["alert_id"]


def test_a_rerun_builds_on_the_state_from_before_a_batch_that_never_committed() -> None:
    stored = {
        "asin": "B000000001",
        "status": "open",
        "version": 3,
        "updated_by": {"group": "arbitrage", "partition": 1, "offset": 40},
        "base": {"asin": "B000000001", "status": "open", "version": 2},
    }
    # The batch at 40 did not commit (the committed offset is 40): its base is the truth.
    assert committed_view(stored, "arbitrage", 1, 40) == stored["base"]
    assert committed_view({**stored, "base": None}, "arbitrage", 1, 40) is None
    # Committed (the committed offset moved past it), another partition, or another group:
    # the stored state itself, without the bookkeeping.
    for group, partition, first in (("arbitrage", 1, 41), ("arbitrage", 2, 40), ("other", 1, 0)):
        view = committed_view(stored, group, partition, first)
        assert view == {"asin": "B000000001", "status": "open", "version": 3}


def test_any_split_into_batches_makes_the_same_events() -> None:
    """Reruns cut batches differently (a kill, a linger): the events must not depend on it."""
    rng = random.Random(7)
    routes = [("DE", "FR"), ("FR", "DE"), ("IT", "ES")]
    records = []
    for step in range(300):
        asin = f"B00000000{rng.randint(1, 4)}"
        profits = {r: rng.choice([None, None, 900, 1_000, 1_150, 4_000]) for r in routes}
        reason = rng.choice(["below_thresholds", "price_spike", "low_sales"])
        records.append(seen(T0 + step * 600_000, profits, asin, reason))
    whole = run(records)
    assert {e["event"] for e in whole.events} == {OPENED, UPDATED, CLOSED}
    for _ in range(20):
        states: dict[str, Any] = {}
        watermark, events, at = -1, [], 0
        while at < len(records):
            size = rng.randint(1, 40)
            batch = run(records[at : at + size], states, watermark)
            events += batch.events
            for asin, by_route in states_of(batch.changed).items():
                states.setdefault(asin, {}).update(by_route)
            watermark, at = batch.watermark_ms, at + size
        assert events == whole.events
    ids = [e["event_id"] for e in whole.events]
    assert len(ids) == len(set(ids))
    # Per opportunity: versions count up by one, and opened / closed alternate.
    by_opportunity: dict[str, list[dict[str, Any]]] = {}
    for event in whole.events:
        by_opportunity.setdefault(event["opportunity_id"], []).append(event)
    for events in by_opportunity.values():
        assert [e["version"] for e in events] == list(range(1, len(events) + 1))
        is_open = False
        for event in events:
            assert (event["event"] == OPENED) == (not is_open)
            is_open = event["event"] != CLOSED
