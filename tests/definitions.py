"""The Definitions as tests run them: the environment's settings, with the Keepa pull reading
the bundled sample (the tests' input), whatever KEEPA_SOURCE says."""

from dataclasses import replace

from arbitrage.settings import Settings
from pipelines.definitions import build_definitions

SAMPLE_DEFS = build_definitions(replace(Settings.from_env(), keepa_source="sample"))
