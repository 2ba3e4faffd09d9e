"""The planner's view of the open opportunities (token_planning._open_profit) covers every ASIN,
however many: the composite aggregation is paged, where a terms aggregation stopped at its
size."""

from __future__ import annotations

import pytest

from arbitrage.clients.elasticsearch import BulkOp, ElasticsearchClient
from arbitrage.clients.token_planning import _open_profit
from arbitrage.domain import topics


@pytest.mark.usefixtures("clean_pipeline")
def test_every_asins_best_open_profit_across_pages(es: ElasticsearchClient) -> None:
    states = [
        {
            "opportunity_id": f"op-{n}-{route}",
            "asin": f"B0OPEN{n:04d}",
            "status": status,
            "profit_eur_cents": profit,
        }
        for n in range(23)
        for route, status, profit in (
            ("a", "open", 100 * n),
            ("b", "open", 100 * n + 7),  # the best of the ASIN's open ones
            ("c", "closed", 100 * n + 99),  # closed: not counted
        )
    ]
    outcome = es.bulk_write(
        [BulkOp("index", topics.ALERTS_INDEX, s["opportunity_id"], s) for s in states]
    )
    assert not outcome.rejected, outcome.rejected
    es.refresh(topics.ALERTS_INDEX)
    expected = {f"B0OPEN{n:04d}": 100 * n + 7 for n in range(23)}
    assert _open_profit(es, page=5) == expected  # five pages, the last one short
    assert _open_profit(es, page=23) == expected  # a full last page, then an empty one
    assert _open_profit(es) == expected
