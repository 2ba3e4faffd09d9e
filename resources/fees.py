"""The fee model's configuration as a Dagster resource (the file itself is config/fees_v1.toml)."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from pipelines.fee_config import DEFAULT_FEES_FILE, FEES_FILE_ENV, FeeConfig, load_fee_config


class FeeModelResource(dg.ConfigurableResource):
    """Where the fee model's constants come from (env ARBITRAGE_FEES_FILE)."""

    fees_file: str = Field(
        default_factory=lambda: os.environ.get(FEES_FILE_ENV, str(DEFAULT_FEES_FILE)),
        description="Fee configuration TOML: VAT, FX, referral, FBA, inbound, thresholds.",
    )

    def load(self) -> FeeConfig:
        return load_fee_config(self.fees_file)
