"""The Keepa market simulator (devservices/keepa_sim/) served for a test: a real HTTP server
on a port below 32768, over a time source the test moves (no sleeping)."""

from __future__ import annotations

import random
import threading

from devservices.keepa_sim.catalog import Catalog
from devservices.keepa_sim.server import Simulator, SimulatorServer
from devservices.keepa_sim.tokens import MINUTE_MS, SimClock, TokenAccount

KEY = "sim-key-0123456789"


class ManualTime:
    """The real clock under the simulated one, moved by the test (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance_simulated_minutes(self, minutes: float, factor: float) -> None:
        self.now += minutes * 60 / factor


START_MS = 1_700_000_040_000 // MINUTE_MS * MINUTE_MS


def serve(
    catalog: Catalog, rate: int = 300, factor: float = 60.0, start_tokens: int | None = None
) -> tuple[SimulatorServer, ManualTime]:
    """The simulator on a port below 32768 (tests keep off the ephemeral range)."""
    time_source = ManualTime()
    clock = SimClock(START_MS, factor, real=time_source)
    account = TokenAccount(rate, clock, start_tokens)
    simulator = Simulator(catalog, clock, account, KEY)
    picks = random.Random()
    for _ in range(50):
        try:
            server = SimulatorServer(("127.0.0.1", picks.randrange(20_000, 32_000)), simulator)
            break
        except OSError:
            continue
    else:
        raise RuntimeError("no free port below 32768 for the Keepa simulator")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, time_source
