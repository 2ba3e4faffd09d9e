"""The secured local services (ARBITRAGE_SECURE=1 make services-up): who may do what."""

from __future__ import annotations

import pytest

from devservices import secure
from devservices.settings import Settings as ServiceSettings


@pytest.fixture(scope="session")
def services() -> ServiceSettings:
    settings = ServiceSettings.from_env()
    if not settings.secure or not secure.client_env_path(settings).is_file():
        pytest.fail(
            "these tests need the secured services: ARBITRAGE_SECURE=1 make services-up, then "
            "run them with ARBITRAGE_SECURE=1 (make test-secure sources .devservices/client.env)",
            pytrace=False,
        )
    return settings


@pytest.fixture(scope="session")
def passwords(services: ServiceSettings) -> dict[str, str]:
    """The generated accounts' passwords (.devservices/secure/credentials.json)."""
    return secure.credentials(services)
