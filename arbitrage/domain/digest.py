"""The daily digest, the pure part: which opportunities a day shows, the Elasticsearch queries
that find them, and what is sent: a plain-text table, an HTML table (e-mail), a PNG bar chart
and the webhook's JSON body.

The day's top opportunities are the open ones (``status: open``: each opportunity's current
state, docs/design.md, "Alert lifecycle") whose last event (``detected_at``) or opening
(``opened_at``) falls in the day, UTC, best ``profit_eur_cents`` first.
arbitrage/clients/digest.py runs the queries and sends; nothing here reads the environment or
opens a socket. The chart is drawn with Pillow and its bundled font, so the same digest gives
the same PNG bytes with the same Pillow."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from arbitrage.domain.notifications import one_line

DEFAULT_TOP_N = 20
MAX_TOP_N = 200
DIGEST_EVENT = "digest"
NO_OPPORTUNITIES = "no opportunities"

# The chart: one bar per opportunity, best at the top.
CHART_WIDTH = 800
CHART_ROW_H = 24
CHART_TOP = 40  # the title
CHART_BOTTOM = 16
CHART_LABEL_W = 230  # "ASIN buy→sell" left of the bars
CHART_VALUE_W = 90  # "123.45 €" right of the longest bar
BACKGROUND = (255, 255, 255)
BAR = (46, 125, 50)
TEXT = (33, 33, 33)
GRID = (224, 224, 224)


class DigestDayError(ValueError):
    """A day that is not YYYY-MM-DD (or in the future)."""


@dataclass(frozen=True)
class DigestRow:
    rank: int
    asin: str
    title: str
    buy_market: str
    sell_market: str
    profit_eur_cents: int
    roi: float | None
    opened_at: str
    detected_at: str
    opportunity_id: str

    @property
    def label(self) -> str:
        return f"{self.asin} {self.buy_market}→{self.sell_market}"

    def as_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "opportunity_id": self.opportunity_id,
            "asin": self.asin,
            "title": self.title,
            "buy_market": self.buy_market,
            "sell_market": self.sell_market,
            "profit_eur_cents": self.profit_eur_cents,
            "roi": self.roi,
            "opened_at": self.opened_at,
            "detected_at": self.detected_at,
        }


@dataclass(frozen=True)
class Digest:
    """One day's digest: its top rows and (when counted) the day's opened / closed events."""

    day: date
    rows: tuple[DigestRow, ...]
    opened: int | None = None
    closed: int | None = None

    @property
    def title(self) -> str:
        return f"Arbitrage digest {self.day.isoformat()}: {len(self.rows)} open opportunities"


# --- the day ---------------------------------------------------------------------------------


def parse_day(text: str, today: date | None = None) -> date:
    """``YYYY-MM-DD`` → a date no later than ``today`` (UTC), or a sentence saying what's wrong."""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise DigestDayError(f"day {text[:20]!r} is not a date as YYYY-MM-DD") from None
    if len(text.strip()) != 10:
        raise DigestDayError(f"day {text[:20]!r} is not a date as YYYY-MM-DD")
    today = today or datetime.now(UTC).date()
    if day > today:
        raise DigestDayError(f"day {day.isoformat()} is in the future (today is {today} UTC)")
    return day


