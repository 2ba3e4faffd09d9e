"""The token planner's rules, one by one, and the hour's outlook: never below the reserve,
never sooner than the minimum interval, open opportunities first, stale ones before they rot,
discovery within its share, and Keepa's time rather than the wall clock. And the cron reader
the outlook counts discovery runs with."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from arbitrage.domain.cron import CronError, fires
from arbitrage.domain.token_plan import (
    MINUTE_MS,
    Candidate,
    CandidateTable,
    DueDiscovery,
    PlanConfig,
    Profile,
    plan_hour,
    plan_minute,
    profile,
)

NOW = int(datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp() * 1000)
CONFIG = PlanConfig(markets=("DE", "FR"), reserve_tokens=30, discovery_share=0.2)
PER_REFRESH = 6  # 3 tokens × 2 markets


def ago(minutes: float) -> int:
    return NOW - int(minutes * MINUTE_MS)


def test_the_reserve_is_never_spent_and_only_whole_refreshes_are_bought() -> None:
    candidates = [Candidate(f"B00000000{i}", None) for i in range(10)]
    plan = plan_minute(NOW, 30 + 4 * PER_REFRESH + 5, candidates, [], CONFIG)
    assert len(plan.refreshes) == 4 and plan.tokens == 24
    assert plan_minute(NOW, 30, candidates, [], CONFIG).refreshes == ()
    assert plan_minute(NOW, -12, candidates, [], CONFIG).refreshes == ()


def test_purposes_come_in_their_order() -> None:
    candidates = [
        Candidate("ROTATE0001", ago(60)),
        Candidate("NEARMISS01", ago(45), near_miss=True),
        Candidate("STALE00001", ago(25 * 60)),
        Candidate("NEW0000001", None),
        Candidate("CONFIRM001", ago(12), open_profit_eur_cents=900),
        Candidate("CONFIRM002", ago(12), open_profit_eur_cents=4_000),
        Candidate("TOOSOON001", ago(3), open_profit_eur_cents=10_000),
        Candidate("DROPPED001", ago(40), deal_ms=ago(2), deal_drop_eur_cents=300),
        Candidate("DROPBEFORE", ago(40), deal_ms=ago(50), deal_drop_eur_cents=900),
        Candidate("NEWSMALL01", None, deal_ms=ago(1), deal_drop_eur_cents=200),
        Candidate("NEWBIG0001", None, deal_ms=ago(30), deal_drop_eur_cents=1_500),
    ]
    plan = plan_minute(NOW, 10_000, candidates, [], CONFIG)
    assert [(r.asin, r.purpose) for r in plan.refreshes] == [
        ("CONFIRM002", "confirm"),
        ("CONFIRM001", "confirm"),
        ("NEWBIG0001", "new"),  # the biggest drop first
        ("NEWSMALL01", "new"),
        ("NEW0000001", "new"),  # on the seller's own list: no deal weighs it
        ("DROPPED001", "price_drop"),  # dropped after its last refresh
        ("STALE00001", "stale"),
        ("NEARMISS01", "near_miss"),
        ("ROTATE0001", "rotate"),  # the older first
        ("DROPBEFORE", "rotate"),  # its drop was before its last refresh: nothing new
    ]  # TOOSOON001: refreshed 3 minutes ago, below the minimum interval


def test_a_cut_through_many_equals_the_same_order_sorted_whole() -> None:
    """The partial pass that narrows a large registry picks what a full sort would."""
    candidates = [
        Candidate(
            f"B0{i:08d}",
            None if i % 7 == 0 else ago(10 + i % 500),
            open_profit_eur_cents=(i * 37) % 5_000 if i % 11 == 0 else 0,
            near_miss=i % 5 == 0,
            volatility=(i % 9) / 30,
            deal_ms=ago(i % 60) if i % 3 == 0 else None,
            deal_drop_eur_cents=(i * 13) % 700 if i % 3 == 0 else 0,
        )
        for i in range(5_000)
    ]
    few = plan_minute(NOW, 30 + 40 * PER_REFRESH, candidates, [], CONFIG)
    everything = plan_minute(NOW, 10**9, candidates, [], CONFIG)
    assert len(few.refreshes) == 40
    assert few.refreshes == everything.refreshes[:40]


def test_rotation_prefers_old_lively_products() -> None:
    candidates = [
        Candidate("OLDDULL001", ago(200)),
        Candidate("YOUNGLIVE1", ago(100), volatility=0.4, monthly_sold=2_000),
        Candidate("YOUNGDULL1", ago(100)),
    ]
    plan = plan_minute(NOW, 30 + 2 * PER_REFRESH, candidates, [], CONFIG)
    assert [r.asin for r in plan.refreshes] == ["YOUNGLIVE1", "OLDDULL001"]


def test_discovery_takes_at_most_its_share_and_refreshes_the_rest() -> None:
    due = [DueDiscovery("finder-a", "DE", 15), DueDiscovery("best", "IT", 50)]
    candidates = [Candidate(f"B00000000{i}", None) for i in range(100)]
    plan = plan_minute(NOW, 30 + 100, candidates, due, CONFIG)  # 100 spendable: 20 for discovery
    assert [d.source for d in plan.discovery] == ["finder-a"]
    assert plan.tokens_discovery == 15 and plan.tokens_refresh == (100 - 15) // 6 * 6


def test_the_plan_depends_on_keepas_time_only() -> None:
    candidates = [Candidate("B000000001", ago(30)), Candidate("B000000002", ago(5))]
    first = plan_minute(NOW, 1_000, candidates, [], CONFIG)
    shifted = [Candidate(c.asin, c.last_refresh_ms + 3_600_000) for c in candidates]
    later = plan_minute(NOW + 3_600_000, 1_000, shifted, [], CONFIG)
    assert first.refreshes == later.refreshes


def test_the_hour_spends_what_it_is_granted_by_purpose_and_market() -> None:
    candidates = [Candidate(f"B0{i:08d}", ago(i % 300)) for i in range(2_000)]
    candidates[0] = Candidate("B000000000", ago(20), open_profit_eur_cents=2_500)
    due = [[DueDiscovery("finder", "DE", 15)] if m % 30 == 0 else [] for m in range(60)]
    outlook = plan_hour(NOW, 300, 300, candidates, due, CONFIG)
    assert outlook.minutes == 60 and outlook.granted == 300 + 59 * 300
    # Everything above the reserve is spent, less what does not make a whole refresh.
    assert outlook.granted - 30 - PER_REFRESH < outlook.spent <= outlook.granted - 30
    assert outlook.tokens_by_purpose["discovery"] == 30
    assert outlook.refreshes_by_purpose["confirm"] >= 1
    refresh_tokens = outlook.spent - 30
    assert outlook.tokens_by_market["DE"] == refresh_tokens // 2 + 30
    assert outlook.tokens_by_market["FR"] == refresh_tokens // 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="discovery_share"):
        PlanConfig(markets=("DE",), discovery_share=1.5)
    with pytest.raises(ValueError, match="min_refresh_minutes"):
        PlanConfig(markets=("DE",), min_refresh_minutes=60, max_refresh_minutes=30)


def test_cron_fires_where_the_schedules_say() -> None:
    hour = 60
    assert len(list(fires("*/15 * * * *", NOW, hour))) == 4
    assert len(list(fires("0 */6 * * *", NOW, 24 * hour))) == 4
    assert list(fires("30 12 * * *", NOW, hour)) == [NOW + 30 * MINUTE_MS]
    # 2026-12-06 is a Sunday (0): a Monday-only schedule fires the next day.
    assert list(fires("0 0 * * 1", NOW, 24 * hour)) == [NOW + 12 * hour * MINUTE_MS]
    for bad in ("* * * *", "61 * * * *", "*/0 * * * *", "a * * * *"):
        with pytest.raises(CronError):
            list(fires(bad, NOW, 1))


def test_a_products_profile_is_its_sales_volatility_and_margin() -> None:
    product = {
        "cheapest_market": "DE",
        "spread_eur_cents": 1_500,
        "markets": {
            "DE": {
                "buy_price_eur_cents": 10_000,
                "buy_box": 9_000,
                "new": 9_500,
                "signals": {"sales_rank_drops30": 40, "buy_box_avg30": 10_000},
            },
            "FR": {"buy_box": 13_000, "signals": {"sales_rank_drops30": 90, "new_avg30": None}},
            "GB": {"signals": None},
        },
    }
    read = profile(product)
    assert read == Profile(monthly_sold=90, volatility=pytest.approx(0.1), margin=0.15)
    # No product yet (never refreshed): no data, nothing weighs.
    assert profile({}) == Profile(0, 0.0, 0.0)


def test_a_table_takes_and_extends_every_column_row_by_row() -> None:
    table = CandidateTable.of(
        [
            Candidate("A000000001", ago(5), 100, True, 0.2, 30, ago(1), 700),
            Candidate("A000000002", None),
        ]
    )
    more = CandidateTable.of([Candidate("A000000003", ago(9), deal_ms=ago(2))])
    joined = table.extend(more)
    assert joined.asins == ["A000000001", "A000000002", "A000000003"]
    picked = joined.take(np.array([2, 0]))
    assert picked.asins == ["A000000003", "A000000001"]
    assert list(picked.last_refresh_ms) == [ago(9), ago(5)]
    assert list(picked.deal_drop_eur_cents) == [0, 700] and list(picked.near_miss) == [False, True]
    assert len(table) == 2  # the originals stay as they were
