"""Named points where the fault suite kills a stage run (``ARBITRAGE_FAULT_POINT``).

A delivery guarantee is only as good as the test that kills the process where it would break:
``stage:point[:batch]`` makes the ``batch``-th arrival (default 1) of ``stage`` at ``point``
end the process at once with ``os._exit`` (no cleanup, no flush, like SIGKILL). Unset in
production; tests/faults/ arms it in a child process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

# In the order a batch reaches them.
FAULT_POINTS = (
    "after_bulk_ack",  # Elasticsearch acknowledged the batch's writes; nothing produced yet
    "after_produce",  # outputs and dead letters handed to the producer, not yet delivered
    "after_flush",  # every message delivered (inside the open transaction)
    "before_commit",  # source offsets added to the transaction, commit not yet sent
    "after_commit",  # transaction committed
)
FAULT_EXIT_CODE = 77


class FaultPointError(ValueError):
    """ARBITRAGE_FAULT_POINT does not name a fault point."""


@dataclass
class FaultInjector:
    stage: str
    point: str
    batch: int = 1
    _arrivals: int = field(default=0, init=False)

    @classmethod
    def parse(cls, text: str) -> FaultInjector | None:
        """``stage:point[:batch]``, or None for an empty value."""
        if not text.strip():
            return None
        parts = text.strip().split(":")
        if len(parts) not in (2, 3) or parts[1] not in FAULT_POINTS:
            raise FaultPointError(
                f"ARBITRAGE_FAULT_POINT={text!r} is not stage:point[:batch]; points are "
                + ", ".join(FAULT_POINTS)
            )
        if len(parts) == 3 and not (parts[2].isdigit() and int(parts[2]) >= 1):
            raise FaultPointError(f"ARBITRAGE_FAULT_POINT={text!r}: batch must be 1 or more")
        return cls(parts[0], parts[1], int(parts[2]) if len(parts) == 3 else 1)

    def reached(self, stage: str, point: str) -> None:
        if stage != self.stage or point != self.point:
            return
        self._arrivals += 1
        if self._arrivals == self.batch:
            print(f"fault point {stage}:{point}:{self.batch} reached: exiting", file=sys.stderr)
            sys.stderr.flush()
            os._exit(FAULT_EXIT_CODE)


def reach(faults: FaultInjector | None, stage: str, point: str) -> None:
    """Mark ``point`` for ``stage``: a no-op unless the suite armed it."""
    if faults is not None:
        faults.reached(stage, point)
