"""The notifications stage's channels (arbitrage/clients/notify.py) as a Dagster resource."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from arbitrage.clients.notify import Channels, load_channels
from arbitrage.domain.notifications_config import (
    DEFAULT_NOTIFICATIONS_FILE,
    NOTIFICATIONS_FILE_ENV,
    NotificationsConfig,
    load_notifications_config,
)
from arbitrage.settings import Settings
from resources.run_config import refuse_changed_fields


class NotificationsResource(dg.ConfigurableResource):
    """Where the notifications stage's channels come from (env ARBITRAGE_NOTIFICATIONS_FILE);
    their secrets are read from the variables the file names, when a run starts."""

    config_file: str = Field(
        default=str(DEFAULT_NOTIFICATIONS_FILE),
        description="Channels TOML (config/notifications.example.toml shows every setting).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        expected = notifications_resource(Settings.from_env())
        refuse_changed_fields(
            "notifications", self, expected, {"config_file": NOTIFICATIONS_FILE_ENV}
        )

    def load(self) -> NotificationsConfig:
        return load_notifications_config(self.config_file)

    def channels(self) -> Channels:
        """The channels with their secrets read from the environment (at run start)."""
        return load_channels(self.config_file, os.environ)


def notifications_resource(settings: Settings) -> NotificationsResource:
    return NotificationsResource(config_file=str(settings.notifications_file))
