"""The Dagster UI renders the asset lineage with every pipeline topic as a named node.

Starts its own dagster-webserver behind the UI guard, as make demo does (throwaway DAGSTER_HOME,
free port), and drives the system Chromium headless; needs neither Kafka nor Elasticsearch.
Fails, never skips, without Chromium.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ui.dagster_ui import (
    CHROMIUM,
    CHROMIUM_HINT,
    UIError,
    chromium_page,
    running_webserver,
    show_asset_graph,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

# Last key segment of the three Kafka topic assets, i.e. what each graph node is labelled.
TOPIC_ASSETS = ("raw_keepa_updates", "products_enriched", "arbitrage_alerts")


@pytest.fixture(scope="module")
def webserver_url() -> Iterator[str]:
    try:
        with running_webserver(timeout_s=90.0) as url:
            yield url
    except UIError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_asset_graph_shows_every_topic(request: pytest.FixtureRequest) -> None:
    # Checked before the webserver fixture is requested, so a missing browser is a FAILED test
    # (not a setup error) and costs no webserver start.
    if not CHROMIUM.exists():
        pytest.fail(f"The UI tests need Chromium at {CHROMIUM}. {CHROMIUM_HINT}", pytrace=False)
    webserver_url: str = request.getfixturevalue("webserver_url")
    try:
        with chromium_page() as page:
            show_asset_graph(page, webserver_url, TOPIC_ASSETS, timeout_s=30.0)
            # Rendered DOM, not the server's HTML: the SPA shell contains no asset names.
            rendered = page.content()
            dialog_open = page.get_by_text("Join the Dagster community").is_visible()
    except UIError as exc:
        pytest.fail(f"asset graph did not render: {exc}", pytrace=False)

    missing = [name for name in TOPIC_ASSETS if f">{name}<" not in rendered]
    assert not missing, f"asset nodes missing from the rendered lineage graph: {missing}"
    assert not dialog_open, "the community dialog still covers the graph"
