"""Keepa as a Dagster resource: which source a pull reads, and the settings it pulls with."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from pipelines.keepa_parsing import read_asin_list
from pipelines.markets import DEFAULT_MARKETS, parse_market_list
from resources.keepa_sources import (
    DEFAULT_BASE_URL,
    DEFAULT_SAMPLE_PATH,
    KeepaError,
    KeepaHttpClient,
    KeepaSampleSource,
    KeepaSource,
)

DEFAULT_ASINS_FILE = Path(__file__).resolve().parent.parent / "data" / "asins.txt"


class KeepaResource(dg.ConfigurableResource):
    """Where product data comes from: Keepa's HTTP API or the bundled sample (KEEPA_SOURCE).

    Both go through the same parsing. The API key is wired as ``dg.EnvVar("KEEPA_API_KEY")``
    in pipelines/definitions.py: Dagster resolves it when a run starts and shows only the
    variable's name; it is kept out of ``repr`` and scrubbed from every log line and error.
    """

    source: Literal["api", "sample"] = Field(
        default="api", description="'api': Keepa's HTTP API; 'sample': the bundled sample."
    )
    api_key: str | None = Field(
        default=None, repr=False, description="Keepa API key (env KEEPA_API_KEY)."
    )
    base_url: str = Field(default=DEFAULT_BASE_URL, description="Keepa API base URL.")
    markets: str = Field(
        default=",".join(DEFAULT_MARKETS),
        description="Marketplaces to pull, first = home market (env KEEPA_MARKETS).",
    )
    asins_file: str = Field(
        default=str(DEFAULT_ASINS_FILE),
        description="ASINs to track, one per line (env KEEPA_ASINS_FILE).",
    )
    sample_path: str = Field(
        default=str(DEFAULT_SAMPLE_PATH),
        description="Keepa-format sample answered when KEEPA_SOURCE=sample.",
    )
    stats_days: int = Field(default=90, description="Keepa `stats` window in days.")
    timeout_s: float = Field(default=30.0, description="HTTP timeout per request.")
    max_wait_s: float = Field(
        default=120.0, description="Longest wait for a token refill after HTTP 429."
    )

    @property
    def mode(self) -> Literal["keepa", "sample"]:
        """The source as the pull's metadata names it."""
        return "keepa" if self.source == "api" else "sample"

    def market_list(self) -> tuple[str, ...]:
        return parse_market_list(self.markets)

    def asins_path(self) -> Path:
        return Path(self.asins_file)

    def tracked_asins(self) -> tuple[list[str], list[str]]:
        """The ASINs from the file, and a sentence per line that was skipped."""
        path = self.asins_path()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeepaError(
                f"the ASIN list {path} does not exist; set KEEPA_ASINS_FILE to a file with one "
                "ASIN per line"
            ) from None
        return read_asin_list(text)

    def client(self, logger: logging.Logger) -> KeepaSource:
        if self.source == "sample":
            return KeepaSampleSource(self.sample_path)
        key = (self.api_key or "").strip()
        if not key:
            raise KeepaError(
                "KEEPA_SOURCE=api needs a Keepa API key in KEEPA_API_KEY; set it, or set "
                "KEEPA_SOURCE=sample to pull the bundled sample"
            )
        return KeepaHttpClient(
            key,
            base_url=self.base_url,
            stats_days=self.stats_days,
            timeout_s=self.timeout_s,
            max_wait_s=self.max_wait_s,
            logger=logger,
        )
