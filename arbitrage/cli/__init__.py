"""Operator tools outside the pipeline: the `arbitrage` command (main.py) and the reset of a
throwaway local pipeline for tests and benchmarks (reset.py)."""
