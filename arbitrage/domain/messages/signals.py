"""The per-market Keepa signals of a raw update: their fields and their one check.

``markets.<code>.signals`` is optional: messages written before the signals existed have no
such key, and a market Keepa sent no statistics for has ``null``. Inside it every field is
optional too (missing = null = "Keepa has no data"); a value that is present must be in range.
The careful checks (validation.py) and the fast path (fast_validation.py) both call
``check_signals``, so the two cannot disagree on what a valid signal is.
"""

from __future__ import annotations

from typing import Any, Literal

from arbitrage.domain.messages.types import MAX_PRICE_MINOR, MarketSignals, SchemaError

# Counts (rank drops, offers) above this are data errors, not observations.
MAX_SIGNAL_COUNT = 100_000

Kind = Literal["price", "count", "pct", "bool", "text"]
# A brand name; longer text is cut at the source (arbitrage/domain/keepa_signals.py).
MAX_TEXT = 200

SIGNAL_FIELDS: tuple[tuple[str, Kind], ...] = (
    ("amazon_avg30", "price"),
    ("amazon_avg90", "price"),
    ("amazon_avg180", "price"),
    ("new_avg30", "price"),
    ("new_avg90", "price"),
    ("new_avg180", "price"),
    ("buy_box_avg30", "price"),
    ("buy_box_avg90", "price"),
    ("buy_box_avg180", "price"),
    ("sales_rank_drops30", "count"),
    ("sales_rank_drops90", "count"),
    ("amazon_oos_pct90", "pct"),
    ("new_oos_pct90", "pct"),
    ("buy_box_oos_pct90", "pct"),
    ("buy_box_amazon_pct", "pct"),
    ("buy_box_is_amazon", "bool"),
    ("buy_box_is_fba", "bool"),
    ("offer_count_fba", "count"),
    ("offer_count_fbm", "count"),
    ("monthly_sold", "count"),
    # The listing's facts a seller checks before buying (the risk rules read them).
    ("hazmat", "bool"),
    ("variation_parent", "bool"),
    ("package_quantity", "count"),
    ("return_rate_high", "bool"),
    ("brand", "text"),
)

_RANGES: dict[str, tuple[int, int, str]] = {
    "price": (1, MAX_PRICE_MINOR, "an average price in minor units"),
    "count": (0, MAX_SIGNAL_COUNT, "a count"),
    "pct": (0, 100, "a whole percentage"),
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_signals(value: Any, code: str) -> MarketSignals | None:
    """The signals of market ``code`` normalised (every field present), or None if there are none.

    Raises ``SchemaError`` naming the field when a value is out of range or of the wrong type.
    Unknown keys are dropped, so a newer producer's extra signals do not stop this consumer.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SchemaError(
            f"field 'markets.{code}.signals' must be an object of Keepa statistics, or null, "
            f"but it is {_shown(value)}"
        )
    checked: dict[str, int | bool | str | None] = {}
    for name, kind in SIGNAL_FIELDS:
        item = value.get(name)
        if item is not None:
            if kind == "bool":
                if type(item) is not bool:
                    raise SchemaError(
                        f"field 'markets.{code}.signals.{name}' must be true, false or null, "
                        f"but it is {_shown(item)}"
                    )
            elif kind == "text":
                if type(item) is not str or not 0 < len(item) <= MAX_TEXT or not item.isprintable():
                    raise SchemaError(
                        f"field 'markets.{code}.signals.{name}' must be printable text of 1 to "
                        f"{MAX_TEXT} characters, or null, but it is {_shown(item)}"
                    )
            else:
                low, high, what = _RANGES[kind]
                # bool is an int subclass in Python; JSON true is never a number here.
                if type(item) is not int or not low <= item <= high:
                    raise SchemaError(
                        f"field 'markets.{code}.signals.{name}' must be {what} between {low} "
                        f"and {high}, or null for no data, but it is {_shown(item)}"
                    )
        checked[name] = item
    return checked  # type: ignore[return-value]
