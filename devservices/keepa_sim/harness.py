"""The simulator served in-process over a clock its caller moves (no sleeping): what the tests
and the capture benchmark (bench/capture.py) run it with. Ports below 32768, off the ephemeral
range the tests' other services leave free."""

from __future__ import annotations

import random
import threading

from devservices.keepa_sim.catalog import Catalog
from devservices.keepa_sim.server import Simulator, SimulatorServer
from devservices.keepa_sim.tokens import MINUTE_MS, SimClock, TokenAccount

START_MS = 1_700_000_040_000 // MINUTE_MS * MINUTE_MS


class ManualTime:
    """The real clock under the simulated one, moved by its caller."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance_simulated_minutes(self, minutes: float, factor: float) -> None:
        self.now += minutes * 60 / factor


def serve_simulator(
    catalog: Catalog,
    api_key: str,
    time_source: ManualTime,
    rate: int = 300,
    factor: float = 60.0,
    start_tokens: int | None = None,
) -> SimulatorServer:
    """One account on its own server, started on a free port in 20000-32000."""
    clock = SimClock(START_MS, factor, real=time_source)
    simulator = Simulator(catalog, clock, TokenAccount(rate, clock, start_tokens), api_key)
    picks = random.Random()
    for _ in range(50):
        try:
            server = SimulatorServer(("127.0.0.1", picks.randrange(20_000, 32_000)), simulator)
            break
        except OSError:
            continue
    else:
        raise RuntimeError("no free port below 32768 for the Keepa simulator")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
