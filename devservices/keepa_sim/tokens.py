"""A Keepa account's tokens, as Keepa's documentation describes them (docs/keepa-simulator.md
says which readings were taken where it is open):

- the plan refills ``refill_rate`` tokens once a minute; ``refillIn`` is the time to the next
  refill;
- unused tokens expire after an hour: the balance never holds more than 60 refills;
- a request is served while the balance is positive, even when it costs more than is left (the
  balance may go negative, once); while it is not positive every request is refused with 429
  and costs nothing;
- every answer carries ``tokensLeft``, ``refillIn``, ``refillRate`` and ``tokensConsumed``.

Minutes are the simulator's (``SimClock``): at a time factor of 60 a plan of 300 tokens/min
grants 300 tokens per simulated minute. ``refillIn`` is given in real milliseconds, what a
client must wait (Keepa's own clients sleep for it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MINUTE_MS = 60_000
EXPIRY_MINUTES = 60


@dataclass
class SimClock:
    """Simulated epoch milliseconds: ``start_ms`` at creation, then ``factor`` × real time."""

    start_ms: int
    factor: float = 1.0
    real: Callable[[], float] = time.monotonic
    # The served simulator's clock never passes the wall clock (epoch ms): once caught up it
    # keeps pace with it, so the pipeline never sees data stamped in the future.
    ceiling_ms: Callable[[], int] | None = None
    _real_start: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"the time factor must be positive, not {self.factor}")
        self._real_start = self.real()

    def now_ms(self) -> int:
        simulated = self.start_ms + int((self.real() - self._real_start) * 1000 * self.factor)
        return simulated if self.ceiling_ms is None else min(simulated, self.ceiling_ms())

    def minute(self, at_ms: int | None = None) -> float:
        """Simulated minutes since the simulator started."""
        return ((self.now_ms() if at_ms is None else at_ms) - self.start_ms) / MINUTE_MS

    def real_ms(self, simulated_ms: float) -> int:
        return max(0, round(simulated_ms / self.factor))


@dataclass(frozen=True)
class TokenStatus:
    tokens_left: int
    refill_in_ms: int  # real milliseconds to the next refill
    refill_rate: int
    timestamp_ms: int  # simulated

    def fields(self, consumed: int) -> dict[str, int]:
        return {
            "timestamp": self.timestamp_ms,
            "tokensLeft": self.tokens_left,
            "refillIn": self.refill_in_ms,
            "refillRate": self.refill_rate,
            "tokenFlowReduction": 0,
            "tokensConsumed": consumed,
        }


class TokenAccount:
    """One key's balance; thread-safe (the server answers requests concurrently)."""

    def __init__(self, refill_rate: int, clock: SimClock, start_tokens: int | None = None) -> None:
        if refill_rate < 1:
            raise ValueError(f"a plan refills at least 1 token a minute, not {refill_rate}")
        self.refill_rate = refill_rate
        self.clock = clock
        self.capacity = EXPIRY_MINUTES * refill_rate
        self._lock = threading.Lock()
        self._refills = 0  # refills applied since the start (one per simulated minute)
        self.balance = refill_rate if start_tokens is None else start_tokens
        self.granted = self.balance  # every token ever made available
        self.consumed = 0  # every token ever charged (the account's own counter)
        self.expired = 0
        self.refused = 0  # requests answered 429

    def _refill(self, now_ms: int) -> None:
        due = int((now_ms - self.clock.start_ms) // MINUTE_MS)
        while self._refills < due:
            self._refills += 1
            room = max(0, self.capacity - self.balance)
            added = min(self.refill_rate, room)
            self.balance += added
            self.granted += added
            self.expired += self.refill_rate - added

    def status(self) -> TokenStatus:
        with self._lock:
            now = self.clock.now_ms()
            self._refill(now)
            return self._status(now)

    def _status(self, now_ms: int) -> TokenStatus:
        next_refill = self.clock.start_ms + (self._refills + 1) * MINUTE_MS
        return TokenStatus(
            self.balance, self.clock.real_ms(next_refill - now_ms), self.refill_rate, now_ms
        )

    def charge(self, cost: Callable[[], int] | int) -> tuple[bool, TokenStatus, int]:
        """Serve a request if the balance is positive: (served, status after, tokens charged).
        ``cost`` may be a function, called only once the request is admitted (a Product
        Finder's cost depends on how many ASINs it returns)."""
        with self._lock:
            now = self.clock.now_ms()
            self._refill(now)
            if self.balance <= 0:
                self.refused += 1
                return False, self._status(now), 0
            charged = cost() if callable(cost) else cost
            self.balance -= charged
            self.consumed += charged
            return True, self._status(now), charged
