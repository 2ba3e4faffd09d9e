"""The Elasticsearch client (arbitrage/clients/elasticsearch.py) as a Dagster resource.

Its fields are what the launchpad shows, secrets by variable name; ``get_client()`` gives the
plain ``ElasticsearchClient``; when a run or sensor starts, every connection and credential
field is checked against the environment first (resources/run_config.py).
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from arbitrage.clients.elasticsearch import DEFAULT_URL, ElasticsearchClient
from arbitrage.domain.redaction import has_credentials
from arbitrage.settings import (
    ELASTICSEARCH_API_KEY_ENV,
    ELASTICSEARCH_PASSWORD_ENV,
    ELASTICSEARCH_URL_ENV,
    Settings,
)
from resources.run_config import refuse_changed_fields, resolved

# Where the cluster is and who the client is: from the environment only (resources/run_config.py).
ENVIRONMENT_FIELDS = {
    "url": ELASTICSEARCH_URL_ENV,
    "api_key": ELASTICSEARCH_API_KEY_ENV,
    "username": "ELASTICSEARCH_USERNAME",
    "password": ELASTICSEARCH_PASSWORD_ENV,
    "ca_certs": "ELASTICSEARCH_CA_CERTS",
}


class ElasticsearchResource(dg.ConfigurableResource):
    """Connection to the Elasticsearch cluster holding the products and alerts indices."""

    # repr=False: the URL may carry a password (then it is wired by name).
    url: str = Field(
        default=DEFAULT_URL,
        repr=False,
        description="Base URL of Elasticsearch, or of each node comma-separated (env "
        "ELASTICSEARCH_URL; credentials in it are wired by name, never shown).",
    )
    # Secrets wired as dg.EnvVar (repr=False): the UI and every message show the variable's name.
    api_key: str | None = Field(
        default=None, repr=False, description="Encoded API key (env ELASTICSEARCH_API_KEY)."
    )
    username: str = Field(default="", description="Basic-auth user (env ELASTICSEARCH_USERNAME).")
    password: str | None = Field(
        default=None, repr=False, description="Basic-auth password (env ELASTICSEARCH_PASSWORD)."
    )
    ca_certs: str = Field(
        default="", description="PEM file of the CA to trust for https (ELASTICSEARCH_CA_CERTS)."
    )
    request_timeout_s: float = Field(default=30.0, description="Per-request timeout.")
    max_retries: int = Field(default=6, description="Attempts for bulk items answered 429/5xx.")
    backoff_base_s: float = Field(default=0.2, description="First retry delay; doubles each time.")
    backoff_cap_s: float = Field(default=5.0, description="Longest delay between retries.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        expected = elasticsearch_resource(Settings.from_env())
        refuse_changed_fields("elasticsearch", self, expected, ENVIRONMENT_FIELDS)

    def get_client(self) -> ElasticsearchClient:
        """The plain client with these fields (secrets by name are read now)."""
        fields = {name: resolved(getattr(self, name)) for name in type(self).model_fields}
        return ElasticsearchClient(**fields)


def elasticsearch_resource(settings: Settings, **overrides: object) -> ElasticsearchResource:
    """The resource as the environment configures it: secrets by name, and a URL with a
    password in it by name too (the UI shows ELASTICSEARCH_URL; Dagster reads the value when a
    run or sensor starts)."""
    fields: dict[str, object] = {
        **settings.elasticsearch_fields(),
        "api_key": dg.EnvVar(ELASTICSEARCH_API_KEY_ENV)
        if settings.elasticsearch_api_key_set
        else None,
        "password": dg.EnvVar(ELASTICSEARCH_PASSWORD_ENV)
        if settings.elasticsearch_password_set
        else None,
    }
    if has_credentials(settings.elasticsearch_url):
        fields["url"] = dg.EnvVar(ELASTICSEARCH_URL_ENV)
    return ElasticsearchResource(**{**fields, **overrides})
