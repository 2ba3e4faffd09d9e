"""Keepa as a Dagster resource: which source a pull reads, and the settings it pulls with."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from arbitrage.clients.keepa_sources import (
    KeepaError,
    KeepaHttpClient,
    KeepaSampleSource,
    KeepaSource,
)
from arbitrage.domain.keepa_parsing import read_asin_list
from arbitrage.domain.markets import DEFAULT_MARKETS, parse_market_list
from arbitrage.domain.redaction import redact_url
from arbitrage.settings import DATA_DIR, KEEPA_KEY_ENV, KEEPA_PULL_MODES, REPO_ROOT, Settings
from resources.run_config import RunConfigRefusedError, resolved


def allowed_file(chosen: str | None, from_env: Path, field: str, env_name: str) -> Path:
    """The file a run may read: the environment's choice, or one under the data directory.

    Run config comes from anyone who reaches the launchpad; letting it name any file would let
    the run log show another file's lines (an env file, /proc/self/environ). Symlinks and ``..``
    are resolved first, so neither leads out of data/. A relative path is taken from the project
    root (``data/asins.txt``). The refused value is not echoed: it may itself be a secret.
    """
    if chosen is None or chosen == str(from_env):
        return from_env
    path = Path(chosen)
    resolved = (path if path.is_absolute() else REPO_ROOT / path).resolve()
    if resolved == from_env.resolve() or resolved.is_relative_to(DATA_DIR.resolve()):
        return resolved
    raise KeepaError(
        f"{field} in run config may only name a file under {DATA_DIR} (after resolving symlinks "
        f"and '..'); to read a file elsewhere, set {env_name} where the code location runs"
    )


class KeepaResource(dg.ConfigurableResource):
    """Where product data comes from: Keepa's HTTP API or the bundled sample (KEEPA_SOURCE).

    Both go through the same parsing. The API key is wired as ``dg.EnvVar("KEEPA_API_KEY")``
    in ``keepa_resource`` below: Dagster resolves it when a run starts and shows only the
    variable's name; it is kept out of ``repr`` and scrubbed from every log line and error.

    Run config cannot redirect the key or read files (docs/design.md, Settings): ``base_url``
    must equal KEEPA_API_URL, and ``asins_file`` / ``sample_path`` must be the environment's
    file or one under data/; both are checked against the environment when they are used.
    Unset (None) means the environment's value: Dagster drops the definitions' values for every
    field once a run config names any field of this resource, so None is what such a run sees.
    """

    source: Literal["api", "sample"] = Field(
        default="api", description="'api': Keepa's HTTP API; 'sample': the bundled sample."
    )
    api_key: str | None = Field(
        default=None, repr=False, description="Keepa API key (env KEEPA_API_KEY)."
    )
    base_url: str | None = Field(
        default=None,
        description="Keepa API base URL (env KEEPA_API_URL only; run config may not change it).",
    )
    markets: str = Field(
        default=",".join(DEFAULT_MARKETS),
        description="Marketplaces to pull, first = home market (env KEEPA_MARKETS).",
    )
    asins_file: str | None = Field(
        default=None,
        description="ASINs to track, one per line (env KEEPA_ASINS_FILE; run config: under data/).",
    )
    sample_path: str | None = Field(
        default=None,
        description="Keepa-format sample for KEEPA_SOURCE=sample (env KEEPA_SAMPLE_FILE; run "
        "config: under data/).",
    )
    stats_days: int = Field(default=90, description="Keepa `stats` window in days.")
    history_days: int = Field(
        default=0,
        description="Days of Keepa's csv price history to ask for (history=1&days=N) and "
        "turn into price observations; 0: none (env KEEPA_HISTORY_DAYS).",
    )
    pull_mode: str = Field(
        default="list",
        description="'list': KEEPA_ASINS_FILE whole; 'planner': what the token planner buys "
        "each minute (env KEEPA_PULL_MODE).",
    )
    reserve_tokens: int = Field(
        default=0, description="Tokens the planner never spends (env KEEPA_RESERVE_TOKENS)."
    )
    timeout_s: float = Field(default=30.0, description="HTTP timeout per request.")
    max_wait_s: float = Field(
        default=120.0, description="Longest wait for a token refill after HTTP 429."
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Refuse a redirecting or reading run config before the run touches anything.
        if self.pull_mode not in KEEPA_PULL_MODES:
            raise KeepaError(f"pull_mode must be one of {', '.join(KEEPA_PULL_MODES)}")
        if self.pull_mode == "planner" and self.source != "api":
            raise KeepaError("pull_mode 'planner' needs source 'api' (Keepa's token balance)")
        if self.reserve_tokens < 0:
            raise KeepaError("reserve_tokens cannot be negative")
        self.asins_path()
        if self.source == "api":
            self.api_url()
            self.key()
        else:
            self.sample_file()

    @property
    def mode(self) -> Literal["keepa", "sample"]:
        """The source as the pull's metadata names it."""
        return "keepa" if self.source == "api" else "sample"

    def market_list(self) -> tuple[str, ...]:
        return parse_market_list(self.markets)

    def asins_path(self) -> Path:
        """The ASIN list: KEEPA_ASINS_FILE's, or one under data/ (refused otherwise)."""
        env = Settings.from_env()
        return allowed_file(self.asins_file, env.keepa_asins_file, "asins_file", "KEEPA_ASINS_FILE")

    def api_url(self) -> str:
        """KEEPA_API_URL; a run config that names another URL is refused, never followed."""
        from_env = Settings.from_env().keepa_api_url  # https unless loopback, checked there
        chosen = self.base_url
        if chosen is not None and chosen.strip().rstrip("/") != from_env.rstrip("/"):
            raise KeepaError(
                "base_url cannot be changed in run config: the Keepa key is sent only to "
                f"KEEPA_API_URL ({redact_url(from_env)}); remove base_url from the run config, "
                "or set KEEPA_API_URL where the code location runs"
            )
        return from_env

    def key(self) -> str:
        """KEEPA_API_KEY; a run config that names another value (``{env: OTHER_SECRET}`` would
        send that secret to Keepa) is refused. Unset (None): the environment's key."""
        from_env = (dg.EnvVar(KEEPA_KEY_ENV).get_value() or "").strip()
        chosen = resolved(self.api_key)
        if chosen is not None and chosen.strip() != from_env:
            raise RunConfigRefusedError(
                f"api_key cannot be changed in run config: the key comes from {KEEPA_KEY_ENV} "
                "only; remove api_key from the run config, or set the variable where the code "
                "location runs"
            )
        return from_env

    def sample_file(self) -> Path:
        """The sample: KEEPA_SAMPLE_FILE's, or one under data/ (refused otherwise)."""
        from_env = Settings.from_env().keepa_sample_file
        return allowed_file(self.sample_path, from_env, "sample_path", "KEEPA_SAMPLE_FILE")

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
        except (OSError, UnicodeDecodeError) as exc:
            # The exception's own text may quote the file's bytes; name only what went wrong.
            raise KeepaError(
                f"the ASIN list {path} cannot be read as UTF-8 text ({type(exc).__name__}); "
                "it should hold one ASIN per line"
            ) from None
        return read_asin_list(text)

    def client(self, logger: logging.Logger) -> KeepaSource:
        if self.source == "sample":
            return KeepaSampleSource(self.sample_file())
        base_url = self.api_url()
        key = self.key()
        if not key:
            raise KeepaError(
                "KEEPA_SOURCE=api needs a Keepa API key in KEEPA_API_KEY; set it, or set "
                "KEEPA_SOURCE=sample to pull the bundled sample"
            )
        return KeepaHttpClient(
            key,
            base_url=base_url,
            stats_days=self.stats_days,
            history_days=self.history_days,
            timeout_s=self.timeout_s,
            max_wait_s=self.max_wait_s,
            logger=logger,
        )


def keepa_resource(settings: Settings) -> KeepaResource:
    return KeepaResource(
        source=settings.keepa_source,
        # Resolved by Dagster when a run starts; the UI shows the variable's name, not its value.
        api_key=dg.EnvVar(KEEPA_KEY_ENV) if settings.keepa_api_key_set else None,
        base_url=settings.keepa_api_url,
        markets=settings.keepa_markets,
        asins_file=str(settings.keepa_asins_file),
        sample_path=str(settings.keepa_sample_file),
        history_days=settings.keepa_history_days,
        pull_mode=settings.keepa_pull_mode,
        reserve_tokens=settings.keepa_reserve_tokens,
    )
