"""Each job connects as its own account when the environment names one.

A stage run, the Keepa pull and provisioning (arbitrage/domain/access.py: the account keys) look
for ``KAFKA_SASL_USERNAME_<KEY>`` / ``KAFKA_SASL_PASSWORD_<KEY>`` and
``ELASTICSEARCH_USERNAME_<KEY>`` / ``ELASTICSEARCH_PASSWORD_<KEY>`` (or
``ELASTICSEARCH_API_KEY_<KEY>``), ``<KEY>`` upper case (``ENRICHMENT``, ``KEEPA_PULL``,
``PROVISION``). Unset, the shared ``KAFKA_SASL_USERNAME`` / ``ELASTICSEARCH_USERNAME`` account
serves. The credentials come from the environment only, never from run config: the copy is made
inside the run, from the variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.kafka_security import PASSWORD_ENV as KAFKA_PASSWORD_ENV
from arbitrage.clients.kafka_security import USERNAME_ENV as KAFKA_USERNAME_ENV
from arbitrage.settings import SettingsError

ES_USERNAME_ENV = "ELASTICSEARCH_USERNAME"
ES_PASSWORD_ENV = "ELASTICSEARCH_PASSWORD"
ES_API_KEY_ENV = "ELASTICSEARCH_API_KEY"


class AccountError(SettingsError):
    """An account's user is named in the environment without its secret."""


def account_variable(base: str, key: str) -> str:
    """``("KAFKA_SASL_USERNAME", "keepa_pull")`` → ``"KAFKA_SASL_USERNAME_KEEPA_PULL"``."""
    return f"{base}_{key.upper().replace('-', '_')}"


def _login(
    env: Mapping[str, str], user_base: str, password_base: str, key: str
) -> tuple[str, str] | None:
    """Account ``key``'s user and password, if the environment names the user."""
    user_variable = account_variable(user_base, key)
    password_variable = account_variable(password_base, key)
    user = env.get(user_variable, "").strip()
    if not user:
        return None
    password = env.get(password_variable, "")
    if not password.strip():
        raise AccountError(f"{user_variable} is set but {password_variable} is not; set both")
    return user, password


def kafka_as(client: KafkaClient, key: str, env: Mapping[str, str] | None = None) -> KafkaClient:
    """``client`` connecting as account ``key`` if the environment names it, else itself."""
    login = _login(os.environ if env is None else env, KAFKA_USERNAME_ENV, KAFKA_PASSWORD_ENV, key)
    if login is None:
        return client
    user, password = login
    return replace(client, sasl_username=user, sasl_password=password)


def elasticsearch_as(
    client: ElasticsearchClient, key: str, env: Mapping[str, str] | None = None
) -> ElasticsearchClient:
    """Likewise for Elasticsearch: the account's API key, or its user and password."""
    env = os.environ if env is None else env
    api_key = env.get(account_variable(ES_API_KEY_ENV, key), "").strip()
    if api_key:
        return replace(client, api_key=api_key)
    login = _login(env, ES_USERNAME_ENV, ES_PASSWORD_ENV, key)
    if login is None:
        return client
    user, password = login
    return replace(client, username=user, password=password, api_key=None)
