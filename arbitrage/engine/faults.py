"""Named points where the fault suite kills a stage run (``ARBITRAGE_FAULT_POINT``).

A delivery guarantee is only as good as the test that kills the process where it would break:
``stage:point[:batch[:action]]`` makes the ``batch``-th arrival (default 1) of ``stage`` at
``point`` end the process at once with ``os._exit`` (action ``exit``, the default: no cleanup,
no flush, like SIGKILL), or freeze it with SIGSTOP (action ``stop``: a test then does something
while it is frozen and sends SIGCONT). Unset in production; tests/faults/ arms it in a child
process.
"""

from __future__ import annotations

import os
import signal
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
# Points inside one stage's batch, reached once per item rather than once per batch.
ITEM_FAULT_POINTS = (
    # notifications: a delivery succeeded, its document not yet written (the resend window)
    "after_send_before_record",
)
FAULT_EXIT_CODE = 77
FAULT_ACTIONS = ("exit", "stop")


class FaultPointError(ValueError):
    """ARBITRAGE_FAULT_POINT does not name a fault point."""


@dataclass
class FaultInjector:
    stage: str
    point: str
    batch: int = 1
    action: str = "exit"
    _arrivals: int = field(default=0, init=False)

    @classmethod
    def parse(cls, text: str) -> FaultInjector | None:
        """``stage:point[:batch[:action]]``, or None for an empty value."""
        if not text.strip():
            return None
        parts = text.strip().split(":")
        if not 2 <= len(parts) <= 4 or parts[1] not in (*FAULT_POINTS, *ITEM_FAULT_POINTS):
            raise FaultPointError(
                f"ARBITRAGE_FAULT_POINT={text!r} is not stage:point[:batch[:action]]; points "
                "are " + ", ".join((*FAULT_POINTS, *ITEM_FAULT_POINTS))
            )
        if len(parts) >= 3 and not (parts[2].isdigit() and int(parts[2]) >= 1):
            raise FaultPointError(f"ARBITRAGE_FAULT_POINT={text!r}: batch must be 1 or more")
        if len(parts) == 4 and parts[3] not in FAULT_ACTIONS:
            raise FaultPointError(
                f"ARBITRAGE_FAULT_POINT={text!r}: action must be one of {', '.join(FAULT_ACTIONS)}"
            )
        batch = int(parts[2]) if len(parts) >= 3 else 1
        return cls(parts[0], parts[1], batch, parts[3] if len(parts) == 4 else "exit")

    def reached(self, stage: str, point: str) -> None:
        if stage != self.stage or point != self.point:
            return
        self._arrivals += 1
        if self._arrivals == self.batch:
            print(
                f"fault point {stage}:{point}:{self.batch} reached: {self.action}",
                file=sys.stderr,
                flush=True,
            )
            if self.action == "stop":
                os.kill(os.getpid(), signal.SIGSTOP)  # resumes here on SIGCONT
                return
            os._exit(FAULT_EXIT_CODE)


def reach(faults: FaultInjector | None, stage: str, point: str) -> None:
    """Mark ``point`` for ``stage``: a no-op unless the suite armed it."""
    if faults is not None:
        faults.reached(stage, point)
