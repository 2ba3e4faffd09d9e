"""The per-market Keepa price history of a raw update: its shape, its bounds and its one check.

``markets.<code>.history`` is optional: absent or null when the pull did not ask Keepa for
history (``KEEPA_HISTORY_DAYS=0``, the default) or Keepa had none, and in every message written
before it. When present it is a list of ``[epoch_ms, buy, sell]`` points (pipelines/
keepa_history.py): prices in the market's minor units, null where there was no offer; times
strictly increasing, on or after Keepa's epoch and before the pull's own time (the pull's
observation is that moment). At most ``MAX_HISTORY_POINTS`` points, so five markets of history
stay well inside the 256 KiB a raw update may have (5 × 1 000 × ~34 bytes ≈ 170 KB).
The careful checks (validation.py) and the fast path (fast_validation.py) both call
``check_history``, so the two cannot disagree on what a valid history is.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from arbitrage.domain.messages.timestamps import epoch_ms
from arbitrage.domain.messages.types import EARLIEST_PULL_MS, MAX_PRICE_MINOR, SchemaError

MAX_HISTORY_POINTS = 1_000

HistoryPoints = list[list[Any]]  # [[epoch ms, buy | None, sell | None], ...]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_price(value: Any) -> bool:
    # bool is an int subclass in Python; JSON true is never a price.
    return value is None or (type(value) is int and 1 <= value <= MAX_PRICE_MINOR)


def check_history(value: Any, code: str, pulled_at_ms: int) -> HistoryPoints | None:
    """The history of market ``code`` (the same list when valid), or None if there is none.

    Raises ``SchemaError`` naming the field and the point when anything is out of shape.
    """
    if value is None:
        return None
    path = f"markets.{code}.history"
    if not isinstance(value, list):
        raise SchemaError(
            f"field '{path}' must be a list of [epoch_ms, buy, sell] points, or null, "
            f"but it is {_shown(value)}"
        )
    if len(value) > MAX_HISTORY_POINTS:
        raise SchemaError(
            f"field '{path}' has {len(value)} points; the limit is {MAX_HISTORY_POINTS}"
        )
    previous = EARLIEST_PULL_MS - 1
    for index, point in enumerate(value):
        if not (type(point) is list and len(point) == 3):
            raise SchemaError(
                f"field '{path}[{index}]' must be [epoch_ms, buy, sell], but it is {_shown(point)}"
            )
        at, buy, sell = point
        if type(at) is not int or not previous < at < pulled_at_ms:
            raise SchemaError(
                f"field '{path}[{index}][0]' must be a time in epoch ms after the previous "
                f"point's, on or after 2011-01-01 and before the pull's time ({pulled_at_ms}), "
                f"but it is {_shown(at)}"
            )
        if not (_is_price(buy) and _is_price(sell)):
            raise SchemaError(
                f"field '{path}[{index}]' must hold prices in minor units between 1 and "
                f"{MAX_PRICE_MINOR}, or null for no offer, but it is {_shown(point)}"
            )
        previous = at
    return value


def check_market_histories(
    markets_in: dict[str, Any], markets: dict[str, Any], timestamp: str
) -> None:
    """Check each market's ``history`` of the incoming message and put the valid ones on the
    normalised markets (only where there is one: a message without history stays as it was)."""
    for code, offer in markets_in.items():
        history = offer.get("history")
        if history is not None:
            markets[code]["history"] = check_history(history, code, _pull_ms(timestamp))


@lru_cache(maxsize=1024)
def _pull_ms(timestamp: str) -> int:
    # One pull stamps all its updates with the same time; parse each distinct one once.
    return epoch_ms(timestamp)
