"""``python -m devservices.keepa_sim``: serve the simulated Keepa API.

The API key the simulator accepts is KEEPA_API_KEY's (never an argument: argv is visible to
every user of the machine). The simulated clock starts ``--hours`` before now and runs
``--factor`` times faster until it reaches the real clock, then keeps pace with it: the
pipeline refuses data stamped in the future.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence

from devservices.keepa_sim.catalog import MAX_PRODUCTS, Catalog
from devservices.keepa_sim.server import Simulator, SimulatorServer
from devservices.keepa_sim.tokens import MINUTE_MS, SimClock, TokenAccount

DEFAULT_SEED = 20261206
DEFAULT_PORT = 9300 - 1  # beside the other local services; --port to change it


def build(seed: int, size: int, factor: float, rate: int, hours: float, api_key: str) -> Simulator:
    start_ms = (int(time.time() * 1000) // MINUTE_MS) * MINUTE_MS - int(hours * 3_600_000)
    clock = SimClock(start_ms, factor, ceiling_ms=lambda: int(time.time() * 1000))
    return Simulator(Catalog.generate(seed, size), clock, TokenAccount(rate, clock), api_key)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devservices.keepa_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--products", type=int, default=100_000, help=f"≤ {MAX_PRODUCTS:,}")
    parser.add_argument("--factor", type=float, default=60.0, help="simulated per real minute")
    parser.add_argument("--tokens-per-minute", type=int, default=300)
    parser.add_argument("--hours", type=float, default=6.0)
    args = parser.parse_args(argv)
    api_key = os.environ.get("KEEPA_API_KEY", "").strip()
    if not api_key:
        print("KEEPA_API_KEY is not set: the simulator needs the key it accepts", file=sys.stderr)
        return 2
    try:
        simulator = build(
            args.seed, args.products, args.factor, args.tokens_per_minute, args.hours, api_key
        )
    except ValueError as exc:
        print(f"keepa simulator: {exc}", file=sys.stderr)
        return 2
    server = SimulatorServer((args.host, args.port), simulator)
    # SIGTERM (devservices down) ends serve_forever like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(
        f"keepa simulator on {server.url}: {args.products:,} products, seed {args.seed}, "
        f"{args.tokens_per_minute} tokens/min, time ×{args.factor:g}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
