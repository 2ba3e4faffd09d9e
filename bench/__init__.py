"""Benchmarks (``make bench``). They work in the namespace "bench" (arbitrage/domain/topics.py)
unless ARBITRAGE_NAMESPACE says otherwise, so a measurement never resets or consumes a running
pipeline's topics, groups or indices. Set here, before any pipeline module reads it."""

import os

os.environ.setdefault("ARBITRAGE_NAMESPACE", "bench")
