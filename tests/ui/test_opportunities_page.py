"""The opportunities page (arbitrage/web/) in headless Chromium against real Kafka and
Elasticsearch.

The bundled sample is pulled twice and carried through both stages in process (two pulls, so
every market has two price observations), then the page is served on a thread of this process:
it lists the open opportunities, a filter narrows them, an ASIN's page draws a chart with at
least two points per market of its routes, and an alert raised while the page is open appears
on the list without a reload. Fails, never skips, without Chromium.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import dagster as dg
import pytest
import requests

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.timestamps import format_utc
from arbitrage.web.app import create_app
from arbitrage.web.server import serving
from tests.integration.kafka_io import produce
from tests.integration.test_stages import good_updates, run_job
from tests.ui.dagster_ui import CHROMIUM, CHROMIUM_HINT, chromium_page, resolving_to_loopback
from tests.ui.opportunities import open_detail, open_list

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def page_url(clean_pipeline: None, kafka: KafkaClient, es: ElasticsearchClient) -> Iterator[str]:
    instance = dg.DagsterInstance.ephemeral()
    for _pull in range(2):
        for job in ("keepa_pull", "enrichment", "arbitrage"):
            assert run_job(job, instance=instance).success, job
        time.sleep(0.01)  # the second pull gets a later pull time
    with serving(create_app(es, poll_s=1.0)) as url:
        yield url


def test_opportunities_list_filter_detail_chart_and_live_update(
    request: pytest.FixtureRequest, kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"The UI tests need Chromium at {CHROMIUM}. {CHROMIUM_HINT}", pytrace=False)
    url: str = request.getfixturevalue("page_url")
    with chromium_page() as page:
        shown = open_list(page, url)
        assert shown > 0, page.content()[:2000]
        # Every shown opportunity is an alert in the index, best profit first.
        profits = [
            int(text.replace(".", "").split()[0])
            for text in page.locator("tbody#rows td.profit").all_inner_texts()
        ]
        assert profits == sorted(profits, reverse=True)

        # A filter narrows the list: only routes selling into FR.
        page.select_option("select[name=sell]", "FR")
        page.click("form#filters button[type=submit]")
        page.wait_for_url("**sell=FR**")
        routes = page.locator("tbody#rows td.route").all_inner_texts()
        assert 0 < len(routes) < shown
        assert all(route.split()[2] == "FR" for route in routes), routes

        # The detail page of the best opportunity: its chart has every route's markets with a
        # point per pull (two pulls), its fee lines, and links to each marketplace.
        open_list(page, url)
        first = page.locator("tbody#rows tr[data-alert-id]").first
        asin = first.get_attribute("data-asin")
        buy, _, sell = first.locator("td.route").inner_text().split()[:3]
        points = open_detail(page, url, str(asin))
        assert points.get(f"{buy} buy", 0) >= 2, points
        assert points.get(f"{sell} sell", 0) >= 2, points
        assert all(count >= 2 for count in points.values()), points
        assert page.locator("table.breakdown").count() >= 1
        assert page.locator(f"a.market-link[href='https://www.amazon.de/dp/{asin}']").count() == 1

        # A new alert appears on the open list without a reload.
        open_list(page, url)
        page.evaluate("window.__notReloaded = true")
        update = good_updates(1, timestamp=format_utc(datetime.now(UTC)))[0]
        update["asin"] = "B0LIVE0001"
        produce(kafka, topics.RAW_UPDATES, [(update["asin"], encode(update))])
        assert run_job("enrichment").success
        assert run_job("arbitrage").success
        page.wait_for_selector("tbody#rows tr[data-asin='B0LIVE0001']", timeout=30_000)
        assert page.evaluate("window.__notReloaded === true")


def test_the_page_answers_to_its_own_names_only(es: ElasticsearchClient) -> None:
    """A DNS-rebinding page (evil.example, rebound to 127.0.0.1) would read the alerts; the
    page answers to 127.0.0.1, localhost and the names it is given only (arbitrage/web/guard.py)."""
    if not CHROMIUM.exists():
        pytest.fail(f"The UI tests need Chromium at {CHROMIUM}. {CHROMIUM_HINT}", pytrace=False)
    with serving(create_app(es, allowed_hosts=["opportunities.example"])) as url:
        port = urlsplit(url).port
        with chromium_page(resolving_to_loopback("evil.example", "opportunities.example")) as page:
            statuses = {}
            for base in (url, f"http://localhost:{port}", f"http://opportunities.example:{port}"):
                response = page.goto(f"{base}/api/opportunities")
                assert response is not None
                statuses[base] = response.status
            rebound = page.goto(f"http://evil.example:{port}/api/opportunities")
            assert rebound is not None
            refused = (rebound.status, rebound.text())
        # The page changes nothing, so it has no unsafe method; one from another origin is
        # refused before routing all the same.
        posted = requests.post(f"{url}/", headers={"Origin": "http://evil.example"}, timeout=10)
    assert set(statuses.values()) == {200}, statuses
    assert refused[0] == 403 and "does not answer to the host 'evil.example:" in refused[1], refused
    assert (posted.status_code, posted.text.startswith("Refused by the UI guard")) == (403, True)