def day_window(day: date) -> tuple[datetime, datetime]:
    """The day's start (inclusive) and end (exclusive), UTC."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _range(field: str, day: date) -> dict[str, Any]:
    start, end = day_window(day)
    return {"range": {field: {"gte": _iso(start), "lt": _iso(end)}}}


def top_query(day: date) -> dict[str, Any]:
    """Open opportunities whose last event or opening was in the day (sort: profit_sort)."""
    return {
        "bool": {
            "filter": [{"term": {"status": "open"}}],
            "should": [_range("detected_at", day), _range("opened_at", day)],
            "minimum_should_match": 1,
        }
    }


PROFIT_SORT: list[dict[str, Any]] = [
    {"profit_eur_cents": {"order": "desc"}},
    {"opportunity_id": {"order": "asc"}},  # ties in a fixed order
]


def opened_query(day: date) -> dict[str, Any]:
    """Opportunities whose current episode opened in the day (any status now)."""
    return {"bool": {"filter": [_range("opened_at", day)]}}


def closed_query(day: date) -> dict[str, Any]:
    """Opportunities closed in the day (by their data time, ``closed_at_source_ms``)."""
    start, end = day_window(day)
    millis = {"gte": int(start.timestamp() * 1000), "lt": int(end.timestamp() * 1000)}
    return {
        "bool": {
            "filter": [
                {"term": {"status": "closed"}},
                {"range": {"closed_at_source_ms": millis}},
            ]
        }
    }


def digest_rows(sources: Sequence[Mapping[str, Any]], top_n: int) -> tuple[DigestRow, ...]:
    """The states as rows, best profit first (the query's order, kept stable here too)."""
    usable = [s for s in sources if isinstance(s.get("profit_eur_cents"), int)]
    ordered = sorted(
        usable, key=lambda s: (-s["profit_eur_cents"], str(s.get("opportunity_id", "")))
    )
    rows = []
    for rank, source in enumerate(ordered[:top_n], 1):
        roi = source.get("roi")
        rows.append(
            DigestRow(
                rank=rank,
                asin=str(source.get("asin", "?")),
                title=str(source.get("title") or ""),
                buy_market=str(source.get("buy_market", "?")),
                sell_market=str(source.get("sell_market", "?")),
                profit_eur_cents=source["profit_eur_cents"],
                roi=float(roi) if isinstance(roi, int | float) else None,
                opened_at=str(source.get("opened_at") or ""),
                detected_at=str(source.get("detected_at") or ""),
                opportunity_id=str(source.get("opportunity_id") or source.get("alert_id", "")),
            )
        )
    return tuple(rows)


# --- the table -------------------------------------------------------------------------------


def _eur(cents: int) -> str:
    return f"{cents / 100:.2f}"


def _roi(roi: float | None) -> str:
    return "?" if roi is None else f"{roi:.0%}"


def _counts(digest: Digest) -> str:
    if digest.opened is None and digest.closed is None:
        return ""
    return f"opened {digest.opened or 0}, closed {digest.closed or 0} that day"


TABLE_HEADERS = ("#", "ASIN", "route", "profit EUR", "ROI", "opened", "last event", "title")


def _cells(row: DigestRow) -> tuple[str, ...]:
    return (
        str(row.rank),
        row.asin,
        f"{row.buy_market}→{row.sell_market}",
        _eur(row.profit_eur_cents),
        _roi(row.roi),
        row.opened_at[:16].replace("T", " "),
        row.detected_at[:16].replace("T", " "),
        one_line(row.title, 40),  # Keepa's text: a line break would break the table
    )


def table_text(digest: Digest) -> str:
    """The digest as aligned plain text (chat message, e-mail's text part, the CLI)."""
    lines = [digest.title]
    counts = _counts(digest)
    if counts:
        lines.append(counts)
    if not digest.rows:
        lines.append(NO_OPPORTUNITIES)
        return "\n".join(lines)
    table = [TABLE_HEADERS, *(_cells(row) for row in digest.rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(TABLE_HEADERS))]
    right = {0, 3, 4}  # numbers
    lines.append("")
    for cells in table:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def table_html(digest: Digest) -> str:
    """The digest as an HTML document (the e-mail's HTML part); every value escaped."""
    out = [
        "<!doctype html>",
        '<html><body style="font-family: sans-serif">',
        f"<h2>{html.escape(digest.title)}</h2>",
    ]
    counts = _counts(digest)
    if counts:
        out.append(f"<p>{html.escape(counts)}</p>")
    if not digest.rows:
        out.append(f"<p>{NO_OPPORTUNITIES}</p>")
    else:
        out.append('<table border="1" cellpadding="4" cellspacing="0">')
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEADERS) + "</tr>")
        for row in digest.rows:
            cells = _cells(row)
            out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


