"""The price-history chart as data for an SVG template: scaled points, axis ticks, legend.

Drawn on the server (arbitrage/web/templates/_chart.html), so the page needs no JavaScript library
and no network. Pure: observations in, coordinates out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from arbitrage.domain.money import format_minor

WIDTH, HEIGHT = 760, 320
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 16, 40
# One colour per market (colour-blind-safe Okabe-Ito); buy lines dashed, sell lines solid.
MARKET_COLOURS = {
    "DE": "#0072B2",
    "FR": "#D55E00",
    "IT": "#009E73",
    "ES": "#CC79A7",
    "GB": "#E69F00",
}
OTHER_COLOUR = "#555555"


@dataclass(frozen=True)
class Series:
    market: str
    side: str  # "buy" | "sell"
    colour: str
    dashed: bool
    points: list[tuple[float, float, str]]  # x, y, tooltip

    @property
    def label(self) -> str:
        return f"{self.market} {self.side}"

    @property
    def path(self) -> str:
        return " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in self.points)


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    series: list[Series]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int


def _nice_step(span: float, count: int) -> int:
    """A round step (1, 2 or 5 × 10^n cents) giving about ``count`` ticks over ``span``."""
    raw = max(span / max(count, 1), 1.0)
    magnitude = 10 ** (len(str(int(raw))) - 1)
    for factor in (1, 2, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _time_label(ms: int, span_ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%H:%M" if span_ms < 2 * 86_400_000 else "%d %b")


def build_chart(
    history: Mapping[str, Sequence[tuple[int, int | None, int | None]]],
    lines: Sequence[tuple[str, str]],
) -> Chart | None:
    """``lines``: (market, "buy" | "sell") to draw from ``history`` (market → (ms, buy EUR
    cents, sell EUR cents), oldest first). None when there is nothing to draw."""
    wanted: list[tuple[str, str, list[tuple[int, int]]]] = []
    for market, side in dict.fromkeys(lines):
        column = 1 if side == "buy" else 2
        points = [
            (row[0], value)
            for row in history.get(market, ())
            if (value := row[column]) is not None  # type: ignore[literal-required]
        ]
        if points:
            wanted.append((market, side, points))
    if not wanted:
        return None
    times = [ms for _, _, points in wanted for ms, _ in points]
    prices = [price for _, _, points in wanted for _, price in points]
    t0, t1 = min(times), max(times)
    if t0 == t1:  # a single pull: centre it
        t0, t1 = t0 - 3_600_000, t1 + 3_600_000
    step = _nice_step(max(prices) - min(prices) or max(prices) or 100, 5)
    low = (min(prices) // step) * step
    high = -(-max(prices) // step) * step
    if high == low:
        high = low + step
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(ms: int) -> float:
        return LEFT + (ms - t0) / (t1 - t0) * plot_w

    def y(cents: int) -> float:
        return TOP + (high - cents) / (high - low) * plot_h

    series = []
    for market, side, points in wanted:
        series.append(
            Series(
                market=market,
                side=side,
                colour=MARKET_COLOURS.get(market, OTHER_COLOUR),
                dashed=side == "buy",
                points=[
                    (
                        x(ms),
                        y(price),
                        f"{market} {side} {format_minor(price, 'EUR')} at "
                        f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M} UTC",
                    )
                    for ms, price in points
                ],
            )
        )
    y_ticks = [Tick(y(value), format_minor(value, "EUR")) for value in range(low, high + 1, step)]
    x_ticks = [
        Tick(x(ms), _time_label(ms, t1 - t0)) for ms in (t0 + (t1 - t0) * n // 4 for n in range(5))
    ]
    return Chart(WIDTH, HEIGHT, series, x_ticks, y_ticks, LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM)
