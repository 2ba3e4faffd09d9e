"""The fee model's configuration and the signal rules as a Dagster resource (config/fees_*.toml,
config/rules_*.toml)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from arbitrage.domain.fee_config import DEFAULT_FEES_FILE, FeeConfig, load_fee_config
from arbitrage.domain.rules_config import DEFAULT_RULES_FILE, RulesConfig, load_rules_config
from arbitrage.settings import Settings
from resources.run_config import refuse_changed_fields

# Which fees and rules apply: from the environment only (a run config naming
# config/rules_none.toml would switch the rules off; resources/run_config.py).
ENVIRONMENT_FIELDS = {"fees_file": "ARBITRAGE_FEES_FILE", "rules_file": "ARBITRAGE_RULES_FILE"}


class FeeModelResource(dg.ConfigurableResource):
    """Where the fee model's constants (env ARBITRAGE_FEES_FILE) and the rules that screen its
    opportunities (env ARBITRAGE_RULES_FILE) come from."""

    fees_file: str = Field(
        default=str(DEFAULT_FEES_FILE),
        description=(
            "Fee configuration TOML: VAT, FX, referral, FBA, inbound, thresholds; v2 adds "
            "the seller, referral schedules, EFN, digital services fee (config/fees_v2.toml)."
        ),
    )

    rules_file: str = Field(
        default=str(DEFAULT_RULES_FILE),
        description=(
            "Signal rules TOML: minimum monthly sales, spike guard, Amazon buy box share, FBA "
            "offers, out of stock; config/rules_none.toml turns them all off."
        ),
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        expected = fee_model_resource(Settings.from_env())
        refuse_changed_fields("fee_model", self, expected, ENVIRONMENT_FIELDS)

    def load(self) -> FeeConfig:
        return load_fee_config(self.fees_file)

    def load_rules(self) -> RulesConfig:
        return load_rules_config(self.rules_file)


def fee_model_resource(settings: Settings) -> FeeModelResource:
    return FeeModelResource(fees_file=str(settings.fees_file), rules_file=str(settings.rules_file))