# --- the chart -------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font: the same on every machine with the same Pillow.
    return ImageFont.load_default(size=size)


def _label(
    draw: ImageDraw.ImageDraw,
    at: tuple[int, int],
    row: DigestRow,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    """``ASIN buy→sell``; the bundled font has no arrow glyph, so the arrow is drawn."""
    x, y = at
    head = f"{row.asin} {row.buy_market} "
    draw.text((x, y), head, fill=TEXT, font=font)
    x += round(draw.textlength(head, font=font))
    mid = y + 8
    draw.line([(x, mid), (x + 12, mid)], fill=TEXT, width=1)
    draw.polygon([(x + 12, mid - 3), (x + 16, mid), (x + 12, mid + 3)], fill=TEXT)
    draw.text((x + 20, y), row.sell_market, fill=TEXT, font=font)


def chart_size(rows: int) -> tuple[int, int]:
    """Width and height of the chart for ``rows`` bars (one empty row for an empty day)."""
    return CHART_WIDTH, CHART_TOP + max(rows, 1) * CHART_ROW_H + CHART_BOTTOM


def bar_box(digest: Digest, index: int) -> tuple[int, int, int, int]:
    """The pixel box (left, top, right, bottom) of bar ``index`` (0: the best)."""
    best = max((row.profit_eur_cents for row in digest.rows), default=0)
    span = CHART_WIDTH - CHART_LABEL_W - CHART_VALUE_W
    profit = max(digest.rows[index].profit_eur_cents, 0)
    length = max(1, round(span * profit / best)) if best > 0 else 1
    top = CHART_TOP + index * CHART_ROW_H + 4
    return CHART_LABEL_W, top, CHART_LABEL_W + length, top + CHART_ROW_H - 8


def chart_png(digest: Digest) -> bytes:
    """Horizontal bars of profit per opportunity, labelled ``ASIN buy→sell``, best on top."""
    width, height = chart_size(len(digest.rows))
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), digest.title, fill=TEXT, font=_font(16))
    font = _font(12)
    if not digest.rows:
        draw.text((10, CHART_TOP + 4), NO_OPPORTUNITIES, fill=TEXT, font=font)
    for index, row in enumerate(digest.rows):
        left, top, right, bottom = bar_box(digest, index)
        draw.line([(left, top - 4), (CHART_WIDTH - 10, top - 4)], fill=GRID)
        _label(draw, (10, top), row, font)
        draw.rectangle([left, top, right, bottom], fill=BAR)
        draw.text((right + 6, top), f"{_eur(row.profit_eur_cents)} EUR", fill=TEXT, font=font)
    out = io.BytesIO()
    # No timestamps or other varying chunks: the same digest gives the same bytes.
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


# --- what is sent ----------------------------------------------------------------------------


def digest_event_id(day: date) -> str:
    """The digest's event id in ``alert-deliveries`` (the document id is ``<channel>:<this>``)."""
    return f"{DIGEST_EVENT}:{day.isoformat()}"


def digest_delivery_id(channel: str, day: date) -> str:
    return f"{channel}:{digest_event_id(day)}"


def digest_idempotency_key(day: date, channel: str) -> str:
    """The webhook's Idempotency-Key (and the e-mail's): ``digest:<day>:<channel>``."""
    return f"{digest_event_id(day)}:{channel}"


def digest_message_id(key: str, domain: str = "arbitrage.invalid") -> str:
    """A Message-ID fixed by the digest's key: a resent digest is recognisably the same mail."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<digest-{digest}@{domain}>"


def digest_webhook_body(digest: Digest, png: bytes) -> bytes:
    """The exact bytes POSTed (and signed): the day, counts, rows and the chart as base64."""
    payload = {
        "event": DIGEST_EVENT,
        "day": digest.day.isoformat(),
        "title": digest.title,
        "opened": digest.opened,
        "closed": digest.closed,
        "rows": [row.as_json() for row in digest.rows],
        "chart_png_base64": base64.b64encode(png).decode(),
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
