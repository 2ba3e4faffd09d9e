"""Each job connects as its own account when the environment names one.

A stage run, the Keepa pull and provisioning (pipelines/access.py: the account keys) look for
``KAFKA_SASL_USERNAME_<KEY>`` / ``KAFKA_SASL_PASSWORD_<KEY>`` and ``ELASTICSEARCH_USERNAME_<KEY>``
/ ``ELASTICSEARCH_PASSWORD_<KEY>`` (or ``ELASTICSEARCH_API_KEY_<KEY>``), ``<KEY>`` upper case
(``ENRICHMENT``, ``KEEPA_PULL``, ``PROVISION``). Unset, the shared ``KAFKA_SASL_USERNAME`` /
``ELASTICSEARCH_USERNAME`` account serves, as before. The credentials come from the
environment only, never from run config: the copy is made inside the run from the variables,
and the passwords stay ``dg.EnvVar`` until a client is made.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import dagster as dg

from resources.elasticsearch import ElasticsearchResource
from resources.kafka import KafkaResource
from resources.kafka_security import PASSWORD_ENV as KAFKA_PASSWORD_ENV
from resources.kafka_security import USERNAME_ENV as KAFKA_USERNAME_ENV
from resources.settings import SettingsError

ES_USERNAME_ENV = "ELASTICSEARCH_USERNAME"
ES_PASSWORD_ENV = "ELASTICSEARCH_PASSWORD"
ES_API_KEY_ENV = "ELASTICSEARCH_API_KEY"

Resource = TypeVar("Resource", KafkaResource, ElasticsearchResource)


class AccountError(SettingsError):
    """An account's user is named in the environment without its secret."""


def account_variable(base: str, key: str) -> str:
    """``("KAFKA_SASL_USERNAME", "keepa_pull")`` → ``"KAFKA_SASL_USERNAME_KEEPA_PULL"``."""
    return f"{base}_{key.upper().replace('-', '_')}"


def _copy(resource: Resource, **changes: Any) -> Resource:
    fields = {name: getattr(resource, name) for name in type(resource).model_fields}
    return type(resource)(**{**fields, **changes})


def _set(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())


def _login(user_base: str, password_base: str, key: str) -> tuple[str, dg.EnvVar] | None:
    """Account ``key``'s user and its password (by name), if the environment names the user."""
    user_variable = account_variable(user_base, key)
    password_variable = account_variable(password_base, key)
    user = os.environ.get(user_variable, "").strip()
    if not user:
        return None
    if not _set(password_variable):
        raise AccountError(f"{user_variable} is set but {password_variable} is not; set both")
    return user, dg.EnvVar(password_variable)


def kafka_as(resource: KafkaResource, key: str) -> KafkaResource:
    """``resource`` connecting as account ``key`` if the environment names it, else itself."""
    login = _login(KAFKA_USERNAME_ENV, KAFKA_PASSWORD_ENV, key)
    if login is None:
        return resource
    user, password = login
    return _copy(resource, sasl_username=user, sasl_password=password)


def elasticsearch_as(resource: ElasticsearchResource, key: str) -> ElasticsearchResource:
    """Likewise for Elasticsearch: the account's API key, or its user and password."""
    api_key_variable = account_variable(ES_API_KEY_ENV, key)
    if _set(api_key_variable):
        return _copy(resource, api_key=dg.EnvVar(api_key_variable))
    login = _login(ES_USERNAME_ENV, ES_PASSWORD_ENV, key)
    if login is None:
        return resource
    user, password = login
    return _copy(resource, username=user, password=password, api_key=None)
