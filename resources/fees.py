"""The fee model's configuration as a Dagster resource (config/fees_v1.toml or fees_v2.toml)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from pipelines.fee_config import DEFAULT_FEES_FILE, FeeConfig, load_fee_config


class FeeModelResource(dg.ConfigurableResource):
    """Where the fee model's constants come from (env ARBITRAGE_FEES_FILE)."""

    fees_file: str = Field(
        default=str(DEFAULT_FEES_FILE),
        description=(
            "Fee configuration TOML: VAT, FX, referral, FBA, inbound, thresholds; v2 adds "
            "the seller, referral schedules, EFN, digital services fee (config/fees_v2.toml)."
        ),
    )

    def load(self) -> FeeConfig:
        return load_fee_config(self.fees_file)
