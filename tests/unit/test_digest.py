"""The daily digest's pure part: the day, the queries, the rows, the text and HTML tables, the
chart (decoded, not hashed) and what a webhook gets."""

from __future__ import annotations

import base64
import io
import json
from datetime import date

import pytest
from PIL import Image

from arbitrage.domain.digest import (
    BACKGROUND,
    BAR,
    CHART_LABEL_W,
    CHART_WIDTH,
    NO_OPPORTUNITIES,
    Digest,
    DigestDayError,
    bar_box,
    chart_png,
    chart_size,
    closed_query,
    digest_delivery_id,
    digest_idempotency_key,
    digest_message_id,
    digest_rows,
    digest_webhook_body,
    parse_day,
    table_html,
    table_text,
    top_query,
)

DAY = date(2026, 11, 28)


def state(n: int, profit: int, **fields: object) -> dict:
    """An opportunity state as the alerts index holds it."""
    return {
        "opportunity_id": f"B0DIG{n:05d}-DE-FR-fees_v1-rules_v1",
        "asin": f"B0DIG{n:05d}",
        "title": f"Thing {n}",
        "buy_market": "DE",
        "sell_market": "FR",
        "profit_eur_cents": profit,
        "roi": 0.25,
        "status": "open",
        "opened_at": "2026-11-28T08:00:00.000Z",
        "detected_at": "2026-11-28T09:30:00.000Z",
        **fields,
    }


def digest_of(*profits: int) -> Digest:
    states = [state(n, p) for n, p in enumerate(profits)]
    return Digest(DAY, digest_rows(states, 20), opened=len(profits), closed=1)


def test_a_day_is_yyyy_mm_dd_and_not_in_the_future() -> None:
    assert parse_day("2026-11-28", today=DAY) == DAY
    for bad in ("28.11.2026", "2026-13-01", "yesterday", "20261128", ""):
        with pytest.raises(DigestDayError, match="is not a date as YYYY-MM-DD"):
            parse_day(bad, today=DAY)
    with pytest.raises(DigestDayError, match="in the future"):
        parse_day("2026-11-29", today=DAY)


def test_the_query_wants_open_states_whose_last_event_or_opening_is_in_the_day() -> None:
    query = top_query(DAY)["bool"]
    assert query["filter"] == [{"term": {"status": "open"}}]
    assert query["minimum_should_match"] == 1
    windows = {next(iter(c["range"])): c["range"] for c in query["should"]}
    assert windows["detected_at"]["detected_at"] == {
        "gte": "2026-11-28T00:00:00.000Z",
        "lt": "2026-11-29T00:00:00.000Z",
    }
    assert set(windows) == {"detected_at", "opened_at"}
    closed = closed_query(DAY)["bool"]["filter"][1]["range"]["closed_at_source_ms"]
    assert closed["lt"] - closed["gte"] == 24 * 3600 * 1000


def test_rows_are_best_profit_first_and_cut_at_top_n() -> None:
    states = [state(n, p) for n, p in enumerate([300, 1200, 700, 1200, 50])]
    states.append(state(9, None))  # no figures: not a row
    rows = digest_rows(states, 3)
    assert [r.profit_eur_cents for r in rows] == [1200, 1200, 700]
    assert [r.rank for r in rows] == [1, 2, 3]
    assert rows[0].asin == "B0DIG00001"  # ties in opportunity id order
    assert rows[0].label == "B0DIG00001 DE→FR"


def test_the_text_table() -> None:
    text = table_text(digest_of(1234, 500))
    lines = text.splitlines()
    assert lines[0] == "Arbitrage digest 2026-11-28: 2 open opportunities"
    assert lines[1] == "opened 2, closed 1 that day"
    assert lines[3].split()[:5] == ["#", "ASIN", "route", "profit", "EUR"]
    assert "B0DIG00000  DE→FR       12.34  25%  2026-11-28 08:00  2026-11-28 09:30" in lines[4]
    assert "5.00" in lines[5]


def test_the_html_table_escapes_what_it_shows() -> None:
    digest = Digest(DAY, digest_rows([state(1, 900, title="<script>x</script> & co")], 20))
    page = table_html(digest)
    assert page.count("<tr>") == 2  # the header and one row
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in page
    assert "<script>" not in page
    assert "<td>9.00</td>" in page


def test_an_empty_day_renders_no_opportunities() -> None:
    empty = Digest(DAY, ())
    assert table_text(empty).endswith(NO_OPPORTUNITIES)
    assert NO_OPPORTUNITIES in table_html(empty) and "<table" not in table_html(empty)
    image = Image.open(io.BytesIO(chart_png(empty)))
    assert image.size == chart_size(0)
    # Nothing green: no bars.
    assert BAR not in {color for _count, color in image.getcolors(maxcolors=1 << 16)}


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return image.convert("RGB")


def test_the_chart_has_one_bar_per_row_longest_for_the_best_profit() -> None:
    digest = digest_of(400, 2000, 1000)
    image = decoded(chart_png(digest))
    assert image.size == chart_size(3) == (CHART_WIDTH, image.size[1])
    # Rows: 2000 (full span), 1000 (half), 400 (a fifth), top to bottom.
    lengths = []
    for index in range(3):
        left, top, right, bottom = bar_box(digest, index)
        middle = (top + bottom) // 2
        assert image.getpixel((left + 1, middle)) == BAR
        assert image.getpixel((right - 1, middle)) == BAR
        assert image.getpixel((right + 3, middle)) == BACKGROUND
        lengths.append(right - left)
    assert lengths[0] > lengths[1] > lengths[2]
    assert lengths[1] == pytest.approx(lengths[0] / 2, abs=1)
    # The labels are drawn left of the bars (dark pixels there).
    left, top, _, bottom = bar_box(digest, 0)
    label = image.crop((0, top, CHART_LABEL_W, bottom))
    assert max(low for low, _high in label.getextrema()) < 100


def test_the_chart_is_the_same_for_the_same_digest() -> None:
    assert chart_png(digest_of(900, 300)) == chart_png(digest_of(900, 300))


def test_ids_and_keys() -> None:
    assert digest_delivery_id("ops-webhook", DAY) == "ops-webhook:digest:2026-11-28"
    assert digest_idempotency_key(DAY, "ops-webhook") == "digest:2026-11-28:ops-webhook"
    assert digest_message_id("digest:2026-11-28:mail", "example.com").endswith("@example.com>")
    assert digest_message_id("k") == digest_message_id("k") != digest_message_id("k2")


def test_the_webhook_body_has_the_rows_and_the_chart() -> None:
    digest = digest_of(700, 300)
    png = chart_png(digest)
    body = json.loads(digest_webhook_body(digest, png))
    assert body["event"] == "digest" and body["day"] == "2026-11-28"
    assert [r["profit_eur_cents"] for r in body["rows"]] == [700, 300]
    assert body["rows"][0]["asin"] == "B0DIG00000"
    assert base64.b64decode(body["chart_png_base64"]) == png
    assert (body["opened"], body["closed"]) == (2, 1)
