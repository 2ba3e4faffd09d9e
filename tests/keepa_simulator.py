"""The Keepa market simulator (devservices/keepa_sim/) served for a test: a real HTTP server
on a port below 32768, over a time source the test moves (no sleeping)."""

from __future__ import annotations

from devservices.keepa_sim.catalog import Catalog
from devservices.keepa_sim.harness import START_MS, ManualTime, serve_simulator
from devservices.keepa_sim.server import SimulatorServer

KEY = "sim-key-0123456789"
__all__ = ["KEY", "START_MS", "ManualTime", "serve"]


def serve(
    catalog: Catalog, rate: int = 300, factor: float = 60.0, start_tokens: int | None = None
) -> tuple[SimulatorServer, ManualTime]:
    time_source = ManualTime()
    server = serve_simulator(catalog, KEY, time_source, rate, factor, start_tokens)
    return server, time_source
