"""A Keepa market simulator: a real HTTP server answering Keepa's API in Keepa's format over a
catalog of simulated products whose prices move with time (docs/keepa-simulator.md).

Dev tooling like the rest of devservices: the pipeline talks to it exactly as to Keepa
(``KEEPA_API_URL``), and nothing of it is installed with the ``arbitrage`` package.
"""
