"""The opportunities page's pure parts: query-string filters, the alerts search, the open
rule and the chart's geometry."""

from __future__ import annotations

from decimal import Decimal

import pytest

from arbitrage.domain.lifecycle import is_open
from arbitrage.web.chart import build_chart
from arbitrage.web.queries import AlertFilters, FilterError, alerts_search, parse_filters


def test_filters_parse_and_round_trip() -> None:
    filters = parse_filters(
        {
            "buy": "de",
            "sell": "FR",
            "min_profit": "12,50",
            "min_roi": "25",
            "min_sales": "4",
            "category": "Baumarkt",
            "sort": "roi",
            "order": "asc",
        }
    )
    assert filters == AlertFilters(
        buy_market="DE",
        sell_market="FR",
        min_profit_eur_cents=1250,
        min_roi=Decimal("0.25"),
        category="Baumarkt",
        min_monthly_sales=4,
        sort="roi",
        descending=False,
    )
    assert parse_filters(dict(pair.split("=") for pair in filters.query_string().split("&"))) == (
        filters
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"buy": "US"}, "is not a marketplace"),
        ({"min_profit": "lots"}, "is not a number"),
        ({"min_roi": "1e99"}, "out of range"),
        ({"sort": "title"}, "sort by one of"),
        ({"order": "up"}, "use asc or desc"),
    ],
)
def test_bad_filters_say_what_is_wrong(params: dict[str, str], message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filters(params)


def test_the_search_has_a_clause_per_filter() -> None:
    body = alerts_search(parse_filters({"sell": "IT", "min_roi": "30"}), asins=["B0X0000001"])
    assert body["query"]["bool"]["filter"] == [
        {"exists": {"field": "opportunity_id"}},
        {"term": {"sell_market": "IT"}},
        {"range": {"roi": {"gte": 0.3}}},
        {"terms": {"asin": ["B0X0000001"]}},
    ]
    assert body["sort"][0] == {"profit_eur_cents": {"order": "desc", "missing": "_last"}}


def test_an_opportunity_is_open_by_its_lifecycle_status() -> None:
    assert is_open({"status": "open"})
    assert not is_open({"status": "closed"})
    assert not is_open({"alert_id": "from before the lifecycle"})


def test_the_chart_draws_each_wanted_line_with_a_point_per_pull() -> None:
    history = {
        "DE": [(1_000_000, 4500, 4700), (4_600_000, 4400, None)],
        "FR": [(1_000_000, 8800, 9000), (4_600_000, 8700, 9100)],
    }
    chart = build_chart(history, [("DE", "buy"), ("FR", "sell"), ("IT", "sell")])
    assert chart is not None
    assert [(s.label, len(s.points), s.dashed) for s in chart.series] == [
        ("DE buy", 2, True),
        ("FR sell", 2, False),
    ]
    de, fr = chart.series
    assert de.points[0][0] == chart.plot_left and de.points[1][0] == chart.plot_right
    # Dearer is higher up: FR's sell line sits above DE's buy line.
    assert all(f[1] < d[1] for f, d in zip(fr.points, de.points, strict=True))
    assert chart.y_ticks[0].label.endswith("EUR")
    assert build_chart(history, [("IT", "buy")]) is None
